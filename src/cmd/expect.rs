//! What the operator expects a server to present, for `fingerprint --expect`
//! and `pins add --from-server`: a pin given on the command line, or one read
//! from the output of a command that asks the server itself
//! (`--expect-from 'ssh admin@mgmt api fingerprint'`). The second is
//! out-of-band verification over a channel the operator already trusts, so a
//! first pin needs no blind trust.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::tls::pin::{self, CertPin, Fingerprints};

/// How long `--expect-from` may run: long enough to type an SSH password.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// More output than `api fingerprint` and any banner could print.
const MAX_OUTPUT: u64 = 1 << 20;

/// An expected certificate, and where the expectation came from (for messages).
#[derive(Debug, Clone)]
pub struct Expectation {
    /// The pin the presented certificate must satisfy.
    pub pin: CertPin,
    /// `--expect` or `the output of `COMMAND``.
    pub source: String,
}

impl Expectation {
    /// From `--expect PIN` or `--expect-from COMMAND` (at most one is given);
    /// `None` when neither is.
    pub async fn from_args(
        expect: Option<&str>,
        expect_from: Option<&str>,
    ) -> Result<Option<Expectation>, String> {
        match (expect, expect_from) {
            (Some(text), _) => CertPin::parse(text)
                .map(|pin| {
                    Some(Expectation {
                        pin,
                        source: "--expect".into(),
                    })
                })
                .map_err(|e| format!("--expect: {e}")),
            (None, Some(command)) => {
                let output = run(command, COMMAND_TIMEOUT).await?;
                let pin = pin::parse_fingerprint_output(&output)
                    .map_err(|e| format!("--expect-from `{command}`: {e}"))?;
                Ok(Some(Expectation {
                    pin,
                    source: format!("the output of `{command}`"),
                }))
            }
            (None, None) => Ok(None),
        }
    }

    /// Whether the certificate with these fingerprints is the expected one.
    pub fn matches(&self, presented: &Fingerprints) -> bool {
        self.pin.matches(presented)
    }
}

/// Runs `command` through the shell, with the terminal for its prompts and
/// errors (an SSH password is typed there), and returns what it printed.
async fn run(command: &str, timeout: Duration) -> Result<String, String> {
    let mut child = shell(command)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("--expect-from: cannot start `{command}`: {e}"))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| format!("--expect-from: `{command}` has no output pipe"))?;
    let finished = async {
        let mut bytes = Vec::new();
        (&mut stdout)
            .take(MAX_OUTPUT)
            .read_to_end(&mut bytes)
            .await?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((bytes, status))
    };
    let (bytes, status) = tokio::time::timeout(timeout, finished)
        .await
        .map_err(|_| {
            format!(
                "--expect-from: `{command}` did not finish within {}s",
                timeout.as_secs()
            )
        })?
        .map_err(|e| format!("--expect-from: `{command}`: {e}"))?;
    if !status.success() {
        return Err(format!(
            "--expect-from: `{command}` failed ({status}); nothing was compared"
        ));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(unix)]
fn shell(command: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(command);
    c
}

#[cfg(windows)]
fn shell(command: &str) -> Command {
    let mut c = Command::new("cmd");
    c.arg("/C").arg(command);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_s_output_gives_the_pin_and_a_failing_command_gives_none() {
        let sha1 = "SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D";
        // sh on Unix, cmd on Windows.
        let (printing, failing) = if cfg!(windows) {
            (
                format!("echo banner& echo {sha1}"),
                format!("echo {sha1}& exit 3"),
            )
        } else {
            (
                format!("echo banner; echo '{sha1}'"),
                format!("echo '{sha1}'; exit 3"),
            )
        };
        let got = Expectation::from_args(None, Some(&printing))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.pin, CertPin::parse(sha1).unwrap());
        let failed = Expectation::from_args(None, Some(&failing))
            .await
            .unwrap_err();
        assert!(
            failed.contains("failed") && failed.contains("nothing was compared"),
            "{failed}"
        );
        let empty = Expectation::from_args(None, Some("echo hello"))
            .await
            .unwrap_err();
        assert!(empty.contains("no `SHA1:` line"), "{empty}");
        // Unix only: cmd has no sleep of its own, and a test runtime would wait
        // for the read of a pipe an orphaned grandchild still holds.
        if cfg!(unix) {
            let slow = run("sleep 5", Duration::from_millis(50)).await.unwrap_err();
            assert!(slow.contains("did not finish"), "{slow}");
        }
    }
}
