//! The text edit behind `pins add` and `pins remove`: one entry added to or
//! removed from an upstream's `fingerprints` in the operator's config file,
//! every comment, blank line and the array's own layout kept (toml_edit), so
//! the file still reads as its author wrote it.

use toml_edit::{Array, DocumentMut, Item, Value};

use crate::tls::pin::CertPin;

/// What an edit did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file's new text; the entry as written in it.
    Changed { text: String, entry: String },
    /// Nothing to do: the pin is there already (add) or was never there
    /// (remove, which is an error instead); the entry it matched.
    AlreadyPinned { entry: String },
}

/// How an entry of `fingerprints` is compared: by the certificate it names,
/// so "sha1:7dfe…" and "SHA1: 7D:FE:…" are one pin; `file:` entries by text.
fn same_pin(entry: &str, pin: &str) -> bool {
    if entry.starts_with("file:") || pin.starts_with("file:") {
        return entry.trim() == pin.trim();
    }
    match (CertPin::parse(entry), CertPin::parse(pin)) {
        // The words are the first 128 bits of the SHA-1.
        (Ok(CertPin::Sha1(full)), Ok(CertPin::Sha1Words(words)))
        | (Ok(CertPin::Sha1Words(words)), Ok(CertPin::Sha1(full))) => full[..16] == words[..],
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The form a pin is written in: Gaia's `SHA1: …` line (and the other
/// canonical forms), so a pasted `api fingerprint` block becomes one line.
pub fn written_form(pin: &str) -> Result<String, String> {
    let pin = pin.trim();
    if pin.starts_with("file:") {
        return Ok(pin.to_string());
    }
    CertPin::parse(pin)
        .map(|p| p.to_string())
        .map_err(|e| format!("bad pin {pin:?}: {e}"))
}

fn fingerprints<'d>(doc: &'d mut DocumentMut, upstream: &str) -> Result<&'d mut Array, String> {
    let names = |doc: &DocumentMut| -> Vec<String> {
        doc.get("upstream")
            .and_then(Item::as_array_of_tables)
            .map(|ups| {
                ups.iter()
                    .filter_map(|t| t.get("name").and_then(Item::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let known = names(doc);
    let table = doc
        .get_mut("upstream")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|ups| {
            ups.iter_mut()
                .find(|t| t.get("name").and_then(Item::as_str) == Some(upstream))
        })
        .ok_or_else(|| {
            format!(
                "no [[upstream]] named {upstream:?} in the file; its upstreams: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )
        })?;
    if table
        .get("trust_on_first_use")
        .and_then(Item::as_bool)
        .unwrap_or(false)
    {
        return Err(format!(
            "upstream {upstream:?} learns its pin on first use and has no fingerprints; \
             `pinproxy pins forget {upstream}` makes it learn again, or remove \
             trust_on_first_use and give fingerprints"
        ));
    }
    let own_target_pins = table
        .get("target")
        .and_then(Item::as_array_of_tables)
        .is_some_and(|ts| ts.iter().any(|t| t.contains_key("fingerprints")));
    if own_target_pins {
        return Err(format!(
            "upstream {upstream:?} has [[upstream.target]] tables with fingerprints of their own; \
             which target's pins to change is yours to say: edit them by hand, then run `pinproxy check`"
        ));
    }
    match table.get_mut("fingerprints") {
        Some(item) => item.as_array_mut().ok_or_else(|| {
            format!("upstream {upstream:?}: fingerprints is not an array; write fingerprints = [\"SHA1: …\"]")
        }),
        None => Err(format!(
            "upstream {upstream:?} has no fingerprints key; add fingerprints = [\"SHA1: …\"] by hand first"
        )),
    }
}

/// Adds `pin` to `upstream`'s `fingerprints` in `text`.
pub fn add(text: &str, upstream: &str, pin: &str) -> Result<Outcome, String> {
    let entry = written_form(pin)?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("the file is not TOML: {e}"))?;
    let list = fingerprints(&mut doc, upstream)?;
    if let Some(existing) = list
        .iter()
        .filter_map(Value::as_str)
        .find(|e| same_pin(e, &entry))
    {
        return Ok(Outcome::AlreadyPinned {
            entry: existing.to_string(),
        });
    }
    // A new entry looks like the last one: on its own line with the same
    // indent in a multi-line array (not the comment above it, which is the
    // last one's), after ", " in a one-line array.
    let prefix = list
        .iter()
        .last()
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        .and_then(|p| p.rfind('\n').map(|at| p[at..].to_string()))
        .unwrap_or_else(|| " ".into());
    let mut value = Value::from(entry.clone());
    value.decor_mut().set_prefix(prefix);
    let multi_line = list.trailing().as_str().is_some_and(|t| t.contains('\n'));
    if let Some(last) = list.iter_mut().last() {
        // In a one-line array the last value carries no space before "]";
        // it is no longer last.
        if !multi_line {
            last.decor_mut().set_suffix("");
        }
    }
    list.push_formatted(value);
    Ok(Outcome::Changed {
        text: doc.to_string(),
        entry,
    })
}

/// Removes the entry of `upstream`'s `fingerprints` that names the same
/// certificate as `pin`. Removing the last pin is refused: an upstream with
/// none trusts nothing, and that is a config error.
pub fn remove(text: &str, upstream: &str, pin: &str) -> Result<Outcome, String> {
    let wanted = written_form(pin)?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("the file is not TOML: {e}"))?;
    let list = fingerprints(&mut doc, upstream)?;
    let entries: Vec<String> = list
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_string())
        .collect();
    let Some(index) = entries.iter().position(|e| same_pin(e, &wanted)) else {
        return Err(format!(
            "upstream {upstream:?} has no pin {wanted:?}; its pins: {}",
            entries.join(", ")
        ));
    };
    if entries.len() == 1 {
        return Err(format!(
            "{wanted:?} is upstream {upstream:?}'s only pin: add the new one first \
             (`pinproxy pins add {upstream} PIN`), then remove this one"
        ));
    }
    let removed_prefix = list
        .get(index)
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        .map(str::to_string);
    list.remove(index);
    // In a one-line array the new first entry loses the space after ",";
    // on lines of their own, each keeps its own (a comment above the removed
    // entry was about it, and goes with it).
    if index == 0 {
        if let (Some(next), Some(prefix)) = (list.get_mut(0), removed_prefix) {
            if !prefix.contains('\n') {
                next.decor_mut().set_prefix(prefix);
            }
        }
    }
    Ok(Outcome::Changed {
        text: doc.to_string(),
        entry: entries[index].clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D";
    const NEW: &str = "SHA1: 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33";

    fn changed(outcome: Outcome) -> String {
        match outcome {
            Outcome::Changed { text, .. } => text,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_multi_line_array_gets_a_line_and_comments_stay() {
        let text = format!(
            "# the management server\n[[upstream]]\nname = \"gaia\"  # keep me\nfingerprints = [\n  # from api fingerprint, 2025\n  \"{OLD}\",\n]\n\n[[upstream]]\nname = \"other\"\nfingerprints = [\"{OLD}\"]\n"
        );
        let new = changed(add(&text, "gaia", &NEW.to_lowercase().replace("sha1: ", "")).unwrap());
        assert_eq!(
            new,
            format!(
                "# the management server\n[[upstream]]\nname = \"gaia\"  # keep me\nfingerprints = [\n  # from api fingerprint, 2025\n  \"{OLD}\",\n  \"{NEW}\",\n]\n\n[[upstream]]\nname = \"other\"\nfingerprints = [\"{OLD}\"]\n"
            )
        );
        // The same certificate in another form is already there.
        assert_eq!(
            add(&new, "gaia", &OLD.replace("SHA1: ", "sha1:")).unwrap(),
            Outcome::AlreadyPinned { entry: OLD.into() }
        );
        // Remove the old one after the renewal; its comment goes with it.
        let after = changed(remove(&new, "gaia", OLD).unwrap());
        assert_eq!(
            after,
            format!(
                "# the management server\n[[upstream]]\nname = \"gaia\"  # keep me\nfingerprints = [\n  \"{NEW}\",\n]\n\n[[upstream]]\nname = \"other\"\nfingerprints = [\"{OLD}\"]\n"
            )
        );
    }

    #[test]
    fn a_one_line_array_stays_on_one_line() {
        let text = format!("[[upstream]]\nname = \"gaia\"\nfingerprints = [\"{OLD}\"]\n");
        let two = changed(add(&text, "gaia", NEW).unwrap());
        assert_eq!(
            two,
            format!("[[upstream]]\nname = \"gaia\"\nfingerprints = [\"{OLD}\", \"{NEW}\"]\n")
        );
        let one = changed(remove(&two, "gaia", OLD).unwrap());
        assert_eq!(
            one,
            format!("[[upstream]]\nname = \"gaia\"\nfingerprints = [\"{NEW}\"]\n")
        );
    }

    #[test]
    fn what_cannot_be_edited_says_why() {
        let text = format!("[[upstream]]\nname = \"gaia\"\nfingerprints = [\"{OLD}\"]\n");
        let err = add(&text, "gaai", NEW).unwrap_err();
        assert!(
            err.contains("no [[upstream]] named \"gaai\"") && err.contains("gaia"),
            "{err}"
        );
        let err = add(&text, "gaia", "SHA1: 00:11").unwrap_err();
        assert!(err.contains("4 hex digits"), "{err}");
        let err = remove(&text, "gaia", OLD).unwrap_err();
        assert!(
            err.contains("only pin") && err.contains("pins add"),
            "{err}"
        );
        let err = remove(&text, "gaia", NEW).unwrap_err();
        assert!(err.contains("has no pin"), "{err}");
        let tofu = "[[upstream]]\nname = \"gaia\"\ntrust_on_first_use = true\n";
        assert!(add(tofu, "gaia", NEW).unwrap_err().contains("pins forget"));
        let targets = format!(
            "[[upstream]]\nname = \"gaia\"\n[[upstream.target]]\naddress = \"a\"\nfingerprints = [\"{OLD}\"]\n"
        );
        assert!(add(&targets, "gaia", NEW).unwrap_err().contains("by hand"));
    }
}
