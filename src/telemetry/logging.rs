//! Where log lines go and how they look: `RUST_LOG`'s filter, text or JSON,
//! stdout or a log file, and journald's priorities when stdout is the journal.
//! The binary sets it up once, before anything logs; the access log
//! ([`super::access_log`]) takes the same layout and destination.

use std::path::{Path, PathBuf};

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

use super::access_log;

/// How lines are laid out (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `tracing-subscriber`'s text line, coloured only for a person at a terminal.
    Text,
    /// One JSON object per line, fields flattened.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The log file cannot be opened for appending.
    #[error("--log-file {}: {source}", path.display())]
    LogFile {
        /// The file asked for.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Installs the global subscriber: lines in `format`, to `log_file` (appended)
/// or else stdout, at the level `RUST_LOG` gives (info without it).
pub fn init(format: Format, log_file: Option<&Path>) -> Result<(), LoggingError> {
    // The file, and a second handle of it for the access log's own writes.
    let file = match log_file {
        Some(path) => Some(open_twice(path).map_err(|source| LoggingError::LogFile {
            path: path.to_path_buf(),
            source,
        })?),
        None => None,
    };
    let rust_log = std::env::var("RUST_LOG").ok();
    let unheard = rust_log
        .as_deref()
        .filter(|v| !v.trim().is_empty() && !rust_log_reaches_pinproxy(v));
    let mut filter = match unheard {
        Some(_) => EnvFilter::new("info"),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // The h2 crate warns once per connection it closes for rapid reset: a
    // client could flood the log. pinproxy sums those up itself
    // (`http::rapid_reset`); h2's own lines only when RUST_LOG names h2.
    if !rust_log.as_deref().is_some_and(|v| v.contains("h2")) {
        if let Ok(quiet) = "h2=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    // Colours only for a person at a terminal, never into journald or a log file.
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    // Under systemd, stdout is the journal: each line starts with its
    // priority (sd-daemon's `<N>`), so `journalctl -p warning` works.
    let journal = file.is_none() && stdout_is_the_journal();
    let writer = match file {
        Some((file, copy)) => {
            access_log::set_file(copy);
            BoxMakeWriter::new(std::sync::Mutex::new(file))
        }
        None => BoxMakeWriter::new(std::io::stdout),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi && !journal)
        .with_writer(writer);
    access_log::set_format(match format {
        Format::Text => access_log::Format::Text {
            ansi: ansi && !journal,
        },
        Format::Json => access_log::Format::Json,
    });
    access_log::set_journal(journal);
    let text = tracing_subscriber::fmt::format().with_ansi(ansi && !journal);
    match format {
        Format::Text => builder.event_format(Prioritised(text, journal)).init(),
        Format::Json => builder
            .json()
            .event_format(Prioritised(text.json().flatten_event(true), journal))
            .init(),
    }
    if let Some(value) = unheard {
        tracing::warn!(
            rust_log = value,
            "RUST_LOG names no level and no pinproxy target, so it would silence every line; logging at info \
             instead. Write a level (RUST_LOG=debug) or target=level pairs (RUST_LOG=info,pinproxy::access=off)"
        );
    }
    Ok(())
}

/// `path` opened for appending, and a second handle of it.
fn open_twice(path: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let copy = file.try_clone()?;
    Ok((file, copy))
}

/// Whether `RUST_LOG` can enable any of pinproxy's lines: it names a level
/// (`debug`, `pinproxy=trace`, …), and not only other targets (`verbose`
/// parses as a target called "verbose" and silences everything).
fn rust_log_reaches_pinproxy(value: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    value.split(',').map(str::trim).any(|directive| {
        let target = directive.split(['=', '[']).next().unwrap_or("");
        LEVELS.contains(&directive.to_ascii_lowercase().as_str())
            || target.starts_with("pinproxy")
            || target.is_empty()
    })
}

/// True when systemd connected stdout to the journal: `JOURNAL_STREAM` names
/// its device and inode (a child that inherited the variable but writes
/// elsewhere must not add prefixes).
#[cfg(unix)]
fn stdout_is_the_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stdout()) else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", stat.st_dev, stat.st_ino)
}

/// No journal outside systemd.
#[cfg(not(unix))]
fn stdout_is_the_journal() -> bool {
    false
}

/// Writes sd-daemon's `<N>` priority before each line when `.1` is set.
struct Prioritised<F>(F, bool);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Prioritised<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if self.1 {
            let priority = match *event.metadata().level() {
                tracing::Level::ERROR => 3,
                tracing::Level::WARN => 4,
                tracing::Level::INFO => 6,
                _ => 7,
            };
            write!(writer, "<{priority}>")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_that_names_a_level_or_pinproxy_is_obeyed() {
        for value in [
            "debug",
            "WARN",
            "info,pinproxy::access=off",
            "pinproxy=trace",
            "=debug",
            "hyper=debug, info",
            "pinproxy[upstream]=debug",
        ] {
            assert!(rust_log_reaches_pinproxy(value), "{value}");
        }
    }

    #[test]
    fn rust_log_that_would_silence_every_line_is_not() {
        for value in ["verbose", "hyper=debug", "h2=trace,tokio=debug", "loud"] {
            assert!(!rust_log_reaches_pinproxy(value), "{value}");
        }
    }
}
