//! The status page's HTML: the data of `/status` as one page, no script, no
//! external asset, readable on a phone. Everything that comes from the config
//! or from a server is escaped here.

use std::fmt::Write as _;

use super::{CheckStatus, Status, UpstreamStatus};

impl Status {
    /// `/`: the same data as a page. Everything that comes from the config or
    /// from a server (error texts quote what servers and proxies said) is escaped.
    pub(crate) fn html(&self) -> String {
        let mut page = String::with_capacity(8 * 1024);
        let _ = self.write_html(&mut page);
        page
    }

    fn write_html(&self, out: &mut String) -> std::fmt::Result {
        write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>pinproxy status</title><style>{STYLE}</style></head><body>\n\
             <header><h1>pinproxy status</h1><p>version {} · <span class=\"{}\">{}</span> · {}</p></header>\n",
            esc(self.version),
            if self.readiness == "ready" { "ok" } else { "bad" },
            esc(self.readiness),
            esc(&self.generated_at.utc),
        )?;

        let c = &self.config;
        out.push_str("<section><h2>Config</h2><dl>");
        item(
            out,
            "File",
            &esc(c.file.as_deref().unwrap_or("none (command-line flags)")),
        )?;
        item(out, "Loaded", &esc(&c.loaded_at.utc))?;
        let reload = match &c.last_reload {
            None => "none since start".to_string(),
            Some(r) => match &r.error {
                None => format!("<span class=\"ok\">ok</span>, {}", esc(&r.at.utc)),
                Some(e) => format!(
                    "<span class=\"bad\">failed; still serving the config loaded above</span>, {}: {}",
                    esc(&r.at.utc),
                    esc(e)
                ),
            },
        };
        item(out, "Last reload", &reload)?;
        out.push_str("</dl></section>\n<section><h2>Listeners</h2><ul>");
        for l in &self.listeners {
            write!(
                out,
                "<li><b>{}</b> <code>{}</code>: {}",
                esc(&l.name),
                esc(&l.listen),
                esc(&l.serves)
            )?;
            if let Some(n) = l.open_connections {
                write!(out, " · {n} open")?;
            }
            out.push_str("</li>");
        }
        out.push_str("</ul></section>\n");

        for up in &self.upstreams {
            up.write_html(out)?;
        }
        out.push_str("<footer>Same data as JSON: <a href=\"status\">/status</a> · metrics: <a href=\"metrics\">/metrics</a></footer>\n</body></html>\n");
        Ok(())
    }
}

impl CheckStatus {
    fn write_html(&self, out: &mut String) -> std::fmt::Result {
        let fp = |label: &str, v: &Option<String>| {
            v.as_ref()
                .map(|v| format!("<br>{label} <code class=\"fp\">{}</code>", esc(v)))
                .unwrap_or_default()
        };
        match self.result {
            "matches" => write!(
                out,
                "<br>presented now: <span class=\"ok\">matches pin {}</span> <code class=\"fp\">{}</code>",
                self.pin.unwrap_or(0),
                esc(self.pin_text.as_deref().unwrap_or(""))
            )?,
            "changed" => write!(
                out,
                "<br><span class=\"bad\">changed at {}: matches no pin</span>{}{}",
                esc(&self.since.as_ref().map(|t| t.utc.clone()).unwrap_or_default()),
                fp("SHA1", &self.sha1),
                fp("SHA-256", &self.sha256)
            )?,
            _ => write!(
                out,
                "<br><span class=\"bad\">check failed</span>: {}",
                esc(self.error.as_deref().unwrap_or(""))
            )?,
        }
        write!(out, "<br><small>last check {}</small>", esc(&self.at.utc))
    }
}

impl UpstreamStatus {
    fn write_html(&self, out: &mut String) -> std::fmt::Result {
        let refused_certificate = self.certificate.as_ref().is_some_and(|c| !c.matched_pin);
        let (class, verdict) = match &self.last_handshake {
            Some(h) if h.ok => ("ok", "handshake ok"),
            Some(_) if refused_certificate => ("bad", "fingerprint mismatch"),
            Some(_) => ("bad", "handshake failed"),
            None => ("idle", "no handshake yet"),
        };
        write!(
            out,
            "<section class=\"upstream\" id=\"upstream-{}\"><h2>{} <span class=\"badge {class}\">{verdict}</span></h2><dl>",
            esc(&self.name),
            esc(&self.name)
        )?;
        item(
            out,
            "Listener",
            &format!("<code>{}</code>", esc(&self.listen)),
        )?;
        let mut addresses = String::from("<ol>");
        for t in &self.targets {
            write!(addresses, "<li><code>{}</code>", esc(&t.address))?;
            if t.active {
                addresses.push_str(" <b>in use</b>");
            }
            if let Some(p) = &t.egress_proxy {
                write!(addresses, " via proxy <code>{}</code>", esc(p))?;
            }
            if t.client_certificate {
                addresses.push_str(" · client certificate");
            }
            addresses.push_str("<br>pins:");
            if t.pins.is_empty() {
                addresses.push_str(" none learned yet (trust on first use)");
            }
            // One pin per line, never broken inside; the one presented now marked.
            for (n, pin) in t.pins.iter().enumerate() {
                let mark = if t.matched_pin == Some(n + 1) {
                    " <span class=\"ok\">&#8592; presented now</span>"
                } else {
                    ""
                };
                write!(
                    addresses,
                    "<span class=\"pin\">{}. <code class=\"fp\">{}</code>{mark}</span>",
                    n + 1,
                    esc(pin)
                )?;
            }
            if let Some(c) = &t.check {
                c.write_html(&mut addresses)?;
            }
            addresses.push_str("</li>");
        }
        addresses.push_str("</ol>");
        item(out, "Addresses", &addresses)?;
        if self.trust == "trust_on_first_use" {
            item(out, "Trust", "on first use (known_pins)")?;
        }
        match &self.certificate {
            Some(c) => {
                let matched = match (c.matched_pin, c.pin) {
                    (true, Some(n)) => format!("<span class=\"ok\">matches pin {n}</span>"),
                    (true, None) => "<span class=\"ok\">matches a pin</span>".to_string(),
                    (false, _) => "<span class=\"bad\">matches no pin: refused</span>".to_string(),
                };
                item(
                    out,
                    "Certificate SHA-1",
                    &format!("<code class=\"fp sha1\">{}</code> {matched}", esc(&c.sha1)),
                )?;
                if let (Some(at), Some(left)) = (&c.not_after, c.expires_in_seconds) {
                    // Only a pinned certificate's date means anything.
                    let class = match (c.matched_pin, left < 30 * 86_400) {
                        (false, _) => "idle",
                        (true, true) => "bad",
                        (true, false) => "ok",
                    };
                    item(
                        out,
                        "Not after",
                        &format!(
                            "{} (<span class=\"{class}\">{}</span>)",
                            esc(&at.utc),
                            until(left)
                        ),
                    )?;
                }
            }
            None => item(out, "Certificate", "none presented yet")?,
        }
        match &self.last_handshake {
            Some(h) => {
                let result = match &h.error {
                    None => "<span class=\"ok\">ok</span>".to_string(),
                    Some(e) => format!("<span class=\"bad\">failed</span>: {}", esc(e)),
                };
                item(
                    out,
                    "Last handshake",
                    &format!(
                        "{result}<br><small>{} with <code>{}</code></small>",
                        esc(&h.at.utc),
                        esc(&h.address)
                    ),
                )?;
            }
            None => item(out, "Last handshake", "none yet")?,
        }
        let requests: Vec<String> = self
            .requests
            .iter()
            .map(|(class, n)| format!("{class} {n}"))
            .collect();
        item(out, "Requests", &requests.join(" · "))?;
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(reason, n)| format!("{} {n}", esc(reason)))
            .collect();
        item(
            out,
            "pinproxy errors",
            &if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(" · ")
            },
        )?;
        let h = &self.handshakes;
        item(
            out,
            "Handshakes",
            &format!(
                "ok {} · fingerprint mismatch {} · error {} · connect failures {}",
                h.ok, h.fingerprint_mismatch, h.error, self.connect_failures
            ),
        )?;
        item(
            out,
            "Open connections",
            &format!(
                "clients {} · upstream {}",
                self.open_connections.client, self.open_connections.upstream
            ),
        )?;
        for session in &self.sessions {
            let state = match (&session.held, &session.since) {
                (true, Some(since)) => format!(
                    "<span class=\"ok\">held</span> since {} <small>(session {})</small>",
                    esc(&since.utc),
                    esc(session.session.as_deref().unwrap_or(""))
                ),
                _ => "none held".to_string(),
            };
            let error = session
                .last_login_error
                .as_ref()
                .map(|e| {
                    format!(
                        "<br><span class=\"bad\">last login failed</span>: {}",
                        esc(e)
                    )
                })
                .unwrap_or_default();
            item(
                out,
                &format!("Session ({})", esc(&session.user)),
                &format!("{state}{error}"),
            )?;
        }
        out.push_str("</dl></section>\n");
        Ok(())
    }
}

/// One row of a definition list; `html` is already escaped.
fn item(out: &mut String, name: &str, html: &str) -> std::fmt::Result {
    write!(out, "<dt>{name}</dt><dd>{html}</dd>")
}

/// "in 364 days", "expired 2 hours ago".
fn until(seconds: i64) -> String {
    let span = |s: u64| {
        let (n, unit) = match s {
            0..=5_399 => (s / 60, "minute"),
            5_400..=172_799 => (s / 3600, "hour"),
            _ => (s / 86_400, "day"),
        };
        format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
    };
    if seconds >= 0 {
        format!("in {}", span(seconds.unsigned_abs()))
    } else {
        format!("expired {} ago", span(seconds.unsigned_abs()))
    }
}

/// Escapes text for HTML element content and double-quoted attributes.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One small stylesheet, inline (the page's CSP allows nothing external).
/// A two-column definition list that becomes one column on a phone.
const STYLE: &str = "\
body{font:16px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:64rem;padding:.75rem;color:#1b1b1b;background:#fafafa}\
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.15rem;margin:0 0 .5rem}\
header p{margin:.2rem 0 1rem;color:#555}\
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.75rem 1rem;margin:0 0 1rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem;margin:0}\
dt{font-weight:600;color:#444}dd{margin:0;min-width:0;overflow-wrap:anywhere}\
ol,ul{margin:0;padding-left:1.2rem}li{margin:.2rem 0;overflow-wrap:anywhere}\
code{font:.9em ui-monospace,Menlo,Consolas,monospace}\
.pin{display:block;white-space:nowrap;overflow-x:auto}.fp{white-space:nowrap}\
.ok{color:#0a6b2b}.bad{color:#b00020;font-weight:600}.idle{color:#666}\
.badge{font-size:.8rem;font-weight:600;border:1px solid currentColor;border-radius:1rem;padding:0 .5rem;vertical-align:middle}\
footer{color:#555;font-size:.9rem}\
@media (max-width:40rem){dl{grid-template-columns:1fr;gap:0}dt{margin-top:.5rem}body{padding:.5rem}}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_servers_and_config_say_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }

    #[test]
    fn expiry_reads_as_a_person_would_say_it() {
        assert_eq!(until(364 * 86_400 + 5), "in 364 days");
        assert_eq!(until(3 * 3600), "in 3 hours");
        assert_eq!(until(-86_400 * 2), "expired 2 days ago");
        assert_eq!(until(60), "in 1 minute");
    }
}
