//! The fault matrix: each fault alone, at a rate far above the chaos test's, against a small
//! export.

use std::time::Duration;

use crate::util::{Conf, Sandbox, Workdir, numbered_export, wait_for};

/// Runs 40 rows against a sandbox injecting only the fault `flag` (counted as `name`) at 30%
/// until a run ends with exit 0; then the API holds every row and the fault was injected.
pub(crate) fn converges_with_only(flag: &str, name: &str) {
    let wd = Workdir::new(&format!("fault-{name}"));
    let sb = Sandbox::start(&wd, &["--seed", "7", flag, "0.3", "--slow-ms", "2000"]);
    wd.configure(&Conf {
        max_attempts: 4,
        timeout_secs: 1,
        max_in_flight: 16,
        ..Conf::new(&sb)
    });
    let rows: Vec<(String, String)> = (1..=40)
        .map(|i| (format!("F{i:03}"), format!("f{i:03}@example.com")))
        .collect();
    let file = wd.write("n.csv", numbered_export("F", rows.len()));
    let path = file.display().to_string();
    let runs = wait_for(
        &format!("{name}: convergence"),
        Duration::from_secs(120),
        || {
            let run = wd.run(&[&path]);
            let done = run.code() == Some(0);
            done.then_some(run)
        },
    );
    runs.expect_code(0);
    let accounts = sb.accounts();
    for (r, e) in &rows {
        assert_eq!(
            accounts.get(r).map(|a| a["email"].clone()),
            Some(e.as_str().into()),
            "{name}: {r}"
        );
    }
    let stats = sb.stats();
    assert!(
        stats["faults"][name].as_u64().unwrap_or(0) > 0,
        "{name}: the fault was never injected: {stats}"
    );
}
