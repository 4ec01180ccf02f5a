//! The operator's commands, as processes: `check-config`, `baseline`, `cache ...`, the log
//! formats a journal or a shipper sees, the systemd credential, and the metrics textfile.

mod util;

use util::{Conf, Sandbox, TOKEN, Workdir, numbered_export, repo_file, small_export};

#[test]
fn check_config_explains_a_good_config_and_a_sample_with_a_missing_column() {
    let wd = Workdir::new("check-config");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf::new(&sb));
    let good = wd.write("good.csv", "ref,email,first,last,fax\nA,a@b.co,Ann,Lee,1\n");
    let run = wd.exec(wd.command(&["check-config", &good.display().to_string()]));
    run.expect_code(0);
    let out = run.stdout();
    assert!(out.contains("ok: the API token is readable"), "{run}");
    assert!(out.contains("next run"), "{run}");
    assert!(
        out.contains("ignored): \"fax\""),
        "unmapped header listed\n{run}"
    );

    let bad = wd.write("bad.csv", "ref,mail,first,last\nA,a@b.co,Ann,Lee\n");
    let run = wd.exec(wd.command(&["check-config", &bad.display().to_string()]));
    run.expect_code(2);
    assert!(
        run.stdout().contains("error: ")
            && run
                .stdout()
                .contains("\"email\" (mapped by [columns] email)"),
        "{run}"
    );
    // The headers nothing reads are listed: the misspelling is among them.
    assert!(
        run.stdout()
            .contains("columns no [columns] key reads (is a missing one spelled differently here?): \"mail\"\n"),
        "{run}"
    );

    // A shutdown deadline the units' TimeoutStopSec=30s would cut short: a warning only.
    wd.configure(&Conf {
        extra: "[shutdown]\ndeadline_secs = 29\n".into(),
        ..Conf::new(&sb)
    });
    let run = wd.exec(wd.command(&["check-config"]));
    run.expect_code(0);
    assert!(
        run.stdout()
            .contains("warning: [shutdown].deadline_secs = 29 is above 28 s"),
        "{run}"
    );

    let mut broken = Conf::new(&sb);
    broken.extra = "[schedule]\ncron = \"0 2 * * *\"\n[shutdown]\ndeadline_secs = 0\n".into();
    wd.configure(&broken);
    let run = wd.exec(wd.command(&["check-config"]));
    run.expect_code(2);
    assert!(
        run.stdout().contains("5 fields"),
        "a 5-field cron is explained\n{run}"
    );
    // One invocation lists every problem, not only the first.
    assert!(
        run.stdout()
            .contains("[shutdown.deadline_secs] must be between 1 and 3600")
            && run.stdout().contains("2 problem(s) to fix"),
        "{run}"
    );
    // `run` never fires the schedule, but a config the daemon would refuse is a bad config
    // for every command (exit 2), so a wrong cron does not wait for the first daemon start.
    let file = wd.write("one.csv", numbered_export("K", 1));
    let run = wd.run(&[&file.display().to_string()]);
    run.expect_code(2).expect_stderr("[schedule.cron]");
    assert_eq!(
        sb.request_count(),
        0,
        "nothing sent with a bad config\n{run}"
    );
}

/// A token pasted into the config, as an unknown key or where the variable's name belongs,
/// is refused without being echoed by `check-config` or `run` (both go to the journal).
#[test]
fn a_token_pasted_into_the_config_is_refused_without_being_shown() {
    const SECRET: &str = "sekret-tok-123";
    let wd = Workdir::new("pasted-token");
    let sb = Sandbox::start(&wd, &[]);
    let file = wd.write("one.csv", numbered_export("K", 1));
    let file = file.display().to_string();
    let text = std::fs::read_to_string(wd.configure(&Conf::new(&sb))).expect("config");
    let env_line = format!("token_env = \"{}\"\n", util::TOKEN_ENV);
    let stray = format!("{env_line}token = \"{SECRET}\"\n");
    wd.write("config.toml", text.replace(&env_line, &stray));
    let as_variable = Conf {
        token_env: SECRET.into(),
        ..Conf::new(&sb)
    };
    for (conf, needle) in [
        (None, "unknown field `token`"),
        (Some(as_variable), "does not look like a variable name"),
    ] {
        if let Some(conf) = &conf {
            wd.configure(conf);
        }
        for args in [vec!["check-config"], vec!["run", &file]] {
            let run = wd.exec(wd.command(&args));
            run.expect_code(2);
            let all = format!("{}{}", run.stdout(), run.stderr());
            assert!(all.contains(needle), "{needle:?} missing\n{run}");
            assert!(!all.contains(SECRET), "the token is shown\n{run}");
        }
    }
    assert_eq!(sb.request_count(), 0);
}

#[test]
fn baseline_records_without_sending_and_the_next_run_sends_only_changes() {
    let wd = Workdir::new("baseline");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf::new(&sb));
    let night1 = wd.write("n1.csv", numbered_export("B", 20));
    let mut cmd = wd.command(&["baseline", &night1.display().to_string()]);
    cmd.env_remove(util::TOKEN_ENV); // a baseline needs no token
    let base = wd.exec(cmd);
    base.expect_code(0);
    base.expect_counts(20, 0, 20, 0, 0);
    assert_eq!(base.summary()["baseline"], true);
    assert_eq!(sb.request_count(), 0, "a baseline sends nothing");

    let mut rows = numbered_export("B", 20);
    rows = rows.replace("b007@example.com", "b007-new@example.com");
    let night2 = wd.write("n2.csv", rows);
    let run = wd.run(&[&night2.display().to_string()]);
    run.expect_code(0);
    run.expect_counts(20, 19, 1, 0, 0);
    let sent = sb.requests();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].reference.as_deref(), Some("B007"));
    assert_eq!(
        sent[0].body,
        serde_json::json!({"email": "b007-new@example.com"})
    );
}

#[test]
fn cache_commands_show_forget_and_restore_a_backup() {
    let wd = Workdir::new("cache-cmds");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf::new(&sb));
    let file = wd.write(
        "n.csv",
        small_export(&[
            ("C-1", "c1@example.com", "Ann", "Lee"),
            ("C-2", "c2@example.com", "Bo", "Ng"),
        ]),
    );
    let path = file.display().to_string();
    wd.run(&[&path]).expect_code(0);

    let stats = wd.exec(wd.command(&["cache", "stats"]));
    stats.expect_code(0);
    assert!(stats.stdout().contains("accounts: 2\n"), "{stats}");
    assert!(stats.stdout().contains("row index entries: 2\n"), "{stats}");

    let show = wd.exec(wd.command(&["cache", "show", "C-1"]));
    show.expect_code(0);
    let entry: serde_json::Value = serde_json::from_str(&show.stdout()).expect("show prints JSON");
    assert_eq!(entry["confirmed"]["email"], "c1@example.com", "{show}");
    wd.exec(wd.command(&["cache", "show", "nobody"]))
        .expect_code(2);

    let backup = wd.exec(wd.command(&["cache", "export"]));
    backup.expect_code(0);
    assert_eq!(backup.stdout().lines().count(), 2, "{backup}");
    let backup_file = wd.write("backup.jsonl", backup.stdout());

    let forget = wd.exec(wd.command(&["cache", "forget", "C-1"]));
    forget.expect_code(0);
    let before = sb.request_count();
    let run = wd.run(&[&path]);
    run.expect_counts(2, 1, 1, 0, 0);
    assert_eq!(
        sb.request_count(),
        before + 1,
        "only the forgotten account is sent again"
    );

    // Restore into a fresh cache: the next run sends nothing.
    std::fs::remove_dir_all(wd.cache_dir()).expect("remove cache");
    let import = wd.exec(wd.command(&["cache", "import", &backup_file.display().to_string()]));
    import.expect_code(0);
    assert!(
        import.stdout().contains("imported 2 references"),
        "{import}"
    );
    let again = wd.exec(wd.command(&["cache", "import", &backup_file.display().to_string()]));
    again.expect_code(2);
    assert!(again.stderr().contains("--merge"), "{again}");
    // The error names the cache as the cache and the backup as the file to import.
    let named = format!(
        "the cache {} already holds 2 accounts; import {}",
        wd.cache_dir().display(),
        backup_file.display()
    );
    assert!(again.stderr().contains(&named), "{again}");
    let before = sb.request_count();
    wd.run(&[&path]).expect_counts(2, 2, 0, 0, 0);
    assert_eq!(sb.request_count(), before);
}

/// Under systemd (no terminal, JOURNAL_STREAM set) each line carries its journal priority;
/// nothing carries ANSI codes, the token, or a row's e-mail.
#[test]
fn logs_without_a_terminal_are_plain_prioritised_and_hold_no_secret() {
    let wd = Workdir::new("logs");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf::demo(&sb));
    let export = repo_file("samples/crm-export-2026-12-02.csv");
    let export = export.display().to_string();
    let mut cmd = wd.command(&["run", &export]);
    cmd.env("JOURNAL_STREAM", "8:12345");
    let run = wd.exec(cmd);
    run.expect_code(1);
    let err = run.stderr();
    assert!(!err.contains('\u{1b}'), "ANSI escape in the journal\n{err}");
    assert!(!err.contains(TOKEN), "the token was logged\n{err}");
    assert!(!err.contains('@'), "an e-mail was logged at info\n{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("accountsync: "))
        .collect();
    assert!(!lines.is_empty(), "{run}");
    for line in &lines {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "line without a journal priority: {line:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("Run finished.")),
        "{err}"
    );

    // Outside tracing too: the fatal error of a config that does not parse is one line with
    // priority 3, its TOML excerpt included, so `journalctl -p err` shows why.
    let broken = wd.write(
        "broken.toml",
        "[api]\nbase_url = \"https://x\"\ncolour = [\n",
    );
    let mut cmd = std::process::Command::new(util::PRODUCT);
    cmd.arg("--config")
        .arg(&broken)
        .args(["run", &export])
        .env("JOURNAL_STREAM", "8:12345")
        .env_remove("ACCOUNTSYNC_LOG_FORMAT");
    let run = wd.exec(cmd);
    run.expect_code(2);
    let err = run.stderr();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{run}");
    assert!(
        lines[0].starts_with("<3>accountsync: error: config file")
            && lines[0].contains("broken.toml"),
        "{run}"
    );

    let mut cmd = wd.command(&["--log-format", "json", "run", &export]);
    cmd.env("JOURNAL_STREAM", "8:12345");
    let run = wd.exec(cmd);
    for line in run
        .stderr()
        .lines()
        .filter(|l| !l.starts_with("accountsync: "))
    {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(v["level"].is_string(), "{line}");
    }
}

#[test]
fn the_token_is_read_from_the_systemd_credentials_directory() {
    let wd = Workdir::new("credential");
    let sb = Sandbox::start(&wd, &[]);
    let mut conf = Conf::new(&sb);
    conf.token_env = String::new();
    conf.extra = String::new();
    let text = std::fs::read_to_string(wd.configure(&conf)).expect("config");
    let text = text.replace(
        "token_env = \"\"",
        "token_file = \"${CREDENTIALS_DIRECTORY}/api-token\"",
    );
    wd.write("config.toml", text);
    wd.write("creds/api-token", format!("{TOKEN}\n"));
    let file = wd.write("n.csv", numbered_export("K", 2));
    let mut cmd = wd.command(&["run", &file.display().to_string()]);
    cmd.env_remove(util::TOKEN_ENV)
        .env("CREDENTIALS_DIRECTORY", wd.path("creds"));
    let run = wd.exec(cmd);
    run.expect_code(0);
    assert_eq!(sb.request_count(), 2, "{run}");

    // From an operator's shell (no CREDENTIALS_DIRECTORY): check-config cannot see the
    // token, says how to check it under systemd, and does not fail for it; a run does.
    let mut cmd = wd.command(&["check-config"]);
    cmd.env_remove(util::TOKEN_ENV)
        .env_remove("CREDENTIALS_DIRECTORY");
    let check = wd.exec(cmd);
    check.expect_code(0);
    assert!(
        check.stdout().contains(
            "note: the token is read from the service's credentials; not checked outside systemd: run `sudo systemd-run --pipe --wait -p LoadCredential=api-token:/etc/accountsync/api-token accountsync --config "
        ),
        "{check}"
    );
    let mut cmd = wd.command(&["run", &file.display().to_string()]);
    cmd.env_remove(util::TOKEN_ENV)
        .env_remove("CREDENTIALS_DIRECTORY");
    wd.exec(cmd)
        .expect_code(2)
        .expect_stderr("CREDENTIALS_DIRECTORY");
}

#[test]
fn the_metrics_file_counts_a_run_with_rejections() {
    let wd = Workdir::new("metrics");
    let sb = Sandbox::start(&wd, &[]);
    let conf = Conf::demo(&sb);
    let prom = wd.path("textfile/accountsync.prom");
    std::fs::create_dir_all(prom.parent().expect("parent")).expect("mkdir");
    let text = std::fs::read_to_string(wd.configure(&conf)).expect("config");
    let line = format!(
        "metrics_file = {}\n",
        util::toml_string(&prom.display().to_string())
    );
    wd.write(
        "config.toml",
        text.replace("[report]\n", &format!("[report]\n{line}")),
    );
    let export = repo_file("samples/crm-export-2026-12-02.csv");
    let run = wd.run(&[&export.display().to_string()]);
    run.expect_code(1);
    let text = std::fs::read_to_string(&prom).expect("metrics file written");
    let s = run.summary();
    for (outcome, key) in [
        ("read", "rows_read"),
        ("updated", "updated"),
        ("rejected", "rejected"),
    ] {
        let line = format!(
            "accountsync_last_run_rows{{outcome=\"{outcome}\"}} {}",
            s[key]
        );
        assert!(text.contains(&line), "{line:?} missing in\n{text}");
    }
    assert!(
        text.contains("accountsync_last_run_exit_code 1\n"),
        "{text}"
    );
    // errors.csv's rows by category, in the textfile and in summary.json, every category
    // present (the demo export has one of each defect; zero for those it lacks).
    let mut rows: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for row in run.errors() {
        *rows.entry(row["category"].clone()).or_default() += 1;
    }
    assert!(rows["invalid"] > 0 && rows["duplicate"] > 0, "{rows:?}");
    for category in [
        "invalid",
        "conflict",
        "forbidden",
        "not_found",
        "not_configured",
        "duplicate",
        "malformed",
        "failed",
    ] {
        let n = rows.get(category).copied().unwrap_or(0);
        let line = format!("\naccountsync_last_run_errors{{category=\"{category}\"}} {n}\n");
        assert!(text.contains(&line), "{line:?} missing in\n{text}");
        assert_eq!(s["errors_by_category"][category], n, "{category}: {s:#}");
    }
    assert!(
        text.contains("accountsync_last_success_timestamp_seconds "),
        "{text}"
    );
    let success = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("accountsync_last_success_timestamp_seconds "))
            .map(str::to_owned)
    };
    let first_success = success(&text);

    // A run that stops before its report (a mapped column missing) still says exit 2, so
    // the "run failed" alert fires; the last success stays the previous night's.
    let bad = wd.write("bad.csv", "Account Reference,Email\nX-1,x@example.com\n");
    wd.run(&[&bad.display().to_string()]).expect_code(2);
    let text = std::fs::read_to_string(&prom).expect("metrics file");
    assert!(
        text.contains("\naccountsync_last_run_exit_code 2\n"),
        "{text}"
    );
    assert_eq!(success(&text), first_success, "{text}");
}

/// Without a terminal the progress is a log line at a fixed interval (10 s by default;
/// `ACCOUNTSYNC_PROGRESS_SECS` here so the test stays short), with no escape codes.
#[test]
fn a_long_run_without_a_terminal_logs_its_progress_periodically() {
    let wd = Workdir::new("progress-log");
    // 100 ms a request, one at a time: 15 rows take about 1.5 s.
    let sb = Sandbox::start(&wd, &["--latency-ms", "100"]);
    wd.configure(&Conf {
        max_in_flight: 1,
        ..Conf::new(&sb)
    });
    let file = wd.write("n.csv", numbered_export("P", 15));
    let mut cmd = wd.command(&["run", &file.display().to_string()]);
    cmd.env("ACCOUNTSYNC_PROGRESS_SECS", "0.3");
    let run = wd.exec(cmd);
    run.expect_code(0);
    let err = run.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("Progress: ")).collect();
    assert!(lines.len() >= 2, "expected periodic progress lines\n{err}");
    assert!(
        lines[0].contains("n.csv (1/1, pass 2/2)") && lines[0].contains("sent "),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "{err}");
}

#[test]
fn a_token_file_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let wd = Workdir::new("token-perms");
    let sb = Sandbox::start(&wd, &[]);
    let text = std::fs::read_to_string(wd.configure(&Conf::new(&sb))).expect("config");
    let token = wd.write("token", format!("{TOKEN}\n"));
    let line = format!(
        "token_file = {}",
        util::toml_string(&token.display().to_string())
    );
    wd.write(
        "config.toml",
        text.replace(&format!("token_env = \"{}\"", util::TOKEN_ENV), &line),
    );
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let run = wd.exec(wd.command(&["check-config"]));
    run.expect_code(0);
    assert!(
        run.stderr().contains("readable by other users; chmod 600"),
        "{run}"
    );
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let run = wd.exec(wd.command(&["check-config"]));
    assert!(!run.stderr().contains("readable by other users"), "{run}");
}

/// Root running a cache command on the service's cache would leave root-owned sled files
/// that the service cannot rewrite: refused, naming the owner. Only testable as root (the
/// test hands the cache to another uid); skipped otherwise.
#[test]
fn root_is_refused_a_cache_command_on_another_users_cache() {
    use std::os::unix::fs::{MetadataExt, chown};
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let wd = Workdir::new("root-cache");
    let sb = Sandbox::start(&wd, &[]);
    wd.configure(&Conf::new(&sb));
    let file = wd.write("n.csv", numbered_export("R", 2));
    wd.run(&[&file.display().to_string()]).expect_code(0);
    const NOBODY: u32 = 65534;
    let cache = wd.cache_dir();
    for entry in std::fs::read_dir(&cache).expect("cache dir") {
        chown(entry.expect("entry").path(), Some(NOBODY), None).expect("chown");
    }
    chown(&cache, Some(NOBODY), None).expect("chown");
    let before = wd.cache_fingerprint();
    let run = wd.exec(wd.command(&["cache", "stats"]));
    run.expect_code(2)
        .expect_stderr("(uid 65534); as root, this command would leave files in it")
        .expect_stderr("Run it as the service user: sudo -u ");
    assert!(run.stderr().contains(" cache stats"), "{run}");
    assert_eq!(wd.cache_fingerprint(), before, "the cache was touched");
    for entry in std::fs::read_dir(&cache).expect("cache dir") {
        let meta = entry.expect("entry").metadata().expect("metadata");
        assert_eq!(meta.uid(), NOBODY, "a root-owned file was left");
    }
}
