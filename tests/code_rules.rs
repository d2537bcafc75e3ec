//! Rules about the code itself, checked without Kafka (the test command's fast lane runs
//! them).

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every `.rs` file under the workspace's crates, test and benchmark code included.
fn rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = [
        "src",
        "replicator",
        "offset-sync",
        "verify",
        "bench",
        "tests",
    ]
    .iter()
    .map(|d| Path::new(ROOT).join(d))
    .collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The files the workspace's lint table (Cargo.toml, `[workspace.lints.rust]`) lists as
/// allowed to use `unsafe`: the indented lines of its comment that name a `.rs` file.
fn documented_unsafe_files(manifest: &str) -> Vec<String> {
    manifest
        .lines()
        .skip_while(|l| !l.starts_with("[workspace.lints.rust]"))
        .skip(1)
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| {
            let word = l.trim_start_matches('#').split_whitespace().next()?;
            word.ends_with(".rs").then(|| word.to_string())
        })
        .collect()
}

#[test]
fn every_unsafe_allowance_is_in_the_documented_list() {
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap_or_default();
    let documented = documented_unsafe_files(&manifest);
    assert!(
        !documented.is_empty(),
        "no list found in Cargo.toml's lint table"
    );
    let mut allowing: Vec<String> = rust_files()
        .into_iter()
        .filter(|path| {
            std::fs::read_to_string(path)
                .is_ok_and(|text| text.contains(&["allow(", "unsafe_code)"].concat()))
        })
        .filter_map(|path| {
            let relative = path.strip_prefix(ROOT).ok()?;
            Some(relative.to_string_lossy().replace('\\', "/"))
        })
        .filter(|path| path != "tests/code_rules.rs")
        .collect();
    allowing.sort();
    let mut listed = documented.clone();
    listed.sort();
    assert_eq!(
        allowing, listed,
        "files allowing unsafe code against Cargo.toml's documented list"
    );
}
