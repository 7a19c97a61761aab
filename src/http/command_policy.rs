//! The command policy of a listener (`allowed_requests`, `[[upstream.policy]]`):
//! whether this client may send this request, decided on the path the server
//! will see. The path is normalised first (unreserved characters decoded, `//`
//! collapsed, the query set aside) and the normalised path is what is
//! forwarded, so the rule and the server judge the same text. What servers
//! decode differently than we would (dot segments, an encoded `/`, `\`, `.`
//! or `;`, path parameters) is refused outright.
//!
//! Matching is case-sensitive: a rule allows only the spelling it names.
//! Against a server that ignores case this refuses `SHOW-hosts` that the
//! server would run as `show-hosts`, which fails closed: an allow list can
//! only be made narrower by it, never wider.

use http::uri::PathAndQuery;
use http::{Method, Uri};

use crate::config::{RequestPolicy, RequestRule, RuleSet, Segment};

/// Why a request was not forwarded.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; the request's new target (normalised path, same query).
    Allow(Uri),
    /// No rule of `rules` allows it (403 `request-not-allowed`).
    NotAllowed {
        /// The rule set that decided, by where it is written.
        rules: String,
        /// Its rules, as written.
        allowed: Vec<String>,
        /// The request as matched: `METHOD /normalised/path`.
        request: String,
    },
    /// The path is one servers may read differently (400 `ambiguous-path`).
    Ambiguous(String),
}

/// Judges `method` and `uri` from a client with `uid` (and, on a TLS
/// listener, the names of its certificate) under `policy`.
pub fn judge(
    policy: &RequestPolicy,
    method: &Method,
    uri: &Uri,
    uid: Option<u32>,
    identity: Option<&[String]>,
) -> Verdict {
    let path = match normalise(uri.path()) {
        Ok(path) => path,
        Err(why) => return Verdict::Ambiguous(why),
    };
    let names = identity.unwrap_or_default();
    let set: Option<&RuleSet> = policy
        .per_user
        .iter()
        .find(|t| {
            uid.is_some_and(|u| t.users.contains(&u)) || names.iter().any(|n| t.clients.contains(n))
        })
        .map(|t| &t.rules)
        .or(policy.default.as_ref());
    let request = format!("{method} {path}");
    let segments: Vec<&str> = path[1..].split('/').collect();
    match set {
        Some(set) if set.rules.iter().any(|r| allows(r, method, &segments)) => {
            let target = match uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            match target.parse::<PathAndQuery>() {
                Ok(pq) => Verdict::Allow(Uri::from(pq)),
                Err(_) => Verdict::Ambiguous("the path cannot be written back".into()),
            }
        }
        Some(set) => Verdict::NotAllowed {
            rules: set.name.clone(),
            allowed: set.rules.iter().map(|r| r.text.clone()).collect(),
            request,
        },
        None => Verdict::NotAllowed {
            rules:
                "[[upstream.policy]] (no table names this user, and there is no allowed_requests)"
                    .into(),
            allowed: Vec::new(),
            request,
        },
    }
}

fn allows(rule: &RequestRule, method: &Method, segments: &[&str]) -> bool {
    rule.method.as_deref().is_none_or(|m| m == method.as_str()) && matches(&rule.segments, segments)
}

/// Whether the path `segments` match the glob `pattern`.
fn matches(pattern: &[Segment], segments: &[&str]) -> bool {
    match (pattern.first(), segments.first()) {
        (None, None) => true,
        (Some(Segment::Any), _) => {
            (0..=segments.len()).any(|skip| matches(&pattern[1..], &segments[skip..]))
        }
        (Some(Segment::Glob(glob)), Some(segment)) => {
            glob_matches(glob.as_bytes(), segment.as_bytes())
                && matches(&pattern[1..], &segments[1..])
        }
        _ => false,
    }
}

/// `*` matches any run of characters (a segment holds no `/`).
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    match glob.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob_matches(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob_matches(rest, &text[1..]),
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

/// The path a rule is matched against, or why it is refused.
fn normalise(raw: &str) -> Result<String, String> {
    if raw.contains('\\') {
        return Err("a backslash in the path (some servers read it as /)".into());
    }
    if raw.contains(';') {
        return Err("a ; in the path (path parameters: some servers drop what follows)".into());
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            None => return Err("a % that does not start a %XX escape".into()),
            Some(c) if unreserved(c) => out.push(char::from(c)),
            Some(b'/' | b'\\' | b'.' | b';') => {
                return Err(format!(
                    "an encoded {:?} (%{:02X}) in the path: servers decode it differently",
                    char::from(hex.unwrap_or(0)),
                    hex.unwrap_or(0)
                ))
            }
            Some(c) => out.push_str(&format!("%{c:02X}")),
        }
        i += 3;
    }
    let trailing = out.len() > 1 && out.ends_with('/');
    let mut path = String::with_capacity(out.len());
    for segment in out.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." {
            return Err("a . or .. segment in the path".into());
        }
        path.push('/');
        path.push_str(segment);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_rule, UserRules};

    fn set(name: &str, rules: &[&str]) -> RuleSet {
        RuleSet {
            name: name.into(),
            rules: rules.iter().map(|r| parse_rule(r).unwrap()).collect(),
        }
    }

    fn monitoring() -> RequestPolicy {
        RequestPolicy {
            default: Some(set(
                "allowed_requests",
                &[
                    "POST /web_api/show-*",
                    "POST /web_api/*/show-*",
                    "POST /web_api/login",
                    "POST /web_api/logout",
                ],
            )),
            per_user: vec![UserRules {
                users: vec![1001],
                clients: vec!["automation.example".into()],
                rules: set(
                    "[[upstream.policy]] #1 (users automation)",
                    &["* /web_api/**"],
                ),
            }],
        }
    }

    fn verdict(path: &str, uid: Option<u32>) -> Verdict {
        judge(
            &monitoring(),
            &Method::POST,
            &path.parse().unwrap(),
            uid,
            None,
        )
    }

    fn allowed(path: &str) -> Option<String> {
        match verdict(path, Some(1000)) {
            Verdict::Allow(uri) => Some(uri.to_string()),
            _ => None,
        }
    }

    #[test]
    fn allowed_commands_pass_with_the_path_the_rule_saw() {
        assert_eq!(
            allowed("/web_api/show-hosts").as_deref(),
            Some("/web_api/show-hosts")
        );
        assert_eq!(
            allowed("/web_api/v1.9/show-hosts").as_deref(),
            Some("/web_api/v1.9/show-hosts")
        );
        // Collapsed, decoded, query kept.
        assert_eq!(
            allowed("//web_api//%73how-hosts?x=1").as_deref(),
            Some("/web_api/show-hosts?x=1")
        );
        assert!(matches!(
            judge(
                &monitoring(),
                &Method::GET,
                &"/web_api/show-hosts".parse().unwrap(),
                None,
                None
            ),
            Verdict::NotAllowed { .. }
        ));
    }

    #[test]
    fn encodings_dots_case_and_slashes_do_not_slip_past() {
        for path in [
            "/web_api/publish",
            "/web_api/%70ublish",
            "/web_api/show-hosts/../publish",
            "/web_api/show-hosts/%2E%2E/publish",
            "/web_api/show-hosts%2F..%2Fpublish",
            "/web_api/show-hosts%2fpublish",
            "/web_api/./publish",
            "/web_api/show-hosts\\..\\publish",
            "/web_api/show-hosts;/../publish",
            "/web_api/SHOW-hosts",
            "/web_api/show-hosts/",
            "/web_api/v1.9/x/show-hosts",
            "/WEB_API/show-hosts",
            "/web_api/show-hosts%",
        ] {
            assert_eq!(allowed(path), None, "{path} slipped past");
        }
        assert!(matches!(
            verdict("/web_api/%2E%2E/publish", Some(1000)),
            Verdict::Ambiguous(_)
        ));
        assert!(matches!(
            verdict("/web_api/a/../publish", None),
            Verdict::Ambiguous(_)
        ));
    }

    #[test]
    fn the_first_table_naming_the_user_decides_else_allowed_requests() {
        assert!(matches!(
            verdict("/web_api/publish", Some(1001)),
            Verdict::Allow(_)
        ));
        match verdict("/web_api/publish", None) {
            Verdict::NotAllowed {
                rules,
                allowed,
                request,
            } => {
                assert_eq!(rules, "allowed_requests");
                assert_eq!(allowed.len(), 4);
                assert_eq!(request, "POST /web_api/publish");
            }
            other => panic!("{other:?}"),
        }
        let only_tables = RequestPolicy {
            default: None,
            ..monitoring()
        };
        let refused = judge(
            &only_tables,
            &Method::POST,
            &"/web_api/show-hosts".parse().unwrap(),
            Some(5),
            None,
        );
        assert!(matches!(refused, Verdict::NotAllowed { .. }));
        // A client certificate a table names gets that table.
        let names = ["automation.example".to_string()];
        let cert = judge(
            &only_tables,
            &Method::POST,
            &"/web_api/publish".parse().unwrap(),
            None,
            Some(&names),
        );
        assert!(matches!(cert, Verdict::Allow(_)));
    }

    #[test]
    fn globs_match_within_and_across_segments() {
        let rule = |r: &str, p: &str| {
            let r = parse_rule(r).unwrap();
            let segments: Vec<&str> = p[1..].split('/').collect();
            allows(&r, &Method::POST, &segments)
        };
        assert!(rule("POST /a/**", "/a/b/c"));
        assert!(rule("POST /a/**", "/a"));
        assert!(rule("POST /a/**/z", "/a/b/c/z"));
        assert!(!rule("POST /a/*", "/a/b/c"));
        assert!(rule("POST /a/*-x-*", "/a/1-x-2"));
        assert!(!rule("POST /a/show-*", "/a/shows"));
        assert!(rule("* /a", "/a"));
    }
}
