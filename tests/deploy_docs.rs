//! The deployment files and what the documentation says about them: one source
//! of truth each, checked so they cannot drift apart again (the manifests'
//! memory comments against the README's measured figures, deploy/README.md's
//! map against the files and the probes they really use).

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `N MiB` (or `N.N MiB`) figure in `text`.
fn mib_figures(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[1].trim_end_matches([',', ';', '.']) == "MiB")
        .map(|w| w[0].trim_start_matches(['(', '*']).to_string())
        .filter(|n| n.parse::<f64>().is_ok())
        .collect()
}

fn manifests() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut all: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    all.sort();
    all
}

#[test]
fn the_manifests_memory_figures_are_the_readme_s() {
    let readme = read("README.md");
    let start = readme
        .find("### Resources")
        .expect("README has a Resources section");
    let end = readme[start..]
        .find("\n## ")
        .map_or(readme.len(), |e| start + e);
    let measured = mib_figures(&readme[start..end]);
    let mut checked = 0;
    for (name, text) in manifests() {
        let comment: String = text
            .lines()
            .skip_while(|l| !l.contains("Measured (README, \"Resources\")"))
            .take_while(|l| l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join(" ");
        for figure in mib_figures(&comment) {
            assert!(
                measured.contains(&figure),
                "{name} says {figure} MiB, which the README's Resources section does not ({measured:?})"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "no figure found to check");
}

#[test]
fn deploy_readme_names_every_manifest_and_the_probes_they_use() {
    let map = read("deploy/README.md");
    for (name, text) in manifests() {
        let row = map
            .lines()
            .find(|l| l.contains(&format!("`kubernetes/{name}`")))
            .unwrap_or_else(|| panic!("deploy/README.md does not list kubernetes/{name}"));
        if text.contains("readinessProbe:") || text.contains("startupProbe:") {
            let exec = text.contains("exec:");
            let http = text.contains("httpGet:");
            if exec && !http && name == "deployment.yaml" {
                assert!(
                    row.contains("exec probes"),
                    "{name} uses exec probes; its row says: {row}"
                );
            }
            if http {
                assert!(
                    row.contains("httpGet"),
                    "{name} uses httpGet probes; its row says: {row}"
                );
            }
        }
    }
    // The ConfigMap's admin endpoint is where deploy/README.md says it is.
    let config = read("deploy/kubernetes/configmap.yaml");
    let row = map
        .lines()
        .find(|l| l.contains("`kubernetes/configmap.yaml`"))
        .unwrap();
    if config.contains("listen = \"127.0.0.1:9901\"") {
        assert!(row.contains("loopback") && !row.contains("pod IP"), "{row}");
    }
}
