//! Puts the git commit into the binary as `ACCOUNTSYNC_COMMIT`, for `--version`: an operator
//! holding a report or a bug needs to know exactly which code ran.
//!
//! The commit is `git rev-parse --short=12 HEAD`, or `ACCOUNTSYNC_COMMIT` from the build
//! environment when set (a package built from a source tarball knows its commit, git does
//! not), else `unknown`. Git is only asked when this crate's own directory holds `.git` (a
//! folder, or a file in a worktree): a source tarball unpacked inside some other repository
//! must not report that repository's commit.
//!
//! Cargo reruns this script only when HEAD or the branch it points to moves, not on every
//! build: it watches the worktree's `HEAD`, the loose ref file and `packed-refs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ACCOUNTSYNC_COMMIT");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo"));
    let commit = match std::env::var("ACCOUNTSYNC_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => git_commit(&manifest_dir).unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env=ACCOUNTSYNC_COMMIT={commit}");
}

fn git_commit(manifest_dir: &Path) -> Option<String> {
    let dot_git = manifest_dir.join(".git");
    let git_dir = git_dir(&dot_git)?;
    watch_head(&git_dir);
    let out = Command::new("git")
        .arg("-C")
        .arg(manifest_dir)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    let hex = !commit.is_empty() && commit.bytes().all(|b| b.is_ascii_hexdigit());
    (out.status.success() && hex).then_some(commit)
}

/// The git directory behind `.git`: the folder itself, or in a worktree (and a submodule)
/// the `gitdir: PATH` a `.git` file names, relative to the file's folder.
fn git_dir(dot_git: &Path) -> Option<PathBuf> {
    if dot_git.is_dir() {
        return Some(dot_git.to_path_buf());
    }
    let text = std::fs::read_to_string(dot_git).ok()?;
    let target = text.strip_prefix("gitdir:")?.trim();
    Some(dot_git.parent()?.join(target))
}

/// Asks cargo to rerun when the commit can have changed. Only existing paths are named:
/// cargo treats a missing one as always stale, which would rerun this on every build.
fn watch_head(git_dir: &Path) {
    let head = git_dir.join("HEAD");
    watch(&head);
    // A worktree's HEAD lives in its own folder; the branches live in the common folder.
    let common = match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(rel) => git_dir.join(rel.trim()),
        Err(_) => git_dir.to_path_buf(),
    };
    let Some(branch) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|h| h.strip_prefix("ref:").map(|r| r.trim().to_owned()))
    else {
        return; // detached: HEAD holds the commit itself
    };
    let loose = common.join(&branch);
    if loose.is_file() {
        watch(&loose);
    } else if let Some(folder) = loose.parent() {
        // Packed only: the next commit writes the loose file into this folder.
        watch(folder);
    }
    watch(&common.join("packed-refs"));
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
