//! `pinproxy man`: the manual pages, from the same clap definitions as
//! `--help` and from `proxy.example.toml`: pinproxy(1) with FILES,
//! ENVIRONMENT, SIGNALS, EXIT STATUS and EXAMPLES, one pinproxy-COMMAND(1)
//! per subcommand it refers to, and pinproxy.toml(5) for the configuration.

use clap::Command;

/// The example configuration, every key with its comment: the body of pinproxy.toml(5).
const EXAMPLE: &str = include_str!("../../proxy.example.toml");

/// Every page, as `(file name, roff)`: pinproxy.1, pinproxy-run.1, …, pinproxy.toml.5.
pub fn pages(mut cli: Command) -> Result<Vec<(String, Vec<u8>)>, String> {
    // `pinproxy help run` is `pinproxy run --help`: no page of its own, and
    // none refers to one.
    cli = cli
        .disable_help_subcommand(true)
        .mut_subcommands(|s| s.disable_help_subcommand(true));
    cli.build();
    let mut pages = Vec::new();
    let mut main = Vec::new();
    clap_mangen::Man::new(cli.clone())
        .render(&mut main)
        .map_err(|e| e.to_string())?;
    main.extend_from_slice(MAIN_SECTIONS.as_bytes());
    pages.push(("pinproxy.1".to_string(), main));
    add_subcommands(&cli, "pinproxy", &mut pages)?;
    pages.push(("pinproxy.toml.5".to_string(), config_page().into_bytes()));
    // troff's ASCII output (man -E ascii, a C locale) has no ellipsis.
    Ok(pages
        .into_iter()
        .map(|(name, roff)| {
            (
                name,
                String::from_utf8_lossy(&roff)
                    .replace('…', "...")
                    .into_bytes(),
            )
        })
        .collect())
}

/// One page per subcommand, named as clap_mangen's SUBCOMMANDS section names
/// them (`pinproxy-pins-add`), down every level.
fn add_subcommands(
    cmd: &Command,
    prefix: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), String> {
    for sub in cmd.get_subcommands() {
        let name = format!("{prefix}-{}", sub.get_name());
        let page_cmd = sub
            .clone()
            .name(name.clone())
            .bin_name(name.replace('-', " "));
        let mut roff = Vec::new();
        clap_mangen::Man::new(page_cmd)
            .render(&mut roff)
            .map_err(|e| e.to_string())?;
        roff.extend_from_slice(b".SH \"SEE ALSO\"\npinproxy(1), pinproxy.toml(5)\n");
        pages.push((format!("{name}.1"), roff));
        add_subcommands(sub, &name, pages)?;
    }
    Ok(())
}

const MAIN_SECTIONS: &str = r#".SH CONFIGURATION
The configuration file is TOML; every key, with its default and what it does, is in
.BR pinproxy.toml (5).
Check a file with
.BR "pinproxy check \-\-config FILE \-\-connect" .
.SH FILES
.TP
.I /etc/pinproxy/proxy.toml
The configuration read by default (see PINPROXY_CONFIG). It must be writable only by
its owner and root, as must every directory above it and every file it names.
.TP
.I /var/lib/pinproxy/known_pins.toml
Pins learned on first use (known_pins; under systemd $STATE_DIRECTORY/known_pins.toml).
.TP
.I /usr/share/doc/pinproxy/examples/proxy.toml
The example configuration with every key explained.
.SH ENVIRONMENT
.TP
.B PINPROXY_CONFIG
The configuration file when \-\-config is not given.
.TP
.B RUST_LOG
Log level and filters (default info), e.g. pinproxy=debug, or pinproxy::audit=off to keep
audit records out of the log.
.TP
.B PINPROXY_EGRESS_PROXY
The egress proxy URL for pinproxy fingerprint (keeps a password off the command line).
.TP
.B HTTPS_PROXY
Used as the egress proxy where the configuration says egress_proxy = "env".
.TP
.B LISTEN_FDS, LISTEN_FDNAMES, NOTIFY_SOCKET, WATCHDOG_USEC
Set by systemd: socket activation and service notifications.
.SH SIGNALS
.TP
.B SIGHUP
Reload the configuration file (also reopens audit_log); an invalid file is refused and
the running configuration keeps serving.
.TP
.B SIGTERM, SIGINT
Stop accepting, let in-flight requests finish (shutdown_timeout), log out of brokered
sessions and exit; a second signal skips shutdown_drain_delay.
.SH "EXIT STATUS"
.TP
.B 0
Success; for check \-\-connect every upstream matched; for fingerprint \-\-expect the
server presented the expected certificate.
.TP
.B 1
An error (bad configuration, a port in use, an unreachable admin endpoint), a check that
did not pass, or for fingerprint \-\-expect a MISMATCH.
.TP
.B 2
fingerprint \-\-expect: nothing could be compared (the server or the command failed).
.SH EXAMPLES
.nf
pinproxy demo
pinproxy fingerprint mgmt.example.com \-\-expect\-from 'ssh admin@mgmt.example.com api fingerprint'
pinproxy check \-\-config /etc/pinproxy/proxy.toml \-\-connect
pinproxy pins add gaia 'SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D'
pinproxy run \-\-listen 127.0.0.1:8443 \-\-upstream mgmt.example.com:443 \-\-fingerprint 'SHA1: ...'
curl \-s \-X POST \-H 'Content\-Type: application/json' \-d '{}' http://127.0.0.1:8443/web_api/show\-hosts
.fi
.SH "SEE ALSO"
pinproxy.toml(5), pinproxy\-run(1), pinproxy\-check(1), pinproxy\-fingerprint(1),
pinproxy\-pins(1), pinproxy\-health(1), pinproxy\-demo(1)
"#;

/// Text as roff that prints it verbatim: backslashes escaped, and no line
/// starting with a control character.
fn verbatim(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.replace('\\', "\\e");
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn config_page() -> String {
    format!(
        r#".TH PINPROXY.TOML 5 "" "pinproxy {}" "File Formats"
.SH NAME
pinproxy.toml \- configuration of pinproxy, the fingerprint-pinning HTTPS proxy
.SH SYNOPSIS
.I /etc/pinproxy/proxy.toml
.SH DESCRIPTION
A TOML file: top-level settings, an optional [admin], [proxy] and [limits] table, and
one [[upstream]] table per pinned server with its listener. Unknown keys are errors, and
every mistake is reported with file:line:column and the fix
(pinproxy check \-\-config FILE). SIGHUP (systemctl reload pinproxy) applies a changed
file without a restart. Durations are written like "500ms", "5s", "2m", "1h".
.PP
The annotated example below is the reference: every key, its default and what it does.
The Debian package installs it as /etc/pinproxy/proxy.toml and
/usr/share/doc/pinproxy/examples/proxy.toml.
.SH "EXAMPLE WITH EVERY KEY"
.nf
{}.fi
.SH "SEE ALSO"
pinproxy(1), pinproxy\-check(1), pinproxy\-pins(1)
"#,
        env!("CARGO_PKG_VERSION"),
        verbatim(EXAMPLE)
    )
}
