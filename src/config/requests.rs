//! `allowed_requests` and `[[upstream.policy]]`: which requests a listener
//! forwards, as `"METHOD /path-glob"` rules, for every client or per local
//! user. Parsed and checked here; matched on the request path by
//! `http::command_policy`.

use toml::Spanned;

use super::errors::Located;
use super::listener::user_id;
use super::raw::{RawPolicy, RawUpstream};

/// Which requests may reach the upstream. A listener without one forwards
/// every request its access rules let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPolicy {
    /// `allowed_requests`: for every client no `[[upstream.policy]]` names;
    /// `None`: such clients may send nothing.
    pub default: Option<RuleSet>,
    /// `[[upstream.policy]]` tables in file order; the first naming the
    /// client's user decides.
    pub per_user: Vec<UserRules>,
}

/// The rules of one `[[upstream.policy]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRules {
    /// The uids it applies to.
    pub users: Vec<u32>,
    /// The client-certificate names (CN or SAN) it applies to.
    pub clients: Vec<String>,
    /// What they may send.
    pub rules: RuleSet,
}

/// A list of rules and where it is written (for the refusal's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// `allowed_requests`, or `[[upstream.policy]] #2 (users alice, 1001)`.
    pub name: String,
    /// Any one matching rule allows the request.
    pub rules: Vec<RequestRule>,
}

/// One `"METHOD /path-glob"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRule {
    /// `None` for `*` (any method).
    pub method: Option<String>,
    /// The path's segments: literal text with `*` (within the segment), or `**`.
    pub segments: Vec<Segment>,
    /// As written.
    pub text: String,
}

/// One segment of a path glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `**`: any number of segments, none included.
    Any,
    /// Text in which `*` stands for any characters but `/`.
    Glob(String),
}

/// Parses one rule; the error says what is wrong and how to write it.
pub fn parse_rule(text: &str) -> Result<RequestRule, String> {
    let example = "write \"METHOD /path\", for example \"POST /web_api/show-*\" (* within one path segment, ** across segments)";
    let Some((method, path)) = text.trim().split_once(' ') else {
        return Err(format!("request rule {text:?} has no method: {example}"));
    };
    let method = match method {
        "*" => None,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Some(m.to_string()),
        m => {
            return Err(format!(
                "request rule {text:?}: {m:?} is not a method (upper case, such as POST or GET, or * for any): {example}"
            ))
        }
    };
    let path = path.trim();
    if !path.starts_with('/') {
        return Err(format!(
            "request rule {text:?}: the path must start with '/': {example}"
        ));
    }
    if path.contains(['?', '#', '%', '\\', ';', ' ']) {
        return Err(format!(
            "request rule {text:?}: a path glob is plain path text, without ?, #, %-escapes, \\, ; or spaces \
             (requests are matched after decoding, the query ignored): {example}"
        ));
    }
    let mut segments = Vec::new();
    for segment in path[1..].split('/') {
        match segment {
            "**" => segments.push(Segment::Any),
            "." | ".." => {
                return Err(format!(
                    "request rule {text:?}: no . or .. segments (requests with them are refused anyway)"
                ))
            }
            s if s.contains("**") => {
                return Err(format!(
                    "request rule {text:?}: ** stands alone as a whole segment (\"/web_api/**\"); within a segment \
                     write * (\"show-*\")"
                ))
            }
            s => segments.push(Segment::Glob(s.to_string())),
        }
    }
    Ok(RequestRule {
        method,
        segments,
        text: text.trim().to_string(),
    })
}

fn rule_list(name: String, list: &Spanned<Vec<Spanned<String>>>) -> Located<RuleSet> {
    let mut rules = Vec::new();
    for rule in list.get_ref() {
        rules.push(parse_rule(rule.get_ref()).map_err(|m| (rule.span(), m))?);
    }
    Ok(RuleSet { name, rules })
}

/// The policy of `u`, if it has one, and whether it tells users apart (then
/// the listener must learn each client's uid).
pub(super) fn parse_policy(u: &RawUpstream) -> Located<Option<RequestPolicy>> {
    if u.allowed_requests.is_none() && u.policy.is_empty() {
        return Ok(None);
    }
    let default = match &u.allowed_requests {
        Some(list) => Some(rule_list("allowed_requests".into(), list)?),
        None => None,
    };
    let mut per_user = Vec::new();
    for (i, table) in u.policy.iter().enumerate() {
        per_user.push(parse_table(i + 1, table)?);
    }
    Ok(Some(RequestPolicy { default, per_user }))
}

fn parse_table(number: usize, table: &RawPolicy) -> Located<UserRules> {
    if table.users.is_empty() && table.clients.is_empty() {
        return Err((
            table.allow.span(),
            "this [[upstream.policy]] table names no one: add users = [\"NAME\"] (local users) or clients = \
             [\"CN\"] (client-certificate names)"
                .into(),
        ));
    }
    let mut users = Vec::new();
    let mut names = Vec::new();
    for u in &table.users {
        users.push(user_id(u.get_ref()).map_err(|m| {
            (
                u.span(),
                m.replace("allowed_users entr", "policy users entr"),
            )
        })?);
        names.push(match u.get_ref() {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    let clients: Vec<String> = table.clients.iter().map(|c| c.get_ref().clone()).collect();
    names.extend(clients.iter().map(|c| format!("client {c}")));
    let rules = rule_list(
        format!("[[upstream.policy]] #{number} ({})", names.join(", ")),
        &table.allow,
    )?;
    Ok(UserRules {
        users,
        clients,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_read_and_mistakes_explained() {
        let r = parse_rule("POST /web_api/*/show-*").unwrap();
        assert_eq!(r.method.as_deref(), Some("POST"));
        assert_eq!(
            r.segments,
            vec![
                Segment::Glob("web_api".into()),
                Segment::Glob("*".into()),
                Segment::Glob("show-*".into())
            ]
        );
        assert_eq!(parse_rule("* /**").unwrap().segments, vec![Segment::Any]);
        for (bad, says) in [
            ("/web_api/show-*", "has no method"),
            ("post /web_api/x", "is not a method"),
            ("POST web_api/x", "must start with '/'"),
            ("POST /web_api/%70ublish", "%-escapes"),
            ("POST /web_api/../publish", "no . or .."),
            ("POST /web_api/show**", "stands alone"),
            ("POST /web_api/x?y=1", "the query ignored"),
        ] {
            let err = parse_rule(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
