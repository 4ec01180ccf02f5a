//! The inbox of `run` without files: list the exports waiting in `[input].dir`, and move each
//! fully processed one to `[input].archive_dir`.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("cannot list the inbox {dir} ([input].dir): {source}")]
    List {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot archive {file} to {dir} ([input].archive_dir): {source}")]
    Archive {
        file: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Regular files in `dir` whose name matches `pattern`, in name order.
pub fn list(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, InboxError> {
    let err = |source| InboxError::List {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // `.part` is how uploaders (curl, rsync --partial, browsers) name a file in transit.
        let in_transit = name.ends_with(".part");
        if entry.file_type().map_err(err)?.is_file() && matches(pattern, name) && !in_transit {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// A file's size and modification time, to tell a finished export from one still being
/// written.
pub type Stamp = Option<(u64, Option<std::time::SystemTime>)>;

pub fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files.iter().map(|f| stamp(f)).collect()
}

fn stamp(file: &Path) -> Stamp {
    std::fs::metadata(file)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

/// Splits `files` into those whose stamp is the same as `before` (taken a moment earlier)
/// and those still being written: a CRM export copied in at 02:00 must not be read
/// half-way. The second list is left for the next run.
pub fn settled(files: Vec<PathBuf>, before: Vec<Stamp>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (ready, writing): (Vec<_>, Vec<_>) = files
        .into_iter()
        .zip(before)
        .partition(|(f, b)| b.is_some() && stamp(f) == *b);
    let names = |v: Vec<(PathBuf, _)>| v.into_iter().map(|(f, _)| f).collect();
    (names(ready), names(writing))
}

/// Moves `file` into `dir`, keeping its name; an existing file of that name is not
/// overwritten (a suffix is added), since an archive that loses exports is no archive.
pub fn archive(file: &Path, dir: &Path) -> Result<PathBuf, InboxError> {
    let err = |source| InboxError::Archive {
        file: file.to_path_buf(),
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let name = file
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut target = dir.join(&name);
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = dir.join(format!("{name}.{n}"));
    }
    if std::fs::rename(file, &target).is_err() {
        // Another file system: copy, then remove.
        std::fs::copy(file, &target).map_err(err)?;
        std::fs::remove_file(file).map_err(err)?;
    }
    Ok(target)
}

/// Shell-style wildcard match: `*` any run of characters, `?` one character.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        for (p, n, m) in [
            ("*.csv", "crm-2026-12-03.csv", true),
            ("*.csv", "crm.csv.part", false),
            ("crm-*.csv", "crm-1.csv", true),
            ("crm-*.csv", "other-1.csv", false),
            ("?.csv", "a.csv", true),
            ("?.csv", "ab.csv", false),
            ("*", "", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ] {
            assert_eq!(matches(p, n), m, "{p} vs {n}");
        }
    }

    #[test]
    fn lists_in_name_order_and_archives_without_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.csv", "a.csv", "c.txt"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        std::fs::create_dir(dir.path().join("d.csv")).unwrap();
        let files = list(dir.path(), "*.csv").unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a.csv", "b.csv"]);

        let archive_dir = dir.path().join("archive");
        std::fs::create_dir(&archive_dir).unwrap();
        std::fs::write(archive_dir.join("a.csv"), "older").unwrap();
        let moved = archive(&files[0], &archive_dir).unwrap();
        assert_eq!(moved, archive_dir.join("a.csv.2"));
        assert!(!files[0].exists());
        assert_eq!(
            std::fs::read_to_string(archive_dir.join("a.csv")).unwrap(),
            "older"
        );
    }

    #[test]
    fn files_in_transit_or_still_growing_are_left_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.csv", "b.csv", "c.csv.part"] {
            std::fs::write(dir.path().join(name), "ref\n").unwrap();
        }
        let files = list(dir.path(), "*").unwrap();
        assert_eq!(files.len(), 2, "a .part file is never listed: {files:?}");
        let before = stamps(&files);
        std::fs::write(dir.path().join("b.csv"), "ref\nB-1\n").unwrap();
        let (ready, writing) = settled(files, before);
        assert_eq!(ready, [dir.path().join("a.csv")]);
        assert_eq!(writing, [dir.path().join("b.csv")]);
    }
}
