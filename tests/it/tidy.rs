//! The house rules, checked on the tree itself: layers depend only
//! downwards (from `cargo metadata`), `anyhow` is for programs and tests,
//! only the storage layer renames files, and nothing points outside the
//! repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// Each workspace member and the members it depends on (`kinds`: normal
/// and build dependencies, or dev dependencies too).
fn member_deps(with_dev: bool) -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let packages = meta["packages"].as_array().expect("packages");
    let members: Vec<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| with_dev || d["kind"].as_str() != Some("dev"))
                .filter_map(|d| d["name"].as_str())
                .filter(|n| members.iter().any(|m| m == n))
                .map(str::to_string)
                .collect();
            (p["name"].as_str().unwrap_or("").to_string(), deps)
        })
        .collect()
}

#[test]
fn layers_depend_only_downwards() {
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("sync-state", &[][..]),
        ("statbank-client", &["sync-state"][..]),
        ("partition-store", &["sync-state"][..]),
        ("fact-apply", &["sync-state", "partition-store"][..]),
        (
            "bins",
            &[
                "sync-state",
                "statbank-client",
                "partition-store",
                "fact-apply",
            ][..],
        ),
    ]);
    let deps = member_deps(false);
    for (member, on) in &deps {
        match allowed.get(member.as_str()) {
            Some(ok) => {
                for d in on {
                    assert!(ok.contains(&d.as_str()), "{member} may not depend on {d}");
                }
            }
            // The example and test crates sit above every layer.
            None => assert!(["examples", "tests"].contains(&member.as_str()), "{member}"),
        }
    }
    for (member, on) in member_deps(true) {
        if member != "examples" && member != "tests" {
            assert!(!on.iter().any(|d| d == "bins"), "{member} depends on bins");
        }
    }
    assert_eq!(
        deps.len(),
        7,
        "a new member needs a place in the layers: {deps:?}"
    );
}

/// Every `.rs` file under `dir`, relative to the workspace root.
fn rust_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root()).unwrap_or(&p).display().to_string();
                out.push((rel, std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    out
}

fn library_sources() -> Vec<(String, String)> {
    [
        "sync-state",
        "statbank-client",
        "partition-store",
        "fact-apply",
        "bins",
    ]
    .iter()
    .flat_map(|c| rust_files(&root().join(c).join("src")))
    .collect()
}

#[test]
fn anyhow_is_for_programs_and_tests_only() {
    // The programs: bins' own `main`s and what only they use.
    let programs = [
        "bins/src/app/",
        "bins/src/bin/",
        "bins/src/cli.rs",
        "bins/src/bench.rs",
    ];
    for (file, text) in library_sources() {
        if programs.iter().any(|p| file.starts_with(p)) {
            continue;
        }
        let uses = ["anyhow::", "anyhow!", "use anyhow"];
        assert!(
            !uses.iter().any(|u| text.contains(u)),
            "{file} uses anyhow: libraries have one thiserror enum"
        );
    }
    let bins_toml = std::fs::read_to_string(root().join("bins/Cargo.toml")).expect("toml");
    assert!(
        bins_toml.contains("anyhow = { workspace = true, optional = true }"),
        "anyhow comes with bins' cli feature only"
    );
    for lib in [
        "sync-state",
        "statbank-client",
        "partition-store",
        "fact-apply",
    ] {
        let toml = std::fs::read_to_string(root().join(lib).join("Cargo.toml")).expect("toml");
        assert!(!toml.contains("anyhow"), "{lib} depends on anyhow");
    }
}

#[test]
fn only_the_storage_layer_renames_files() {
    let storage = ["sync-state/src/storage/", "sync-state/src/fsio.rs"];
    for (file, text) in library_sources() {
        if storage.iter().any(|p| file.starts_with(p)) {
            continue;
        }
        for call in ["fs::rename(", ".persist(", "renameat", "persist_noclobber("] {
            let hits: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(call) && !l.trim_start().starts_with("//"))
                .collect();
            assert!(
                hits.is_empty(),
                "{file} renames outside the storage layer: {hits:?}"
            );
        }
    }
}

#[test]
fn nothing_points_outside_the_repository() {
    let forbidden = [
        "../shared",
        "shared/spec",
        "shared/fixtures",
        "shared/bench",
        "/work/",
    ];
    let mut stack = vec![root()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if p.is_dir() {
                if name != "target" && name != ".git" && name != "node_modules" {
                    stack.push(p);
                }
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue; // not text
            };
            for f in forbidden {
                assert!(
                    !text.contains(f) || p.ends_with("tests/it/tidy.rs"),
                    "{} points outside the repository ({f})",
                    p.display()
                );
            }
        }
    }
}
