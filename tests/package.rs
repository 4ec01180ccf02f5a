//! The Debian package: `[package.metadata.deb]` in Cargo.toml lists the files cargo-deb
//! copies, and `systemd/deb/build` generates some of them first. cargo-deb fails on a listed
//! file that is missing only when someone builds the package; these tests fail first.

mod util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use util::{PRODUCT, repo_file};

/// Where the build script puts what it generates, as Cargo.toml's assets name it.
const GENERATED: &str = "target/deb-extra/";

/// Every asset's source path, as listed in Cargo.toml.
fn asset_sources() -> Vec<String> {
    let text = std::fs::read_to_string(repo_file("Cargo.toml")).unwrap();
    let cargo: toml::Table = text.parse().unwrap();
    cargo["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("assets is a list")
        .iter()
        .map(|a| a[0].as_str().expect("an asset's source").to_owned())
        .collect()
}

#[test]
fn the_build_script_generates_exactly_the_generated_assets() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("sh")
        .arg(repo_file("systemd/deb/build"))
        .arg("--extras")
        .arg(PRODUCT)
        .arg(out.path())
        .status()
        .expect("run systemd/deb/build --extras");
    assert!(status.success(), "systemd/deb/build --extras: {status}");
    let mut produced = BTreeSet::new();
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(entry.metadata().unwrap().len() > 0, "{name} is empty");
        produced.insert(name);
    }
    let listed: BTreeSet<String> = asset_sources()
        .iter()
        .filter_map(|s| s.strip_prefix(GENERATED).map(str::to_owned))
        .collect();
    let unbuilt: Vec<_> = listed.difference(&produced).collect();
    assert!(
        unbuilt.is_empty(),
        "Cargo.toml lists assets the build script does not generate: {unbuilt:?}"
    );
    let unlisted: Vec<_> = produced.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "the build script generates files Cargo.toml does not package: {unlisted:?}"
    );
}

/// Every subcommand an operator can type has its man page in the package, and every asset
/// outside `target/` is a file of the repository.
#[test]
fn every_operator_subcommand_has_a_packaged_man_page() {
    // `man` names the pages it can render when asked for one it cannot.
    let out = Command::new(PRODUCT)
        .args(["man", "no-such-page"])
        .output()
        .expect("run accountsync man");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pages = stderr
        .split_once("pages: ")
        .map(|(_, list)| list.trim())
        .unwrap_or_else(|| panic!("no page list in: {stderr}"));
    let subcommands: Vec<&str> = pages.split(", ").collect();
    for sub in [
        "run",
        "daemon",
        "baseline",
        "check-config",
        "cache",
        "completions",
    ] {
        assert!(subcommands.contains(&sub), "{sub} missing from {pages}");
    }
    let sources = asset_sources();
    let mut wanted = vec!["accountsync.1.gz".to_owned()];
    wanted.extend(subcommands.iter().map(|s| format!("accountsync-{s}.1.gz")));
    for page in wanted {
        let source = format!("{GENERATED}{page}");
        assert!(
            sources.contains(&source),
            "Cargo.toml does not package {page}"
        );
    }
    for source in sources.iter().filter(|s| !s.starts_with("target/")) {
        assert!(
            Path::new(&repo_file(source)).is_file(),
            "asset {source} is not a file of the repository"
        );
    }
}
