//! Reports a killed run left without `summary.json`. Its `errors.csv` and `changes.csv` hold
//! every row of the exports it archived (they are synced before an export leaves the inbox,
//! and an archived export is never read again), so the data team must be pointed at them:
//! the next run marks each such folder with an `INCOMPLETE` file and logs it.
//!
//! A run holds an exclusive lock on its folder's `.lock` while it writes: a folder without
//! `summary.json` whose lock can be taken belongs to a run that is over (a dry run may be
//! going on beside a real run, and its folder must not be marked).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub(super) const LOCK: &str = ".lock";
const MARKER: &str = "INCOMPLETE";

/// Creates and locks `dir/.lock`; held until the report is finished (or the process ends).
pub(super) fn hold(dir: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(LOCK))?;
    file.try_lock().map_err(std::io::Error::other)?;
    Ok(file)
}

/// Marks the folders under `root` (but `own`) left incomplete by an earlier run. Returns
/// them. Problems here only cost the marker, never the run.
pub(super) fn mark(root: &Path, own: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut marked = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if dir == own
            || !dir.is_dir()
            || dir.join("summary.json").exists()
            || dir.join(MARKER).exists()
            || !dir.join("errors.csv").exists()
            || still_running(&dir)
        {
            continue;
        }
        if write_marker(&dir).is_ok() {
            tracing::warn!(
                report = %dir.display(),
                "An earlier run was cut short before its report was complete: its errors.csv and changes.csv hold what it recorded, including every row of the exports it archived."
            );
            marked.push(dir);
        }
    }
    marked.sort();
    marked
}

fn still_running(dir: &Path) -> bool {
    match File::open(dir.join(LOCK)) {
        Ok(f) => f.try_lock().is_err(),
        // A folder from before the lock existed, or killed before it was taken: over.
        Err(_) => false,
    }
}

fn write_marker(dir: &Path) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(MARKER))?;
    f.write_all(
        b"This run was cut short (killed, or the machine stopped) before its report was complete:\n\
          there is no summary.json. errors.csv and changes.csv hold what it recorded, including\n\
          every row of the exports it archived, which no later run reads again.\n",
    )
}
