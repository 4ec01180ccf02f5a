use super::*;

const MINIMAL: &str = r#"
[api]
base_url = "https://accounts.example.com/rest/api/"
[columns]
accountreference = "Account Reference"
email = "Email"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/accountsync/accountsync.toml"))
}

#[track_caller]
fn refused(text: &str, needles: &[&str]) {
    let msg = parse(text).unwrap_err().to_string();
    for n in needles {
        assert!(msg.contains(n), "{n:?} not in: {msg}");
    }
}

/// Every example config shipped in `config/` parses (rustic's habit).
#[test]
fn shipped_configs_parse() {
    for name in ["demo.toml", "accountsync.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!config.columns.fields.is_empty(), "{name} maps fields");
    }
}

#[test]
fn defaults_and_relative_paths() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.api.base_url, "https://accounts.example.com/rest/api");
    assert_eq!(c.rate.requests_per_second, 10.0);
    assert_eq!(c.rate.burst.get(), 10);
    assert_eq!(c.rate.max_in_flight, 8);
    assert_eq!(c.retry.max_attempts, 5);
    assert_eq!(c.input.delimiter, b',');
    assert_eq!(c.input.date_formats, ["%Y-%m-%d"]);
    assert_eq!(c.cache_path, Path::new("/etc/accountsync/state/cache"));
    assert_eq!(c.report_dir, Path::new("/etc/accountsync/reports"));
    assert_eq!(c.input.dir, Path::new("/etc/accountsync/inbox"));
    assert!(matches!(&c.api.token, TokenSource::Env(v) if v == "ACCOUNTSYNC_TOKEN"));
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.cron, "0 0 2 * * *");
    let c = parse(&format!(
        "{MINIMAL}\n[cache]\npath = \"../../var/lib/./cache\"\n"
    ))
    .unwrap();
    assert_eq!(c.cache_path, Path::new("/var/lib/cache"));
}

#[test]
fn unknown_keys_are_named_with_the_file() {
    refused(
        &format!("{MINIMAL}\n[rate]\nrequests_per_secnd = 5\n"),
        &["accountsync.toml", "requests_per_secnd"],
    );
    refused(&format!("[bogus]\nx = 1\n{MINIMAL}"), &["bogus"]);
    refused(
        &MINIMAL.replace("email = ", "e_mail = "),
        &["[columns.e_mail]", "unknown API field"],
    );
    refused(
        &format!("{MINIMAL}\n[columns.addresses.home]\nstreeet = \"Street\"\n"),
        &["columns.addresses.home.streeet"],
    );
    refused(
        &format!("{MINIMAL}\n[validation.max_length]\nsurname = 5\n"),
        &["surname"],
    );
}

#[test]
fn bad_values_are_explained() {
    refused(
        &MINIMAL.replace("https://", "ftp://"),
        &["accountsync.toml:3: [api.base_url]"],
    );
    refused(
        &MINIMAL.replace("accountreference = \"Account Reference\"\n", ""),
        &["[columns.accountreference]"],
    );
    refused(
        &format!("{MINIMAL}\n[rate]\nrequests_per_second = 0\n"),
        &["[rate.requests_per_second]"],
    );
    refused(
        &format!("{MINIMAL}\n[rate]\nburst = 0\n"),
        &["[rate.burst]"],
    );
    refused(
        &format!("{MINIMAL}\n[input]\ndelimiter = \";;\"\n"),
        &["[input.delimiter]"],
    );
    refused(
        &format!("{MINIMAL}\n[input]\ndate_formats = [\"%Q\"]\n"),
        &["[input.date_formats]"],
    );
    refused(
        &format!("{MINIMAL}\n[retry]\nmax_attempts = 0\n"),
        &["[retry.max_attempts]"],
    );
    let both = MINIMAL.replace(
        "[columns]",
        "token_env = \"A\"\ntoken_file = \"/x\"\n[columns]",
    );
    refused(&both, &["token_env and token_file are both set"]);
}

#[test]
fn token_file_is_trimmed_and_must_not_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let text = MINIMAL.replace("[columns]", "token_file = \"token\"\n[columns]");
    let c = Config::parse(&text, &dir.path().join("c.toml")).unwrap();
    std::fs::write(&file, "  s3cret\n").unwrap();
    use secrecy::ExposeSecret;
    assert_eq!(c.token().unwrap().expose_secret(), "s3cret");
    std::fs::write(&file, " \n").unwrap();
    assert!(c.token().unwrap_err().to_string().contains("is empty"));
    std::fs::remove_file(&file).unwrap();
    assert!(c.token().unwrap_err().to_string().contains("cannot read"));
}

#[test]
fn a_missing_token_variable_is_named() {
    let text = MINIMAL.replace(
        "[columns]",
        "token_env = \"ACCOUNTSYNC_TEST_SURELY_UNSET\"\n[columns]",
    );
    let msg = parse(&text).unwrap().token().unwrap_err().to_string();
    assert!(msg.contains("ACCOUNTSYNC_TEST_SURELY_UNSET"), "{msg}");
}

/// A token pasted where the variable's name belongs is refused without being repeated.
#[test]
fn a_token_env_that_is_no_variable_name_is_refused_without_showing_it() {
    for value in ["sekret-tok-123", "1ABC", "ab cd", "eyJhbGciOi.x"] {
        let text = MINIMAL.replace("[columns]", &format!("token_env = {value:?}\n[columns]"));
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains("does not look like a variable name"), "{msg}");
        assert!(!msg.contains(value), "{msg}");
    }
    let text = MINIMAL.replace("[columns]", "token_env = \" _My_TOKEN2 \"\n[columns]");
    assert!(matches!(parse(&text).unwrap().api.token, TokenSource::Env(v) if v == "_My_TOKEN2"));
}

/// check-config and run read the token through the same check: a control character is
/// refused before any request, without echoing the token.
#[test]
fn a_token_that_cannot_go_in_a_header_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = MINIMAL.replace("[columns]", "token_file = \"token\"\n[columns]");
    let c = Config::parse(&text, &dir.path().join("c.toml")).unwrap();
    for bad in ["SECRET\u{1}x", "SECRET\u{7f}x", "SECRÉT-x"] {
        std::fs::write(dir.path().join("token"), bad).unwrap();
        let msg = c.token().unwrap_err().to_string();
        assert!(msg.contains("cannot go in an HTTP header"), "{msg}");
        assert!(!msg.contains("SECR"), "the token is shown: {msg}");
    }
    std::fs::write(dir.path().join("token"), "ok-token with space\tand tab").unwrap();
    assert!(c.token().is_ok());
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret-value").unwrap();
    let text = MINIMAL.replace("[columns]", "token_file = \"token\"\n[columns]");
    let c = Config::parse(&text, &dir.path().join("c.toml")).unwrap();
    let token = c.token().unwrap();
    assert!(!format!("{token:?} {c:?}").contains("s3cret-value"));
}

#[test]
fn a_systemd_credential_is_found_at_run_time_and_its_absence_explained() {
    let text = MINIMAL.replace(
        "[columns]",
        "token_file = \"${CREDENTIALS_DIRECTORY}/api-token\"\n[columns]",
    );
    let c = parse(&text).unwrap();
    assert!(
        matches!(&c.api.token, TokenSource::Credential(n) if n == "api-token"),
        "{:?}",
        c.api.token
    );
    // The variable is read with the token, not at parse time. Tests cannot safely change
    // the process environment, so the message is checked only where the variable is unset;
    // tests/cli.rs reads a token through it in a child process.
    if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
        let msg = c.token().unwrap_err().to_string();
        assert!(
            msg.contains("CREDENTIALS_DIRECTORY") && msg.contains("LoadCredential="),
            "{msg}"
        );
    }
}

#[test]
fn schedule_shutdown_and_metrics_have_defaults_and_limits() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(
        (c.cron.as_str(), c.timezone.as_str()),
        ("0 0 2 * * *", "UTC")
    );
    assert_eq!(c.shutdown_deadline, Duration::from_secs(20));
    assert_eq!(c.metrics_file, None);
    let c = parse(&format!(
        "{MINIMAL}[report]\nmetrics_file = \"m/accountsync.prom\"\n[shutdown]\ndeadline_secs = 5\n"
    ))
    .unwrap();
    assert_eq!(
        c.metrics_file.as_deref(),
        Some(Path::new("/etc/accountsync/m/accountsync.prom"))
    );
    assert_eq!(c.shutdown_deadline, Duration::from_secs(5));
    refused(
        &format!("{MINIMAL}[shutdown]\ndeadline_secs = 0\n"),
        &["[shutdown.deadline_secs]", "between 1 and 3600"],
    );
    refused(
        &format!("{MINIMAL}[cache]\npath = \"c\"\nbackup_file = \"c/backup.jsonl\"\n"),
        &["[cache.backup_file] is inside [cache].path"],
    );
    let c = parse(&format!(
        "{MINIMAL}[cache]\npath = \"c\"\nbackup_file = \"c-backup.jsonl\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.cache_backup.as_deref(),
        Some(Path::new("/etc/accountsync/c-backup.jsonl"))
    );
}

/// A semantic error names the line of its key like a syntax error does; a table's own
/// problem (both token keys) points at the table, and a missing key at no line.
#[test]
fn a_bad_value_is_reported_with_its_line() {
    let text = format!("{MINIMAL}\n[rate]\n# comment\nrequests_per_second = 0\n");
    refused(&text, &["accountsync.toml:10: [rate.requests_per_second]"]);
    let text = MINIMAL.replace(
        "[columns]",
        "token_env = \"A\"\ntoken_file = \"b\"\n[columns]",
    );
    refused(
        &text,
        &["accountsync.toml:2: [api] token_env and token_file"],
    );
    assert_eq!(check::key_line("[a]\nb.c = 1\n", "a.b.c"), Some(2));
    assert_eq!(check::key_line("[a]\n", "a.missing"), Some(1));
    assert_eq!(check::key_line("x = 1\n", "y"), None);
}

#[test]
fn plain_http_is_refused_unless_loopback_or_allowed() {
    for url in [
        "http://127.0.0.1:8080/api",
        "http://localhost/api",
        "http://[::1]:9/x",
    ] {
        let text = MINIMAL.replace("https://accounts.example.com/rest/api/", url);
        assert!(parse(&text).is_ok(), "{url} is this machine");
    }
    for url in [
        "http://accounts.example.com/api",
        "http://10.0.0.5/api",
        "http://127.0.0.1.evil.example/api",
        // reqwest's parser reads `\` as `/`: the host is 10.0.0.5, not 127.0.0.1 (TOML
        // turns the `\\` below into one backslash).
        "http://10.0.0.5:8080\\\\@127.0.0.1/api",
        "http://LOCALHOST.evil.example/api",
    ] {
        let text = MINIMAL.replace("https://accounts.example.com/rest/api/", url);
        refused(
            &text,
            &["[api.base_url]", "unencrypted", "allow_insecure_http"],
        );
        let allowed = text.replace("[columns]", "allow_insecure_http = true\n[columns]");
        assert!(parse(&allowed).is_ok(), "{url} allowed explicitly");
    }
}

#[test]
fn base_url_with_credentials_query_or_garbage_is_refused() {
    for (url, words) in [
        (
            "https://user:pw@accounts.example.com/api",
            &["user name or password"][..],
        ),
        (
            "http://localhost@evil.example/api",
            &["user name or password"][..],
        ),
        ("https://accounts.example.com/api?x=1", &["`?` or `#`"][..]),
        ("https://accounts.example.com/api#top", &["`?` or `#`"][..]),
        ("https://exa mple.com/api", &["not a URL"][..]),
    ] {
        let text = MINIMAL.replace("https://accounts.example.com/rest/api/", url);
        let mut expected = vec!["[api.base_url]"];
        expected.extend_from_slice(words);
        refused(&text, &expected);
    }
}

/// Independent problems are all found in one pass, each with its key and line, ordered by
/// line; a run reports the first.
#[test]
fn every_independent_problem_is_listed_with_its_line() {
    let text = format!(
        "{MINIMAL}[rate]\nburst = 0\nmax_in_flight = 0\n[input]\ndelimiter = \";;\"\ndate_formats = [\"%Q\"]\n[shutdown]\ndeadline_secs = 0\n"
    )
    .replace("https://", "ftp://");
    let path = Path::new("/etc/accountsync/accountsync.toml");
    let all: Vec<String> = Config::parse_all(&text, path)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    let expected = [
        ":3: [api.base_url]",
        ":8: [rate.burst]",
        ":9: [rate.max_in_flight]",
        ":11: [input.delimiter]",
        ":12: [input.date_formats]",
        ":14: [shutdown.deadline_secs]",
    ];
    assert_eq!(all.len(), expected.len(), "{all:#?}");
    for (shown, want) in all.iter().zip(expected) {
        assert!(shown.contains(want), "{want:?} not in {shown:?}");
    }
    let first = parse(&text).unwrap_err().to_string();
    assert_eq!(first, all[0]);
    // A syntax error is the only problem: nothing after it can be read.
    let broken = format!("{text}\n[oops\n");
    assert_eq!(
        Config::parse_all(&broken, path).unwrap_err().iter().count(),
        1
    );
}
