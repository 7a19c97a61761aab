//! `pinproxy pins list` and `pinproxy pins forget NAME`: what the upstreams with
//! `trust_on_first_use` learned (the config's `known_pins` file), and how to
//! let one learn again.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::Config;
use crate::tls::known_pins::KnownPins;

fn open(config: &Config, path: &Path) -> Result<KnownPins, String> {
    let file = config.known_pins.as_deref().ok_or_else(|| {
        format!(
            "{}: no upstream has trust_on_first_use = true, so no pin is learned",
            path.display()
        )
    })?;
    KnownPins::open(file)
}

/// The learned pins, one block per upstream.
pub fn list(config: &Config, path: &Path) -> Result<String, String> {
    let known = open(config, path)?;
    let all = known.all();
    let mut text = format!("known_pins: {}\n", known.path().display());
    for up in config.upstreams.iter().filter(|u| u.known_pins.is_some()) {
        match all.get(&up.name) {
            Some(learned) => {
                let _ = writeln!(
                    text,
                    "  {}  learned {} from {}\n    {}\n    {}",
                    up.name, learned.learned, learned.address, learned.sha1, learned.pin
                );
            }
            None => {
                let _ = writeln!(
                    text,
                    "  {}  not learned yet: its next connection learns it",
                    up.name
                );
            }
        }
    }
    for (name, learned) in all
        .iter()
        .filter(|(n, _)| !config.upstreams.iter().any(|u| &u.name == *n))
    {
        let _ = writeln!(
            text,
            "  {name}  learned {} (no such upstream in the config now)\n    {}",
            learned.learned, learned.sha1
        );
    }
    Ok(text)
}

/// Removes `name`'s learned pin; the message to print.
pub fn forget(config: &Config, path: &Path, name: &str) -> Result<String, String> {
    let known = open(config, path)?;
    match known.forget(name)? {
        Some(learned) => Ok(format!(
            "forgot {name}'s pin ({}, learned {} from {}).\nReload pinproxy (systemctl reload pinproxy, or SIGHUP) and \
             its next connection learns the pin again: compare what it logs with `api fingerprint` on the server.\n",
            learned.sha1, learned.learned, learned.address
        )),
        None => {
            let names: Vec<String> = known.all().into_keys().collect();
            Err(format!(
                "no pin learned for {name:?} in {}; learned: {}",
                known.path().display(),
                if names.is_empty() { "none".into() } else { names.join(", ") }
            ))
        }
    }
}
