//! `pinproxy pins`: the pins of a config file. `list` shows the configured
//! pins of every upstream and the learned ones (`trust_on_first_use`); `add`
//! and `remove` change an upstream's `fingerprints` in the file itself (the
//! edit in `pin_edit`), validated as `check` does before anything is written;
//! `add --from-server` takes what the server presents, but only when it is
//! what the operator expects; `forget` lets a learning upstream learn again.

use std::fmt::Write as _;
use std::path::Path;

use crate::cmd::expect::Expectation;
use crate::cmd::pin_edit::{self, Outcome};
use crate::config::{self, Config};
use crate::tls::known_pins::KnownPins;
use crate::tls::pin::Fingerprints;
use crate::tls::verify::Trust;
use crate::upstream::probe;

fn open(config: &Config, path: &Path) -> Result<KnownPins, String> {
    let file = config.known_pins.as_deref().ok_or_else(|| {
        format!(
            "{}: no upstream has trust_on_first_use = true, so no pin is learned",
            path.display()
        )
    })?;
    KnownPins::open(file)
}

/// How a change to the file reaches a running pinproxy.
const APPLY: &str = "Apply it: `systemctl reload pinproxy` (or send SIGHUP to `pinproxy run`); \
                     a `pinproxy run --watch-config` picks it up by itself.";

/// Every upstream's pins: configured ones per address, learned ones with
/// when and where they were learned.
pub fn list(config: &Config, path: &Path) -> Result<String, String> {
    let mut text = format!("{}\n", path.display());
    let learned = match config.known_pins.as_deref() {
        Some(_) => Some(open(config, path)?),
        None => None,
    };
    let all = learned.as_ref().map(KnownPins::all).unwrap_or_default();
    for up in &config.upstreams {
        if up.known_pins.is_some() {
            match all.get(&up.name) {
                Some(l) => {
                    let _ = writeln!(
                        text,
                        "  {}  learned {} from {}\n    {}\n    {}",
                        up.name, l.learned, l.address, l.sha1, l.pin
                    );
                }
                None => {
                    let _ = writeln!(
                        text,
                        "  {}  learns on first use, not learned yet: its next connection learns it",
                        up.name
                    );
                }
            }
            continue;
        }
        let targets = up.targets();
        for (i, target) in targets.iter().enumerate() {
            // Failover addresses sharing the upstream's pins are listed once.
            if i > 0 && target.pins == targets[0].pins {
                continue;
            }
            let which =
                if targets.len() > 1 && targets.iter().skip(1).any(|t| t.pins != targets[0].pins) {
                    format!(" ({}:{})", target.host, target.port)
                } else {
                    String::new()
                };
            let _ = writeln!(text, "  {}{which}", up.name);
            for (n, pin) in target.pins.iter().enumerate() {
                let _ = writeln!(text, "    {}  {pin}", n + 1);
            }
        }
    }
    if let Some(known) = &learned {
        let _ = writeln!(text, "learned pins: {}", known.path().display());
        for (name, l) in all
            .iter()
            .filter(|(n, _)| !config.upstreams.iter().any(|u| &u.name == *n))
        {
            let _ = writeln!(
                text,
                "  {name}  learned {} (no such upstream in the config now)\n    {}",
                l.learned, l.sha1
            );
        }
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

/// Edits the file at `path` with `edit`, refusing a result `check` would
/// refuse, and writes it atomically. The file is read under the same
/// permission rules as loading it.
fn edit_file(
    path: &Path,
    edit: impl FnOnce(&str) -> Result<Outcome, String>,
) -> Result<Outcome, String> {
    let text = config::read(path).map_err(|e| e.to_string())?;
    let outcome = edit(&text)?;
    if let Outcome::Changed { text: new, .. } = &outcome {
        Config::parse(new, path).map_err(|e| {
            format!("the file would not be valid after this change, so it is unchanged: {e}")
        })?;
        crate::platform::replace_file::replace(path, new.as_bytes())?;
    }
    Ok(outcome)
}

fn pin_count(path: &Path, name: &str) -> usize {
    Config::load(path)
        .ok()
        .and_then(|c| c.upstreams.into_iter().find(|u| u.name == name))
        .map_or(0, |u| u.pins.len())
}

/// `pins add NAME PIN`: the message to print.
pub fn add(path: &Path, name: &str, pin: &str) -> Result<String, String> {
    match edit_file(path, |text| pin_edit::add(text, name, pin))? {
        Outcome::AlreadyPinned { entry } => Ok(format!(
            "upstream {name:?} already has this pin ({entry}) in {}; nothing changed.\n",
            path.display()
        )),
        Outcome::Changed { entry, .. } => Ok(format!(
            "added {entry} to upstream {name:?} in {} ({} pins now).\n{APPLY}\n\
             Once the server presents only the new certificate, remove the old pin: `pinproxy pins remove {name} OLD-PIN`.\n",
            path.display(),
            pin_count(path, name)
        )),
    }
}

/// `pins remove NAME PIN`: the message to print.
pub fn remove(path: &Path, name: &str, pin: &str) -> Result<String, String> {
    match edit_file(path, |text| pin_edit::remove(text, name, pin))? {
        Outcome::Changed { entry, .. } => Ok(format!(
            "removed {entry} from upstream {name:?} in {} ({} pin{} left).\n{APPLY}\n",
            path.display(),
            pin_count(path, name),
            if pin_count(path, name) == 1 { "" } else { "s" }
        )),
        Outcome::AlreadyPinned { .. } => Err("nothing was removed".into()),
    }
}

/// `pins add NAME --from-server`: handshake with the upstream as configured
/// (address, server name, egress proxy, client certificate), and add what it
/// presents only if it is what `expected` says; without an expectation only
/// with `trust_first_use`. The message to print, or why nothing was added.
pub async fn add_from_server(
    path: &Path,
    name: &str,
    expected: Option<Expectation>,
    trust_first_use: bool,
) -> Result<String, String> {
    if expected.is_none() && !trust_first_use {
        return Err(format!(
            "--from-server needs to know what to expect: whoever answers the connection would become the pin. \
             Give --expect-from 'ssh admin@mgmt api fingerprint' (the server's own console, over SSH you \
             already trust), or --expect PIN with the SHA1 line `api fingerprint` prints; --trust-first-use \
             takes what is presented unchecked (only on a network you trust). Nothing was added to {}.",
            path.display()
        ));
    }
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let up = config
        .upstreams
        .iter()
        .find(|u| u.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
            format!(
                "no upstream named {name:?} in {}; its upstreams: {}",
                path.display(),
                names.join(", ")
            )
        })?;
    let presented = probe::handshake(up, Trust::FirstUse)
        .await
        .map_err(|e| format!("cannot take the pin from the server: {e}"))?;
    let fp = Fingerprints::of(presented.chain[0].as_ref());
    if let Some(expected) = &expected {
        if !expected.matches(&fp) {
            return Err(format!(
                "MISMATCH: {} presents {} / {}, but {} expects {}. Someone may be between you and the \
                 server: nothing was added to {}.",
                up.address(),
                fp.sha1_line(),
                fp.sha256_line(),
                expected.source,
                expected.pin,
                path.display()
            ));
        }
    }
    let how = match &expected {
        Some(e) => format!("it matches {}", e.source),
        None => "taken on first use (--trust-first-use): compare it with `api fingerprint` on the server".into(),
    };
    let said = add(path, name, &fp.sha1_line())?;
    Ok(format!(
        "{} presents {}; {how}.\n{said}",
        up.address(),
        fp.sha1_line()
    ))
}
