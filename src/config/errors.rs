//! Configuration errors: where each is (file:line:column), what would fix it,
//! and every one in the file rather than only the first.
//!
//! serde stops at the first mistake, and so does each check. To find the next
//! one, the line(s) of the mistake just found are blanked (spaces, so every
//! later byte keeps its offset and its line and column) and the file is checked
//! again, until it passes or nothing more can be learnt. Blanking a line can make
//! a later check complain about what was on it ("no fingerprints" once a
//! malformed `fingerprints` line is gone): such a follow-on, in the same
//! top-level table (an `[[upstream]]` with its targets) and naming a blanked key,
//! is not reported but blanked in turn, so the table's other mistakes still
//! show; only a table left without a required key is left out from then on.
//! Checks that span tables (duplicate names and listen addresses) and every
//! table's first mistake come in one check's answer (`Problem::also`). A TOML
//! syntax error is reported alone: past it the parser cannot tell what the rest
//! means.

use std::fmt;
use std::ops::Range;
use std::path::Path;

/// A mistake in the configuration, with where it is; `more` holds the others
/// found in the same file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// `file:line:column`, or the command-line flag.
    pub location: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// The file's other mistakes, each with its own location.
    pub more: Vec<ConfigError>,
}

impl ConfigError {
    /// One mistake at `location`.
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            location: location.into(),
            message: message.into(),
            more: Vec::new(),
        }
    }

    /// This mistake and the others, in file order.
    pub fn all(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(&self.more)
    }
}

/// One line per mistake.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.all().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}", e.location, e.message)?;
        }
        Ok(())
    }
}

/// A mistake found by one check of the text: where (a byte range; `None` for the
/// file as a whole) and what to say.
#[derive(Debug, Clone)]
pub(super) struct Problem {
    pub(super) span: Option<Range<usize>>,
    pub(super) message: String,
    /// Other mistakes the same check found (other tables, duplicates).
    pub(super) also: Vec<Problem>,
}

impl Problem {
    pub(super) fn at(span: Range<usize>, message: String) -> Problem {
        Problem {
            span: Some(span),
            message,
            also: Vec::new(),
        }
    }
}

/// A check's result: the value, or the span of the mistake and what to say.
pub(super) type Located<T> = Result<T, (std::ops::Range<usize>, String)>;

/// How many mistakes one file may report: each costs one more check of it.
const MAX_REPORTED: usize = 50;

/// Runs `check` on `text`; on a mistake, finds the others (see the module
/// comment) and returns them all, located in `path`.
pub(super) fn every_error<T>(
    text: &str,
    path: &Path,
    check: impl Fn(&str) -> Result<T, Problem>,
) -> Result<T, ConfigError> {
    let mut first = match check(text) {
        Ok(config) => return Ok(config),
        Err(problem) => problem,
    };
    let also = std::mem::take(&mut first.also);
    // The keys whose lines are blanked, by block (`None`: the top level).
    let mut blanked: Vec<(Option<usize>, String)> = Vec::new();
    let note = |blanked: &mut Vec<(Option<usize>, String)>, problem: &Problem| {
        let Some(span) = &problem.span else { return };
        let block = block_of(text, span.start);
        blanked.push((block, key_at(text, span.start).to_string()));
        if let Some(meant) = suggested_key(&problem.message) {
            blanked.push((block, meant.to_string()));
        }
    };
    note(&mut blanked, &first);
    let mut range = first.span.as_ref().map(|s| whole_lines(text, s));
    let mut found = vec![first];
    for problem in also {
        note(&mut blanked, &problem);
        found.push(problem);
    }
    if text.parse::<toml::Table>().is_err() {
        range = None;
    }
    let mut current = text.as_bytes().to_vec();
    while let Some(lines) = range.take() {
        if found.len() >= MAX_REPORTED || current[lines.clone()].iter().all(u8::is_ascii_whitespace)
        {
            break;
        }
        for byte in &mut current[lines] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
        // Spaces replace whole lines, so the text stays UTF-8.
        let Ok(now) = std::str::from_utf8(&current) else {
            break;
        };
        if now.parse::<toml::Table>().is_err() {
            break;
        }
        let Err(mut next) = check(now) else { break };
        let Some(span) = next.span.clone() else { break };
        let block = block_of(text, span.start);
        let follow_on = blanked
            .iter()
            .any(|(b, key)| (b.is_none() || *b == block) && mentions(&next.message, key));
        range = Some(match block {
            // A table the blanked lines left without a required key means
            // nothing more: leave it out, and look on in the rest of the file.
            Some(start) if follow_on && next.message.starts_with("missing field") => {
                start..block_end(text, start)
            }
            // Another follow-on is blanked in turn, so the table's other
            // mistakes still show in this round.
            _ => whole_lines(text, &span),
        });
        for problem in std::mem::take(&mut next.also) {
            if !found.iter().any(|f| same(f, &problem)) {
                note(&mut blanked, &problem);
                found.push(problem);
            }
        }
        // A follow-on's line is blanked too, so what that brings in turn
        // (a table missing the key on it) is a follow-on as well.
        note(&mut blanked, &next);
        if !follow_on && !found.iter().any(|f| same(f, &next)) {
            found.push(next);
        }
    }
    found.sort_by_key(|p| p.span.as_ref().map_or(0, |s| s.start));
    let mut located = found.into_iter().map(|p| {
        let location = match &p.span {
            Some(span) => location(path, text, span.start),
            None => path.display().to_string(),
        };
        ConfigError::new(location, p.message)
    });
    let mut error = located
        .next()
        .unwrap_or_else(|| ConfigError::new(path.display().to_string(), "invalid"));
    error.more = located.collect();
    Err(error)
}

fn same(a: &Problem, b: &Problem) -> bool {
    a.span == b.span && a.message == b.message
}

/// The byte range of the whole lines `span` touches (without the last newline).
fn whole_lines(text: &str, span: &Range<usize>) -> Range<usize> {
    let start = span.start.min(text.len());
    let last = span.end.saturating_sub(1).max(start).min(text.len());
    let from = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let to = text[last..].find('\n').map_or(text.len(), |i| last + i);
    from..to.max(from)
}

/// The name in a `[table]` or `[[table]]` header line.
fn header(line: &str) -> Option<&str> {
    let line = line.trim();
    let inner = line.strip_prefix('[')?.split(']').next()?;
    let name = inner.trim_start_matches('[').trim();
    (!name.is_empty() && !name.starts_with('"')).then_some(name)
}

/// Where the top-level table holding byte `offset` starts (its header line; an
/// `[[upstream.target]]` belongs to the `[[upstream]]` above it); `None` for
/// the top-level keys.
fn block_of(text: &str, offset: usize) -> Option<usize> {
    let end = text[offset.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| offset + i);
    let mut start = 0;
    let mut block = None;
    for line in text[..end].split_inclusive('\n') {
        if header(line).is_some_and(|name| !name.contains('.')) {
            block = Some(start);
        }
        start += line.len();
    }
    block
}

/// Where the block starting at `start` ends: the next top-level header, or the end.
fn block_end(text: &str, start: usize) -> usize {
    let mut at = start;
    for (i, line) in text[start..].split_inclusive('\n').enumerate() {
        if i > 0 && header(line).is_some_and(|name| !name.contains('.')) {
            return at;
        }
        at += line.len();
    }
    text.len()
}

/// The key whose value holds byte `offset`: on its line, or on the nearest line
/// above it (a multi-line list); `""` on a header line.
fn key_at(text: &str, offset: usize) -> &str {
    let end = text[offset.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| offset + i);
    for line in text[..end].lines().rev() {
        if header(line).is_some() {
            return "";
        }
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_matches('"');
            if !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return key;
            }
        }
    }
    ""
}

/// The key an unknown one was probably meant to be (`did you mean `x`?`):
/// the file lacks it too, so what a check says about it missing follows.
fn suggested_key(message: &str) -> Option<&str> {
    let rest = message.split_once("did you mean `")?.1;
    Some(rest.split_once('`')?.0)
}

/// `message` names `key` as a word of its own.
fn mentions(message: &str, key: &str) -> bool {
    if key.is_empty() {
        return false;
    }
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    message.match_indices(key).any(|(i, _)| {
        !word(message[..i].chars().next_back()) && !word(message[i + key.len()..].chars().next())
    })
}

/// serde's message for a TOML mistake, with the fix for the ones people make:
/// `at` is where the parser stopped in `text`.
pub(super) fn explain_toml_error(message: &str, text: &str, at: usize) -> String {
    let message = message.trim();
    let line_start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .unwrap_or("");
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (unknown, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let closest = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|known| (edit_distance(unknown, known), known))
            .min()
            .filter(|(distance, known)| *distance <= 2.max(known.len() / 4));
        return match closest {
            Some((_, known)) => format!("unknown key `{unknown}`: did you mean `{known}`? (every key is documented in proxy.example.toml)"),
            None => format!("{message}; remove or rename it (every key is documented in proxy.example.toml)"),
        };
    }
    if message.starts_with("missing field") {
        return format!("{message}; every [[upstream]] needs name, listen, address and fingerprints, and [admin] needs listen");
    }
    if message.contains("invalid type: map, expected a sequence") && line.starts_with("[upstream") {
        return format!(
            "{line} is one table, but upstreams are a list: write [[upstream]] (two brackets) for each one; \
             [admin], [proxy] and [limits] take one"
        );
    }
    if message.contains("expected a sequence") && message.contains("invalid type: string") {
        return format!(
            "{key} is a list: put the value in brackets, {key} = [\"…\"] (several are separated by commas)"
        );
    }
    if let Some(number) = message
        .strip_prefix("invalid type: integer `")
        .and_then(|r| r.split_once('`'))
        .map(|(n, _)| n)
    {
        if message.ends_with("expected a string")
            && (key.ends_with("_timeout") || key.ends_with("_after") || key.ends_with("_delay"))
        {
            return format!(
                "{key} is a duration with its unit, in quotes: {key} = \"{number}s\" (or \"500ms\", \"2m\", \"1h\")"
            );
        }
    }
    if message.contains("expected a boolean") {
        return format!("{key} is true or false, without quotes: {key} = true");
    }
    if key == "socket_mode" {
        return "socket_mode is octal permission bits in quotes: socket_mode = \"0660\" (a TOML number cannot \
                start with 0, and 660 without quotes would be read as decimal)"
            .to_string();
    }
    // A Windows path in a "basic string": \U, \u and \p are escapes there.
    if message.contains("invalid unicode") || message.contains("invalid escape") {
        return format!(
            "{message}: in a \"…\" string a backslash starts an escape; write a Windows path in single quotes, \
             {key} = 'C:\\ProgramData\\pinproxy\\…' (a literal string), with forward slashes (C:/ProgramData/…), \
             or with each backslash doubled"
        );
    }
    let in_fingerprints = key == "fingerprints"
        || text[..at.min(text.len())]
            .rsplit_once("fingerprints")
            .is_some_and(|(_, after)| after.contains('[') && !after.contains(']'));
    if (message.contains("invalid basic string") || message.contains("invalid string"))
        && !in_fingerprints
    {
        return format!(
            "{message}: the string is not closed: end it with \" on the same line ({key} = \"…\")"
        );
    }
    if message.contains("invalid basic string") || message.contains("invalid string") {
        return format!(
            "{message}: a string in \"…\" ends on its line. To paste the several lines `api fingerprint` prints, \
             use a multi-line string: fingerprints = [\"\"\"\n<paste>\n\"\"\"] (or paste just its SHA1 line)"
        );
    }
    message.to_string()
}

/// How many single-character edits turn `a` into `b` (Levenshtein).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// `file:line:column` (both 1-based) of byte `offset` in `text`.
pub(super) fn location(path: &Path, text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{}:{line}:{column}", path.display())
}
