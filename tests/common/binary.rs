//! The built `pinproxy` binary as a child process, its config files, and Python for client libraries.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use pinproxy::tls::pin::CertPin;

/// How to run the built binary: itself, or through `PINPROXY_TEST_RUNNER`
/// (`qemu-aarch64-static -L /usr/aarch64-linux-gnu` when the tests run for
/// another architecture, where the kernel cannot run it directly).
pub fn program() -> Vec<String> {
    let mut words: Vec<String> = std::env::var("PINPROXY_TEST_RUNNER")
        .map(|r| r.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    words.push(built_binary());
    words
}

/// Cargo's path to the binary. A Windows build cross-compiled on Linux and
/// tested under Wine gets a Unix path, which Wine serves as drive Z:.
fn built_binary() -> String {
    let path = env!("CARGO_BIN_EXE_pinproxy");
    if cfg!(windows) && path.starts_with('/') {
        format!("Z:{}", path.replace('/', "\\"))
    } else {
        path.to_string()
    }
}

/// A `Command` that runs the built binary (see [`program`]).
pub fn pinproxy_command() -> Command {
    let program = program();
    let mut cmd = Command::new(&program[0]);
    cmd.args(&program[1..]);
    cmd
}

/// The built `pinproxy` binary, logging JSON lines to stdout.
pub struct Binary {
    pub child: Child,
    /// `None` once [`Binary::discard_output`] took it.
    lines: Option<std::io::Lines<BufReader<ChildStdout>>>,
    pub seen: Vec<String>,
}

impl Binary {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::spawn_with_open_files(None, args, env)
    }

    /// Like [`Binary::spawn`], with the open-file limit (soft and hard) set to `nofile`.
    pub fn spawn_with_open_files(
        nofile: Option<u32>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Binary {
        Binary::spawn_after(nofile.map(|n| format!("ulimit -n {n}")), args, env)
    }

    /// Like [`Binary::spawn`], with the file-creation mask set to `umask` (octal).
    pub fn spawn_with_umask(umask: &str, args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::spawn_after(Some(format!("umask {umask}")), args, env)
    }

    /// Runs the binary the way `launcher` (a command that runs the program
    /// given after it, such as `systemd-socket-activate -l …`) starts it.
    pub fn spawn_by(launcher: &[&str], args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::spawn_with(Some(launcher), None, args, env)
    }

    /// Runs the binary from a shell that runs `setup` first, if given.
    fn spawn_after(setup: Option<String>, args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::spawn_with(None, setup, args, env)
    }

    fn spawn_with(
        launcher: Option<&[&str]>,
        setup: Option<String>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Binary {
        let mut cmd = match (launcher, setup) {
            (Some(launcher), _) => {
                let mut cmd = Command::new(launcher[0]);
                cmd.args(&launcher[1..]).args(program());
                cmd
            }
            (None, Some(setup)) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("{setup} && exec \"$@\""), "sh"])
                    .args(program());
                sh
            }
            (None, None) => pinproxy_command(),
        };
        cmd.args(["--log-format", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn pinproxy");
        let stdout = child.stdout.take().unwrap();
        Binary {
            child,
            lines: Some(BufReader::new(stdout).lines()),
            seen: Vec::new(),
        }
    }

    /// Reads log lines until one satisfies `pred`; panics if the process ends first.
    pub fn wait_for(&mut self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let lines = self.lines.as_mut().expect("output not discarded");
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
            self.seen.push(line.clone());
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if pred(&v) {
                    return v;
                }
            }
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!(
            "pinproxy exited before the expected log line; stdout: {:?} stderr: {err}",
            self.seen
        );
    }

    /// The first line so far that satisfies `pred`, or else the next one
    /// (lines from different threads may come in either order).
    pub fn seen_or_wait(&mut self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let seen = self
            .seen
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(&pred);
        seen.unwrap_or_else(|| self.wait_for(pred))
    }

    /// Waits for the next `listening` line and returns it.
    pub fn listening_line(&mut self) -> serde_json::Value {
        self.wait_for(|v| v["message"] == "listening")
    }

    /// Waits for the `listening` line and returns the bound address.
    pub fn listening(&mut self) -> SocketAddr {
        let v = self.wait_for(|v| v["message"] == "listening");
        v["listen"].as_str().unwrap().parse().unwrap()
    }

    /// Waits for the admin endpoint's line and returns its address.
    pub fn admin(&mut self) -> SocketAddr {
        self.admin_line()["listen"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Waits for the admin endpoint's line (it is serving then) and returns it.
    pub fn admin_line(&mut self) -> serde_json::Value {
        self.seen_or_wait(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("admin endpoint"))
        })
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Reads the rest of stdout (the process must be ending) and returns every line.
    pub fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        for line in self.lines.iter_mut().flatten() {
            self.seen.push(line.unwrap_or_default());
        }
        let status = self.child.wait().unwrap();
        (status, std::mem::take(&mut self.seen))
    }

    /// Reads and drops the rest of stdout on a thread of its own, so a test that
    /// makes the process log a lot never blocks it on a full pipe.
    pub fn discard_output(&mut self) {
        if let Some(lines) = self.lines.take() {
            std::thread::spawn(move || lines.for_each(drop));
        }
    }

    /// Peak resident memory so far, in KiB (Linux).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `python3` that can import `packages` (PyPI names): the system's, or with
/// the missing ones installed once into target/test-python.
pub fn python_with(packages: &[&str]) -> Command {
    static INSTALL: Mutex<()> = Mutex::new(());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-python");
    let modules: Vec<String> = packages.iter().map(|p| p.replace('-', "_")).collect();
    let imports = |pythonpath: Option<&str>| {
        let mut check = Command::new("python3");
        check.args(["-c", &format!("import {}", modules.join(", "))]);
        if let Some(p) = pythonpath {
            check.env("PYTHONPATH", p);
        }
        check
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let pythonpath = if imports(None) {
        None
    } else {
        if !imports(Some(dir)) {
            let ok = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--target", dir])
                .args(packages)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "pip install {packages:?} (needed by the tests) failed");
        }
        Some(dir)
    };
    let mut cmd = Command::new("python3");
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    cmd
}

/// `pinproxy check --connect --config PATH`, run to its end.
pub fn check_connect(path: &std::path::Path) -> std::process::Output {
    pinproxy_command()
        .args(["check", "--connect", "--config"])
        .arg(path)
        .output()
        .expect("run pinproxy check")
}

/// Writes `text` to a fresh temporary file and returns it (kept alive by the caller).
pub fn temp_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

/// A config file for the binary: one upstream at `target`. Active checks are
/// off unless `extra` sets `check_interval`: the check at start is one more
/// handshake, which tests counting handshakes or CONNECTs would see.
pub fn config_text(target: SocketAddr, pin: &CertPin, extra: &str) -> String {
    let checks = if extra.contains("check_interval") {
        ""
    } else {
        "check_interval = \"0s\"\n"
    };
    format!(
        "shutdown_timeout = \"10s\"\n[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:0\"\naddress = \"{target}\"\nserver_name = \"localhost\"\nfingerprints = [\"{pin}\"]\n{checks}{extra}"
    )
}

/// Runs a blocking step on the binary (reading its log) without stalling the upstream.
pub async fn on<T: Send + 'static>(
    bin: Binary,
    step: impl FnOnce(&mut Binary) -> T + Send + 'static,
) -> (Binary, T) {
    tokio::task::spawn_blocking(move || {
        let mut bin = bin;
        let out = step(&mut bin);
        (bin, out)
    })
    .await
    .unwrap()
}
