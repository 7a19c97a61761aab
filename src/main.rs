//! The `pinproxy` command line: parses arguments, sets up logging, and hands
//! over to the library. Errors end here as one plain message and exit code 1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use pinproxy::cmd::expect::Expectation;
use pinproxy::cmd::{check, demo, fingerprint, health, pins};
use pinproxy::config::{self, Config, EgressProxy, Flags};
use pinproxy::service::{self, Source};
use pinproxy::shutdown;
use pinproxy::telemetry::logging;
use pinproxy::tls::identity::ClientIdentity;

/// Forward plain HTTP on loopback to an HTTPS server verified by its certificate fingerprint.
///
/// Tools that cannot pin a self-signed certificate (legacy scripts, monitoring agents, old HTTP
/// libraries) talk to http://127.0.0.1:PORT; pinproxy talks TLS to the real server and refuses it
/// unless its certificate matches a pin, such as the SHA1 that `api fingerprint` prints on a Check
/// Point management server.
#[derive(Parser)]
#[command(name = "pinproxy", version, propagate_version = true)]
#[command(
    after_help = "Start with `pinproxy demo`, then `pinproxy fingerprint HOST:PORT` against your server."
)]
struct Cli {
    /// Log format on stdout; the level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Append log lines (the access log too) to FILE instead of writing them to
    /// stdout: for a Windows service, whose stdout goes nowhere.
    #[arg(long, global = true, value_name = "FILE")]
    log_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the listeners of a config file, or of one upstream given by flags.
    ///
    /// With a file:   pinproxy run --config /etc/pinproxy/proxy.toml
    /// Without one:   pinproxy run --listen 127.0.0.1:8443 --upstream mgmt.example:443 \
    ///                    --fingerprint "SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D"
    ///
    /// SIGHUP re-reads the file (so does a change to it, with --watch-config); an invalid
    /// file is reported and the running config keeps serving.
    /// SIGINT/SIGTERM stop accepting and let in-flight requests finish (shutdown_timeout).
    #[command(verbatim_doc_comment)]
    Run(RunArgs),

    /// Validate a config file without serving it; with --connect, also handshake with every
    /// upstream and report whether the certificate it presents matches a pin.
    ///
    /// Exit status 0 when everything checks out, 1 otherwise.
    Check(CheckArgs),

    /// Connect once, without a pin, and print the server's certificate fingerprints.
    ///
    /// Prints the SHA1 exactly as `api fingerprint` shows it on the server console, the
    /// English words, SHA-256, curl's SPKI pin, subject, issuer, validity, and a config
    /// snippet. This is trust on first use: compare with the server console before using it.
    Fingerprint(FingerprintArgs),

    /// Ask a running pinproxy's admin endpoint whether it is ready: exit 0 when it is,
    /// 1 with the reason when not. For exec probes and container HEALTHCHECKs.
    ///
    /// The endpoint is --admin, or else the [admin] listen of the config file.
    Health(HealthArgs),

    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    ///
    /// bash: pinproxy completions bash > /etc/bash_completion.d/pinproxy
    /// zsh:  pinproxy completions zsh > "${fpath[1]}/_pinproxy"
    /// fish: pinproxy completions fish > ~/.config/fish/completions/pinproxy.fish
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the manual page (roff): pinproxy man | man -l -
    ///
    /// With --dir, write every page there: pinproxy.1, one pinproxy-COMMAND.1 per
    /// subcommand, and pinproxy.toml.5 for the configuration.
    Man {
        /// Write all pages into this directory instead of printing pinproxy(1).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },

    /// The pins learned on first use (upstreams with trust_on_first_use): list
    /// them, or forget one so that its next connection learns it again.
    #[command(subcommand)]
    Pins(PinsCommand),

    /// Windows: install pinproxy as a service of the service control manager, start,
    /// stop or remove it. On Linux, use the systemd unit (deploy/systemd, or the .deb).
    #[command(subcommand)]
    Service(ServiceCommand),

    /// Run a self-contained demo: a mock management API with a fresh self-signed
    /// certificate, a pinned listener in front of it, and an impostor it refuses.
    Demo(DemoArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Config file [default: $PINPROXY_CONFIG, else /etc/pinproxy/proxy.toml].
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "upstream", "fingerprints", "server_name"])]
    config: Option<PathBuf>,

    /// Plain-HTTP listen address: IP:PORT (loopback unless --allow-non-loopback)
    /// or unix:/path (a socket file, mode --socket-mode).
    #[arg(long, value_name = "ADDR", requires_all = ["upstream", "fingerprints"])]
    listen: Option<String>,

    /// The TLS server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", requires_all = ["listen", "fingerprints"])]
    upstream: Option<String>,

    /// A pin in any supported format; repeat for several (any one matching is enough).
    #[arg(long = "fingerprint", value_name = "PIN", requires = "listen")]
    fingerprints: Vec<String>,

    /// Name for SNI and the Host header [default: the upstream's host; no SNI for an IP].
    #[arg(long, value_name = "NAME", requires = "listen")]
    server_name: Option<String>,

    /// Allow a listener on a non-loopback address (plain HTTP exposes the upstream).
    #[arg(long, requires = "listen")]
    allow_non_loopback: bool,

    /// Permission bits of a unix:/path listener's socket file [default: 0600, only
    /// pinproxy's own user may connect].
    #[arg(long, value_name = "MODE", requires = "listen")]
    socket_mode: Option<String>,

    /// Reload when the config file's content changes (checked every second; follows
    /// symlinks, so a Kubernetes ConfigMap update is seen).
    #[arg(long, conflicts_with = "listen")]
    watch_config: bool,
}

#[derive(clap::Subcommand)]
enum ServiceCommand {
    /// Register the service (automatic start, account NT AUTHORITY\LocalService), which
    /// runs `pinproxy service run` with --config and --log-file. From an elevated prompt.
    Install {
        /// Config file [default: %ProgramData%\pinproxy\proxy.toml]; checked first.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where the service writes its log [default: pinproxy.log beside the config].
        #[arg(long = "service-log", value_name = "FILE")]
        service_log: Option<PathBuf>,
        /// The service's name, for more than one pinproxy on a machine.
        #[arg(long, default_value = "pinproxy")]
        name: String,
    },
    /// Stop the service if it runs, and remove it (config and log stay).
    Uninstall {
        /// The service's name.
        #[arg(long, default_value = "pinproxy")]
        name: String,
    },
    /// Start the service and wait until its listeners are bound.
    Start {
        /// The service's name.
        #[arg(long, default_value = "pinproxy")]
        name: String,
    },
    /// Stop the service (in-flight requests finish, as with SIGTERM) and wait.
    Stop {
        /// The service's name.
        #[arg(long, default_value = "pinproxy")]
        name: String,
    },
    /// Ask the running service to reload its config (as SIGHUP does on Unix; so does
    /// `sc control pinproxy paramchange`). The service log says whether it was taken.
    Reload {
        /// The service's name.
        #[arg(long, default_value = "pinproxy")]
        name: String,
    },
    /// What the service control manager starts: `pinproxy run` as a service.
    #[command(hide = true)]
    Run {
        /// The service's name.
        #[arg(long, default_value = "pinproxy")]
        name: String,
        /// Config file [default: %ProgramData%\pinproxy\proxy.toml].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Subcommand)]
enum PinsCommand {
    /// Show every upstream's pins: the configured ones, and the learned ones with
    /// when and from where they were learned.
    List {
        /// Config file [default: $PINPROXY_CONFIG, else /etc/pinproxy/proxy.toml].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Add a pin to an upstream's `fingerprints` in the config file, keeping its comments
    /// and layout; the result is checked as `pinproxy check` does before it is written.
    ///
    /// pinproxy pins add gaia 'SHA1: 7D:FE:…'
    /// pinproxy pins add gaia --from-server --expect-from 'ssh admin@mgmt api fingerprint'
    Add(PinsAddArgs),
    /// Remove a pin (in any of its forms) from an upstream's `fingerprints` in the
    /// config file; an upstream's only pin is not removed.
    Remove {
        /// The upstream's name.
        name: String,
        /// The pin to remove, in any form naming the same certificate.
        pin: String,
        /// Config file [default: $PINPROXY_CONFIG, else /etc/pinproxy/proxy.toml].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Remove an upstream's learned pin; after a reload its next connection learns again.
    Forget {
        /// The upstream's name.
        name: String,
        /// Config file [default: $PINPROXY_CONFIG, else /etc/pinproxy/proxy.toml].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct PinsAddArgs {
    /// The upstream's name.
    name: String,

    /// The pin to add: Gaia's SHA1 line, any form of `fingerprints`, or file:PATH.
    #[arg(
        required_unless_present = "from_server",
        conflicts_with = "from_server"
    )]
    pin: Option<String>,

    /// Take the pin from what the upstream presents now (its address, server name,
    /// egress proxy and client certificate as configured), if it is what --expect or
    /// --expect-from says.
    #[arg(long)]
    from_server: bool,

    /// With --from-server: the pin the server must present (the SHA1 line of
    /// `api fingerprint` on its console).
    #[arg(
        long,
        value_name = "PIN",
        requires = "from_server",
        conflicts_with = "expect_from"
    )]
    expect: Option<String>,

    /// With --from-server: run COMMAND (e.g. 'ssh admin@mgmt api fingerprint') and
    /// expect the fingerprint it prints: verification out of band.
    #[arg(long, value_name = "COMMAND", requires = "from_server")]
    expect_from: Option<String>,

    /// With --from-server and no expectation: add whatever the server presents,
    /// unchecked. Only on a network where no one can be in between.
    #[arg(long, requires = "from_server", conflicts_with_all = ["expect", "expect_from"])]
    trust_first_use: bool,

    /// Config file [default: $PINPROXY_CONFIG, else /etc/pinproxy/proxy.toml].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Config file [default: $PINPROXY_CONFIG, else /etc/pinproxy/proxy.toml].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Also connect to every upstream and compare its certificate with the pins.
    #[arg(long)]
    connect: bool,

    /// Print one JSON object (valid, ok, and with --connect one result per address:
    /// match, mismatch, not_learned or failed) instead of the report.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct FingerprintArgs {
    /// The TLS server: HOST[:PORT] (e.g. mgmt.example.com:443; the port is 443 if left
    /// out) or a URL (https://mgmt.example.com/web_api/: its host and port).
    address: String,

    /// Name to send as SNI [default: the host, none for an IP].
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,

    /// Accept an old appliance's RSA-1024 / SHA-1 / X.509 v1 certificate (TLS 1.2),
    /// as `legacy_crypto = true` does for an upstream.
    #[arg(long)]
    legacy_crypto: bool,

    /// Show this client certificate (PEM chain) if the server asks for one, as
    /// `client_certificate` does for an upstream.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_certificate: Option<PathBuf>,

    /// Reach the server through this HTTP proxy (a CONNECT tunnel), as
    /// `egress_proxy` does for an upstream: http://[user:password@]host:port,
    /// `env` for $HTTPS_PROXY, or file:PATH to read the URL from a file. A
    /// password on the command line is visible to every local user (`ps`): give
    /// such a URL in $PINPROXY_EGRESS_PROXY or a file instead.
    #[arg(
        long,
        value_name = "URL",
        env = "PINPROXY_EGRESS_PROXY",
        hide_env_values = true
    )]
    egress_proxy: Option<String>,

    /// The private key of --client-certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "client_certificate")]
    client_key: Option<PathBuf>,

    /// Give up on connect or handshake after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// Print one JSON object (sha1, words, sha256, pin, spki_pin, subject, issuer,
    /// not_before/not_after as unix seconds, …) instead of the report.
    #[arg(long)]
    json: bool,

    /// Compare with this pin instead of reporting: exit 0 and print MATCH when the
    /// server presents that certificate, exit 1 and MISMATCH (with both
    /// fingerprints) when not, exit 2 when they cannot be compared.
    #[arg(long, value_name = "PIN", conflicts_with_all = ["expect_from", "json"])]
    expect: Option<String>,

    /// Like --expect, with the pin read from what COMMAND prints (Gaia's `SHA1:` or
    /// English words line, anywhere in its output), e.g.
    /// 'ssh admin@mgmt api fingerprint': verification out of band, over SSH.
    #[arg(long, value_name = "COMMAND", conflicts_with = "json")]
    expect_from: Option<String>,
}

#[derive(clap::Args)]
struct HealthArgs {
    /// The admin endpoint, IP:PORT or unix:/path [default: [admin] listen of --config].
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,

    /// Config file whose [admin] listen to ask [default: $PINPROXY_CONFIG, else
    /// /etc/pinproxy/proxy.toml].
    #[arg(long, value_name = "FILE", conflicts_with = "admin")]
    config: Option<PathBuf>,

    /// Ask whether the process is alive (/healthz) rather than ready (/readyz):
    /// for liveness probes, which must not fail while it drains.
    #[arg(long)]
    live: bool,

    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Where the demo's pinned listener binds (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormat::Text => logging::Format::Text,
        LogFormat::Json => logging::Format::Json,
    };
    if let Err(e) = logging::init(format, cli.log_file.as_deref()) {
        return fail(e.to_string());
    }
    JSON_LOGS.store(format == logging::Format::Json, Ordering::Relaxed);
    // The service control manager takes this thread and calls back on another.
    if let Command::Service(ServiceCommand::Run { name, config }) = &cli.command {
        let source = Source::File {
            path: config.clone().unwrap_or_else(config::default_path),
            watch: false,
        };
        return match windows_service::run(name, source) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    // Each client and upstream connection is a descriptor; a soft limit of 1024
    // (a common default) would cap pinproxy far below max_client_connections.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    if matches!(cli.command, Command::Run(_)) {
        // Before any thread starts: every thread of the proxy inherits it.
        scheduling::prefer_batches();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let done = match cli.command {
            Command::Run(args) => {
                heap::start_trimming();
                run(args).await
            }
            Command::Check(args) => check(args).await,
            Command::Fingerprint(args) => return fingerprint(args).await,
            Command::Health(args) => health(args).await,
            Command::Pins(command) => pins(command).await,
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "pinproxy",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
            Command::Man { dir } => man(dir),
            Command::Service(command) => service_command(command).await,
            Command::Demo(args) => demo::run(args.listen, logged_signal()).await,
        };
        done.map(|()| ExitCode::SUCCESS)
    });
    // Connections still open after shutdown_timeout are cut here, not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result.unwrap_or_else(fail)
}

/// Gives the system back the heap a load peak left free.
mod heap {
    /// How often: often enough that memory measured after a burst is what the
    /// process uses, rarely enough to cost nothing (one call walks a heap of a
    /// few MiB in well under a millisecond).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// glibc keeps freed pages for reuse and returns only the top of its heaps,
    /// so after a load peak of a few hundred connections the process held ~7 MiB
    /// it no longer used, for good (docs/benchmark.md). `malloc_trim` returns
    /// every free page; HAProxy calls it for the same reason. Other C libraries
    /// (musl) return memory by themselves; the container image is glibc,
    /// linked statically, and trims too.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub(super) fn start_trimming() {
        tokio::spawn(async {
            let mut every = tokio::time::interval(EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // SAFETY: malloc_trim has no preconditions; it only releases
                // free memory that glibc's allocator owns. The library crate
                // forbids unsafe code; this and `scheduling`'s call are the
                // binary's only ones.
                #[allow(unsafe_code)]
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub(super) fn start_trimming() {}
}

/// Lets the kernel hand a busy proxy its work in batches.
mod scheduling {
    /// Puts the calling thread, and so every thread it starts after, under
    /// `SCHED_BATCH`. A woken worker then does not preempt the task running on
    /// its core; it runs when that task sleeps or its slice ends, and by then
    /// usually has several connections ready instead of one. On the benchmark
    /// VM with its two cores shared with the clients and an upstream running
    /// as a daemon, that halved the context switches per keep-alive request
    /// and cut pinproxy's CPU per request by about 30% (docs/benchmark.md,
    /// eighth round); with a core free it changes nothing, a woken thread gets
    /// that core at once. It asks for no privilege (the weight stays the
    /// default's); where a seccomp filter refuses the call (systemd's
    /// `@resources`), the unit's `CPUSchedulingPolicy=batch` has set it.
    #[cfg(target_os = "linux")]
    pub(super) fn prefer_batches() {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pthread_self() is the calling thread, alive for the call,
        // and `param` a valid sched_param for as long as the call reads it.
        // pthread_setschedparam rather than sched_setscheduler: musl leaves
        // the latter unimplemented (ENOSYS), glibc and musl both have this.
        #[allow(unsafe_code)]
        let rc =
            unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_BATCH, &param) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::from_raw_os_error(rc), "workers keep the default scheduling policy");
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn prefer_batches() {}
}

fn fail(message: String) -> ExitCode {
    // With JSON logs, the log stream gets it as one more JSON line (for
    // collectors); a person still reads it on stderr.
    if JSON_LOGS.load(Ordering::Relaxed) {
        tracing::error!(fatal = true, "{message}");
    }
    eprintln!("pinproxy: error: {message}");
    ExitCode::FAILURE
}

async fn run(args: RunArgs) -> Result<(), String> {
    let source = match &args.listen {
        Some(listen) => Source::Flags(Box::new(
            Config::from_flags(&Flags {
                listen: listen.clone(),
                upstream: args.upstream.clone().unwrap_or_default(),
                fingerprints: args.fingerprints.clone(),
                server_name: args.server_name.clone(),
                allow_non_loopback: args.allow_non_loopback,
                socket_mode: args.socket_mode.clone(),
            })
            .map_err(|e| e.to_string())?,
        )),
        None => Source::File {
            path: args.config.clone().unwrap_or_else(config::default_path),
            watch: args.watch_config,
        },
    };
    service::run(source, logged_signal()).await
}

/// `pinproxy service …` (Windows; elsewhere it says what to use instead).
async fn service_command(command: ServiceCommand) -> Result<(), String> {
    if !cfg!(windows) {
        return Err(format!(
            "`pinproxy service` manages a Windows service; on {} run pinproxy under systemd (deploy/systemd, or \
             the .deb's pinproxy.service), or `pinproxy run` by hand",
            std::env::consts::OS
        ));
    }
    let done = match command {
        ServiceCommand::Install {
            config,
            service_log,
            name,
        } => {
            let config = config.unwrap_or_else(config::default_path);
            // A broken config is reported now, not in the service's log at start.
            Config::load(&config).map_err(|e| e.to_string())?;
            let config =
                std::path::absolute(&config).map_err(|e| format!("{}: {e}", config.display()))?;
            let log = match service_log {
                Some(log) => {
                    std::path::absolute(&log).map_err(|e| format!("{}: {e}", log.display()))?
                }
                None => config.with_file_name("pinproxy.log"),
            };
            windows_service::install(&name, &config, &log)?
        }
        ServiceCommand::Uninstall { name } => windows_service::uninstall(&name)?,
        ServiceCommand::Start { name } => windows_service::start(&name)?,
        ServiceCommand::Stop { name } => windows_service::stop(&name)?,
        ServiceCommand::Reload { name } => windows_service::reload(&name)?,
        // main hands the thread to the service control manager before any runtime.
        ServiceCommand::Run { .. } => {
            return Err("`service run` runs outside the async runtime".into())
        }
    };
    println!("{done}");
    Ok(())
}

/// Only Windows has a service control manager (`service_command` says so
/// before any of these is reached elsewhere).
#[cfg(not(windows))]
mod windows_service {
    use pinproxy::service::Source;

    const WINDOWS_ONLY: &str = "`pinproxy service` manages a Windows service";

    pub fn install(_: &str, _: &std::path::Path, _: &std::path::Path) -> Result<String, String> {
        Err(WINDOWS_ONLY.into())
    }
    pub fn uninstall(_: &str) -> Result<String, String> {
        Err(WINDOWS_ONLY.into())
    }
    pub fn start(_: &str) -> Result<String, String> {
        Err(WINDOWS_ONLY.into())
    }
    pub fn stop(_: &str) -> Result<String, String> {
        Err(WINDOWS_ONLY.into())
    }
    pub fn reload(_: &str) -> Result<String, String> {
        Err(WINDOWS_ONLY.into())
    }
    pub fn run(_: &str, _: Source) -> Result<(), String> {
        Err(WINDOWS_ONLY.into())
    }
}
#[cfg(windows)]
use pinproxy::ops::windows_service;

async fn check(args: CheckArgs) -> Result<(), String> {
    let path = args.config.unwrap_or_else(config::default_path);
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            if args.json {
                print!("{}", check::invalid_json(&path, &e));
            }
            return Err(e.to_string());
        }
    };
    let report = check::check(&path, &config, args.connect).await;
    if args.json {
        print!("{}", report.json(&path));
    } else {
        print!("{}", report.text);
    }
    if report.ok {
        Ok(())
    } else {
        Err("at least one upstream does not check out (see above)".into())
    }
}

async fn pins(command: PinsCommand) -> Result<(), String> {
    let path = |config: Option<PathBuf>| config.unwrap_or_else(config::default_path);
    let text = match command {
        PinsCommand::List { config } => {
            let path = path(config);
            pins::list(&Config::load(&path).map_err(|e| e.to_string())?, &path)?
        }
        PinsCommand::Forget { name, config } => {
            let path = path(config);
            pins::forget(
                &Config::load(&path).map_err(|e| e.to_string())?,
                &path,
                &name,
            )?
        }
        PinsCommand::Remove { name, pin, config } => pins::remove(&path(config), &name, &pin)?,
        PinsCommand::Add(args) => match args.pin {
            Some(pin) => pins::add(&path(args.config), &args.name, &pin)?,
            None => {
                let expected =
                    Expectation::from_args(args.expect.as_deref(), args.expect_from.as_deref())
                        .await?;
                pins::add_from_server(
                    &path(args.config),
                    &args.name,
                    expected,
                    args.trust_first_use,
                )
                .await?
            }
        },
    };
    print!("{text}");
    Ok(())
}

fn man(dir: Option<PathBuf>) -> Result<(), String> {
    let pages = pinproxy::cmd::manual::pages(Cli::command())?;
    match dir {
        None => {
            use std::io::Write;
            let main = &pages[0].1;
            std::io::stdout()
                .write_all(main)
                .map_err(|e| format!("cannot write the manual page: {e}"))
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for (name, roff) in &pages {
                let path = dir.join(name);
                std::fs::write(&path, roff).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            println!("wrote {} pages to {}", pages.len(), dir.display());
            Ok(())
        }
    }
}

async fn health(args: HealthArgs) -> Result<(), String> {
    let admin = match args.admin {
        Some(text) => config::parse_client_target(&text).map_err(|e| format!("--admin: {e}"))?,
        None => health::admin_in_file(&args.config.unwrap_or_else(config::default_path))?,
    };
    let probe = if args.live {
        health::Probe::Live
    } else {
        health::Probe::Ready
    };
    let line = health::check(&admin, probe, args.timeout).await?;
    println!("{line}");
    Ok(())
}

/// The shutdown signal, logged; its handlers are installed now (see
/// `shutdown::signal`), before anything is bound.
fn logged_signal() -> impl std::future::Future<Output = ()> {
    let signal = shutdown::signal();
    async move {
        let name = signal.await;
        tracing::info!(signal = name, "shutting down: no new connections");
    }
}

/// `pinproxy fingerprint`; with an expectation its exit code is the verdict
/// (0 match, 1 mismatch, 2 not compared), as `cmp` and `diff` do.
async fn fingerprint(args: FingerprintArgs) -> Result<ExitCode, String> {
    if args.expect.is_none() && args.expect_from.is_none() {
        return report_fingerprint(args).await.map(|()| ExitCode::SUCCESS);
    }
    match compare_fingerprint(args).await {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::FAILURE),
        Err(message) => {
            fail(message);
            Ok(ExitCode::from(2))
        }
    }
}

async fn compare_fingerprint(args: FingerprintArgs) -> Result<bool, String> {
    // The expectation first: a command that fails costs no connection.
    let expected =
        Expectation::from_args(args.expect.as_deref(), args.expect_from.as_deref()).await?;
    let address = fingerprint::address_of(&args.address)?;
    let presented = probe(&args).await?;
    let (same, text) = match &expected {
        Some(expected) => fingerprint::compare(&address, &presented, expected),
        None => return Err("nothing to compare with".into()),
    };
    print!("{text}");
    Ok(same)
}

async fn report_fingerprint(args: FingerprintArgs) -> Result<(), String> {
    let address = fingerprint::address_of(&args.address)?;
    let presented = probe(&args).await?;
    let report = if args.json {
        fingerprint::report_json(&address, args.server_name.as_deref(), &presented)
    } else {
        fingerprint::report(&address, args.server_name.as_deref(), &presented)
    };
    print!("{report}");
    Ok(())
}

async fn probe(args: &FingerprintArgs) -> Result<fingerprint::Presented, String> {
    let address = fingerprint::address_of(&args.address)?;
    let identity = match (&args.client_certificate, &args.client_key) {
        (Some(certificate), Some(key)) => {
            Some(ClientIdentity::load(certificate, key).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let egress_proxy = match &args.egress_proxy {
        Some(url) => {
            let url = match url.strip_prefix("file:") {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| format!("--egress-proxy file:{path}: {e}"))?
                    .trim()
                    .to_string(),
                None => url.clone(),
            };
            EgressProxy::parse(&url).map_err(|e| format!("--egress-proxy: {e}"))?
        }
        None => None,
    };
    fingerprint::probe(
        &address,
        args.server_name.as_deref(),
        args.timeout,
        args.legacy_crypto,
        identity,
        egress_proxy,
    )
    .await
}

/// `--log-format json` is on: a fatal error is a JSON log line too.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);
