//! The two text formats `/metrics` serves: OpenMetrics, and the classic
//! Prometheus 0.0.4 format rewritten from it.

/// The content type of [`Metrics::encode`].
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`Metrics::encode_classic`].
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text as Prometheus' 0.0.4 text format. They differ
/// where a counter is named: OpenMetrics describes the family (`# TYPE
/// x counter`) of the `x_total` series, the classic format describes the
/// series itself (`# TYPE x_total counter`), and a classic parser sees
/// `x_total` without HELP or TYPE otherwise. `# UNIT` and `# EOF` exist only
/// in OpenMetrics.
pub(super) fn openmetrics_to_classic(text: &str) -> String {
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_series() {
        let open = "# HELP x Things.\n# TYPE x counter\nx_total{a=\"b\"} 1\n# HELP g A gauge.\n# TYPE g gauge\n# UNIT g seconds\ng 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_classic(open),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"b\"} 1\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n"
        );
    }
}
