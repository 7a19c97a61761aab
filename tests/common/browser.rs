//! Headless Chromium (Debian's package), for pages as a real browser runs them.

use std::time::Duration;

/// The browser's command, or `None` with the reason printed (`.ci/run`
/// installs it, so CI always has it).
pub fn chromium() -> Option<&'static str> {
    let found = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("skipped: no chromium on this machine (.ci/run installs Debian's)");
    }
    found.then_some("chromium")
}

/// Runs `browser` headless on `url` with `args` (such as `--dump-dom` or
/// `--screenshot=FILE`) in a fresh profile; its stdout.
pub async fn headless(browser: &str, args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("chromium finished")
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
