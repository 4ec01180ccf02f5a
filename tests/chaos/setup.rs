//! The seed, the work directory, and the sandbox and config the nights run against: the
//! inbox as the daemon takes it, with an archive and a cache backup.

use std::path::{Path, PathBuf};

use crate::util::{self, Conf, Sandbox, Workdir};

/// `CHAOS_SEED`, 1 by default.
pub(crate) fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// The work directory, left in place when the test ends (passed or failed) if asked to.
pub(crate) struct Kept(pub(crate) Option<Workdir>, pub(crate) bool);

impl std::ops::Deref for Kept {
    type Target = Workdir;
    fn deref(&self) -> &Workdir {
        self.0.as_ref().expect("work directory")
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let (Some(wd), true) = (self.0.take(), self.1) {
            eprintln!("kept {}", wd.root.display());
            std::mem::forget(wd);
        }
    }
}

/// A sandbox that injects every fault, drawn from `seed` in the order PATCHes arrive.
pub(crate) fn faulty_sandbox(wd: &Workdir, seed: u64) -> Sandbox {
    // A few percent each, but 429: it pauses every request of the run for its Retry-After
    // (1-2 s) and halves the client's rate, which creeps back by 2% of the ceiling a second
    // (CONTRACT §5, the adaptive rate). At 2% the rate would sit near a tenth of the ceiling
    // and the nights would take minutes; one PATCH in a thousand still gives several.
    let faults = [
        ("--fault-500", "0.03"),
        ("--fault-503", "0.03"),
        ("--fault-429", "0.001"),
        ("--fault-reset", "0.03"),
        ("--fault-slow", "0.01"),
        ("--fault-applied-drop", "0.03"),
    ];
    let seed_arg = seed.to_string();
    let mut args = vec!["--seed", &seed_arg, "--slow-ms", "3000", "--jitter-ms", "3"];
    for (flag, rate) in faults {
        args.extend([flag, rate]);
    }
    Sandbox::start(wd, &args)
}

const COLUMNS: &str = r#"[columns]
accountreference = "ref"
email = "email"
firstname = "first"
lastname = "last"

[columns.addresses.home]
street = "street"
towncity = "city"
postcode = "postcode"
"#;

/// The config of the nights: the inbox (`[input].dir` with `archive_dir`) and
/// `[cache].backup_file`, whose path it returns.
pub(crate) fn configure_inbox(wd: &Workdir, sb: &Sandbox) -> PathBuf {
    // The ceiling is far above what the two debug binaries reach on 2 cores (~300/s), so a
    // halving after a 429 costs little. Two attempts a record, so some records end a run
    // failed and kept, some after an attempt applied and never answered. A 1 s timeout makes
    // a slow answer cheap; the sandbox answers the rest within milliseconds.
    let backup = wd.path("backup.jsonl");
    let config = wd.configure(&Conf {
        requests_per_second: 2000.0,
        burst: 100,
        max_in_flight: 16,
        max_attempts: 2,
        timeout_secs: 1,
        input_dir: Some(wd.path("inbox")),
        pattern: "night-*.csv".into(),
        archive_dir: Some(wd.path("archive")),
        columns: COLUMNS.into(),
        ..Conf::new(sb)
    });
    set_backup_file(wd, &config, &backup);
    std::fs::create_dir_all(wd.path("inbox")).expect("inbox");
    backup
}

/// Adds `[cache].backup_file` to the config the harness wrote.
pub(crate) fn set_backup_file(wd: &Workdir, config: &Path, backup: &Path) {
    let text = std::fs::read_to_string(config).expect("config");
    let line = format!(
        "backup_file = {}\n",
        util::toml_string(&backup.display().to_string())
    );
    wd.write(
        "config.toml",
        text.replace("[cache]\n", &format!("[cache]\n{line}")),
    );
}
