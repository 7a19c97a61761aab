//! curl as the operator's tools run it, optionally as another local user.

/// What curl got: status, lower-cased head and body.
pub struct Got {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Got {
    /// The value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Runs curl (`-s -i`, bounded) with `args`, optionally as another user first
/// (`setpriv` arguments), and splits what it printed.
pub async fn curl_as(user: &[&str], args: &[&str]) -> Got {
    let mut cmd = if user.is_empty() {
        tokio::process::Command::new("curl")
    } else {
        let mut c = tokio::process::Command::new("setpriv");
        c.args(user).arg("curl");
        c
    };
    // Only a proxy a test names with -x: none from the environment.
    for var in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(var);
    }
    let out = cmd
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("curl {args:?} got no answer: {text:?} {:?}", out.stderr));
    Got {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

pub async fn curl(args: &[&str]) -> Got {
    curl_as(&[], args).await
}

/// `setpriv` arguments that run a command as `nobody`, if this process may.
#[cfg(not(unix))]
pub fn as_nobody() -> Option<[&'static str; 3]> {
    println!("skipped: no setpriv and no uids on this platform");
    None
}

/// `setpriv` arguments that run a command as `nobody`, if this process may.
#[cfg(unix)]
pub fn as_nobody() -> Option<[&'static str; 3]> {
    if nix::unistd::geteuid().as_raw() != 0 {
        println!(
            "skipped: running a client as another uid needs root (these tests run as uid {})",
            nix::unistd::geteuid()
        );
        return None;
    }
    Some(["--reuid=65534", "--regid=65534", "--clear-groups"])
}
