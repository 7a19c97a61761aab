//! Credentials pinproxy adds to requests (`inject_headers`), so the tools
//! behind it never hold them: read from a file or an environment variable,
//! and never printed: not in a log line, an error text, the status page or
//! `{:?}` of the config.

use std::fmt;
use std::path::Path;

use http::header::{HeaderName, HeaderValue};

/// A header value pinproxy injects. `Debug` shows no byte of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(HeaderValue);

impl Secret {
    /// The value to send, marked sensitive (HTTP/2 never indexes it).
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// A password or API key pinproxy sends in a login body. `Debug` shows no
/// byte of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    /// The text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(redacted)")
    }
}

/// Reads a secret file named by `key` (`api_key_file`, `password_file`):
/// checked like the config, not readable by every user, one line.
pub(super) fn secret_file(key: &str, path: &str, base: &Path) -> Result<SecretText, String> {
    let path = base.join(path);
    crate::platform::permissions::check(&path).map_err(|e| format!("{key}: {e}"))?;
    private(&path).map_err(|e| format!("{key}: {e}"))?;
    let raw = std::fs::read_to_string(&path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    let text = raw.strip_suffix('\n').unwrap_or(&raw);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() || text.contains(['\n', '\r']) {
        return Err(format!(
            "{key}: {} must hold the secret on one line",
            path.display()
        ));
    }
    Ok(SecretText(text.to_string()))
}

/// One `inject_headers` entry: the header and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedHeader {
    /// The header set on every forwarded request (replacing the client's).
    pub name: HeaderName,
    /// Its value.
    pub value: Secret,
}

/// Headers that describe the message or the connection, not the caller: an
/// injected value there would break framing or routing.
const NOT_INJECTABLE: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// Parses `NAME = "file:PATH"` or `NAME = "env:VAR"`; `base` is the config
/// file's directory. Errors name the header and the source, never the value.
pub(super) fn injected(name: &str, reference: &str, base: &Path) -> Result<InjectedHeader, String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("inject_headers: {name:?} is not a header name"))?;
    if NOT_INJECTABLE.contains(&header.as_str()) {
        return Err(format!(
            "inject_headers: {name} describes the message or the connection, not the caller; pinproxy sets it itself"
        ));
    }
    let raw = if let Some(path) = reference.strip_prefix("file:") {
        let path = base.join(path);
        crate::platform::permissions::check(&path)
            .map_err(|e| format!("inject_headers {name}: {e}"))?;
        private(&path).map_err(|e| format!("inject_headers {name}: {e}"))?;
        std::fs::read_to_string(&path)
            .map_err(|e| format!("inject_headers {name}: cannot read {}: {e}", path.display()))?
    } else if let Some(var) = reference.strip_prefix("env:") {
        std::env::var(var).map_err(|_| {
            format!("inject_headers {name}: environment variable {var} is not set (or not UTF-8)")
        })?
    } else {
        return Err(format!(
            "inject_headers {name}: write \"file:/run/secrets/NAME\" (the file's content) or \"env:VARIABLE\"; \
             a secret written into the config file would be one more copy of it"
        ));
    };
    let text = raw.strip_suffix('\n').unwrap_or(&raw);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(format!("inject_headers {name}: {reference} is empty"));
    }
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        format!(
            "inject_headers {name}: {reference} holds a character a header cannot carry (a line break inside, or a \
             control character); it must be one line"
        )
    })?;
    value.set_sensitive(true);
    Ok(InjectedHeader {
        name: header,
        value: Secret(value),
    })
}

/// A secret file readable by every user is no secret.
fn private(path: &Path) -> Result<(), String> {
    match crate::platform::permissions::readable_by_everyone(path) {
        Some(mode) => Err(format!(
            "{} is readable by every user on this machine (mode {mode:04o}); fix: chmod o-r {} (and replace the \
             secret: it may have been read)",
            path.display(),
            path.display()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_read_trimmed_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "Bearer s3cr3t-value\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let h = injected("Authorization", "file:token", dir.path()).unwrap();
        assert_eq!(h.value.header_value(), "Bearer s3cr3t-value");
        assert!(h.value.header_value().is_sensitive());
        assert!(!format!("{h:?}").contains("s3cr3t"));
        std::fs::write(&file, "two\nlines\n").unwrap();
        let err = injected("Authorization", "file:token", dir.path()).unwrap_err();
        assert!(err.contains("one line") && !err.contains("two"), "{err}");
        assert!(injected("Host", "env:X", dir.path())
            .unwrap_err()
            .contains("sets it itself"));
        assert!(injected("X-Key", "s3cr3t", dir.path())
            .unwrap_err()
            .contains("file:"));
        assert!(
            injected("X-Key", "env:PINPROXY_TEST_NO_SUCH_VAR", dir.path())
                .unwrap_err()
                .contains("is not set")
        );
    }
}
