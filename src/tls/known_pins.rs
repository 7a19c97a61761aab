//! Pins learned on first use (`trust_on_first_use = true`), kept in one file
//! (`known_pins`), like SSH's `known_hosts` with `StrictHostKeyChecking=accept-new`.
//!
//! The first completed handshake with such an upstream records the SHA-256 of its
//! certificate; from then on that is its pin, across restarts and reloads, until
//! `pinproxy pins forget NAME`. Learning happens only after the handshake has
//! completed (so the server proved it holds the certificate's key), and under one
//! lock: two first connections cannot record two different pins.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::platform::permissions::Protected;
use crate::tls::pin::{CertPin, Fingerprints};

/// One learned pin, as the file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    /// `sha256:<hex>` of the certificate: the pin.
    pub pin: String,
    /// The same certificate in Gaia's `api fingerprint` form, for people.
    pub sha1: String,
    /// The address it was learned from.
    pub address: String,
    /// When (RFC 3339, UTC).
    pub learned: String,
}

impl Learned {
    /// The pin, parsed.
    pub fn cert_pin(&self) -> Option<CertPin> {
        CertPin::parse(&self.pin).ok()
    }
}

/// What a handshake's certificate means for an upstream that learns its pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It matches the learned pin.
    Known,
    /// It was just learned (recorded in the file).
    Learned(Learned),
    /// Another pin was learned before (possibly by a concurrent first connection).
    Other(Learned),
}

/// The `known_pins` file and what it holds.
#[derive(Debug)]
pub struct KnownPins {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Learned>>,
}

const HEADER: &str =
    "# Pins pinproxy learned on first use (trust_on_first_use = true); one table per upstream.\n\
# Compare each sha1 with `api fingerprint` on the server console. `pinproxy pins forget NAME`\n\
# removes one; the next connection after a reload learns it again.\n\n";

impl KnownPins {
    /// Reads `path` (a missing file holds no pins yet).
    pub fn open(path: &Path) -> Result<KnownPins, String> {
        Ok(KnownPins {
            path: path.to_path_buf(),
            entries: Mutex::new(read(path)?),
        })
    }

    /// Reads the file again (after `pinproxy pins forget`, on reload).
    pub fn reread(&self) -> Result<(), String> {
        let fresh = read(&self.path)?;
        *self.lock() = fresh;
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Learned>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pin learned for `upstream`, if any.
    pub fn get(&self, upstream: &str) -> Option<Learned> {
        self.lock().get(upstream).cloned()
    }

    /// Every learned pin, by upstream name.
    pub fn all(&self) -> BTreeMap<String, Learned> {
        self.lock().clone()
    }

    /// Checks `leaf` against `upstream`'s learned pin, or learns it (writing the
    /// file before it returns) when there is none. An error is a failure to
    /// write the file: then nothing was learned.
    pub fn check_or_learn(
        &self,
        upstream: &str,
        address: &str,
        leaf: &[u8],
    ) -> Result<Verdict, String> {
        let presented = Fingerprints::of(leaf);
        let mut entries = self.lock();
        if let Some(known) = entries.get(upstream) {
            let matches = known.cert_pin().is_some_and(|pin| pin.matches(&presented));
            return Ok(if matches {
                Verdict::Known
            } else {
                Verdict::Other(known.clone())
            });
        }
        let learned = Learned {
            pin: CertPin::Sha256(presented.sha256).to_string(),
            sha1: presented.sha1_line(),
            address: address.to_string(),
            learned: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        let mut next = entries.clone();
        next.insert(upstream.to_string(), learned.clone());
        write(&self.path, &next)?;
        *entries = next;
        Ok(Verdict::Learned(learned))
    }

    /// Removes `upstream`'s pin from the file; the one removed, if there was one.
    pub fn forget(&self, upstream: &str) -> Result<Option<Learned>, String> {
        let mut entries = self.lock();
        let mut next = entries.clone();
        let removed = next.remove(upstream);
        if removed.is_some() {
            write(&self.path, &next)?;
            *entries = next;
        }
        Ok(removed)
    }
}

/// The files open in this process: one `KnownPins` per path, shared by every
/// upstream that learns into it (and by the `Upstream` a reload builds).
static OPEN: Mutex<Vec<(PathBuf, std::sync::Weak<KnownPins>)>> = Mutex::new(Vec::new());

impl KnownPins {
    /// The process's `KnownPins` for `path`, read now if nothing holds it open.
    pub fn shared(path: &Path) -> Result<std::sync::Arc<KnownPins>, String> {
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(known) = open
            .iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, weak)| weak.upgrade())
        {
            return Ok(known);
        }
        let known = std::sync::Arc::new(KnownPins::open(path)?);
        open.push((path.to_path_buf(), std::sync::Arc::downgrade(&known)));
        Ok(known)
    }

    /// Reads every open file again: on reload, so that a pin forgotten with
    /// `pinproxy pins forget` is learned again.
    pub fn reread_all() -> Result<(), String> {
        let open: Vec<_> = OPEN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(_, weak)| weak.upgrade())
            .collect();
        open.iter().try_for_each(|known| known.reread())
    }
}

/// Checks where `path` would be kept, before anything is learned into it: its
/// directory must exist and be writable by pinproxy (else the first connection
/// would fail after a handshake that worked), and the file and every directory
/// on the way must pass the pin store's permission rules.
pub fn check_store(path: &Path) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "known_pins {}: {} is not a directory; point known_pins at a file in a directory pinproxy owns",
                path.display(),
                dir.display()
            ))
        }
        Err(_) => {
            return Err(format!(
                "known_pins {}: the directory {} does not exist, so a pin learned on first use could not be kept. \
                 Fix: mkdir -p {} and give it to the user pinproxy runs as (under systemd, StateDirectory=pinproxy \
                 creates /var/lib/pinproxy)",
                path.display(),
                dir.display(),
                dir.display()
            ))
        }
    }
    crate::platform::permissions::check_as(path, Protected::PinStore)?;
    if !crate::platform::permissions::can_write_dir(dir) {
        return Err(format!(
            "known_pins {}: the directory {} is not writable by the user pinproxy runs as, so a pin learned on \
             first use could not be kept. Fix: chown that user {}",
            path.display(),
            dir.display(),
            dir.display()
        ));
    }
    Ok(())
}

fn read(path: &Path) -> Result<BTreeMap<String, Learned>, String> {
    // Whoever can write the store chooses the pin: the same rules as the config.
    crate::platform::permissions::check_as(path, Protected::PinStore)?;
    match fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            format!(
                "known_pins {}: {} (the file is pinproxy's; fix the entry or remove it with `pinproxy pins forget NAME`)",
                path.display(),
                e.message()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("known_pins {}: {e}", path.display())),
    }
}

/// Replaces the file atomically: a temporary file beside it, written and
/// synced, renamed over it, and the directory synced, so a crash leaves the
/// old file or the new one, never half of one.
fn write(path: &Path, entries: &BTreeMap<String, Learned>) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("cannot write known_pins {}: {e}", path.display());
    // Checked again before each write: the directory may have changed hands.
    crate::platform::permissions::check_as(path, Protected::PinStore)?;
    let text = toml::to_string(entries).map_err(|e| format!("known_pins: {e}"))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = crate::platform::permissions::owner_only(
            fs::OpenOptions::new().write(true).create_new(true),
        )
        .open(&temporary)?;
        file.write_all(HEADER.as_bytes())?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        crate::platform::replace_file::sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_many_concurrent_first_connections_exactly_one_is_learned() {
        let dir = tempfile::tempdir().unwrap();
        let pins = std::sync::Arc::new(KnownPins::open(&dir.path().join("k.toml")).unwrap());
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let (pins, start) = (pins.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    (i, pins.check_or_learn("x", "192.0.2.1:443", &[i]).unwrap())
                })
            })
            .collect();
        let verdicts: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let learned: Vec<_> = verdicts
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Learned(_)))
            .collect();
        assert_eq!(learned.len(), 1, "{verdicts:?}");
        let winner = learned[0].0;
        for (i, verdict) in &verdicts {
            if *i != winner {
                assert!(matches!(verdict, Verdict::Other(_)), "{verdicts:?}");
            }
        }
        let on_disk = KnownPins::open(&dir.path().join("k.toml")).unwrap();
        assert_eq!(
            on_disk
                .check_or_learn("x", "192.0.2.1:443", &[winner])
                .unwrap(),
            Verdict::Known
        );
    }

    #[test]
    fn learns_once_then_checks_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_pins.toml");
        let pins = KnownPins::open(&path).unwrap();
        assert!(pins.get("x").is_none());
        assert!(matches!(
            pins.check_or_learn("x", "192.0.2.1:443", b"one").unwrap(),
            Verdict::Learned(_)
        ));
        assert_eq!(
            pins.check_or_learn("x", "192.0.2.1:443", b"one").unwrap(),
            Verdict::Known
        );
        assert!(matches!(
            pins.check_or_learn("x", "192.0.2.1:443", b"two").unwrap(),
            Verdict::Other(_)
        ));
        // Another process sees it in the file.
        let again = KnownPins::open(&path).unwrap();
        assert_eq!(
            again.check_or_learn("x", "192.0.2.1:443", b"one").unwrap(),
            Verdict::Known
        );
        assert!(again.forget("x").unwrap().is_some());
        pins.reread().unwrap();
        assert!(pins.get("x").is_none());
        assert!(matches!(
            pins.check_or_learn("x", "192.0.2.1:443", b"two").unwrap(),
            Verdict::Learned(_)
        ));
    }
}
