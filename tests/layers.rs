//! The folders of `src/` form one order, and an arrow (`crate::folder`) may
//! only point down it. A reader following a request from `main` to the TLS
//! verifier never has to climb back up; a change that adds an upward import
//! fails here with the file, the line and the two layers.

use std::fs;
use std::path::Path;

/// Top to bottom. Folders on one line are peers that must not use each other.
const LAYERS: &[&[&str]] = &[
    &["cmd"],
    &["ops"],
    &["serve"],
    &["http"],
    &["upstream"],
    &["config"],
    &["tls"],
    &["telemetry"],
    &["platform"],
];

fn rank(folder: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&folder))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src folder") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::NAME` in `text`, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push((n + 1, name));
        }
    }
    found
}

#[test]
fn every_folder_is_in_one_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                rank(&name).is_some(),
                "src/{name}/ is in no layer of tests/layers.rs"
            );
        }
    }
}

#[test]
fn no_arrow_points_up_or_sideways() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let Some(folder) = relative
            .iter()
            .next()
            .filter(|_| relative.iter().count() > 1)
        else {
            continue; // main.rs and lib.rs sit above every folder
        };
        let folder = folder.to_string_lossy();
        let from = rank(&folder).expect("checked by every_folder_is_in_one_layer");
        let text = fs::read_to_string(file).unwrap();
        for (line, to_name) in crate_paths(&text) {
            if to_name == folder {
                continue;
            }
            if let Some(to) = rank(&to_name) {
                if to <= from {
                    wrong.push(format!(
                        "src/{}:{line}: {folder} uses crate::{to_name}, which is not below it",
                        relative.display()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_an_upward_arrow() {
    let found = crate_paths("use crate::ops::service; // crate::cmd in a comment\n");
    assert_eq!(found, vec![(1, "ops".to_string())]);
}
