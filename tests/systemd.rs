//! The systemd units in `systemd/` (see `systemd/README.md`):
//!
//! - `systemd-analyze security --offline=true` scores each service at 1.5 or lower;
//! - `systemd-analyze verify` has nothing to say about the two services and the timer;
//! - every sandboxing line keeps the comment giving its reason, and the two services
//!   share one sandbox;
//! - the units, `sysusers.conf` and `config/accountsync.toml` agree with each other.
//!
//! The tests that run `systemd-analyze` print "skipped: systemd-analyze not found" and
//! pass when it is not on PATH; the others need nothing but the files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DAEMON: &str = "accountsync.service";
const RUN: &str = "accountsync-run.service";
const TIMER: &str = "accountsync-run.timer";
const SERVICES: [&str; 2] = [DAEMON, RUN];

/// The highest `systemd-analyze security` exposure accepted (0 = locked down, 10 = root
/// with everything open). `--threshold` takes it ×10.
const MAX_EXPOSURE: f64 = 1.5;

/// Where the package installs the binary; the units name it.
const INSTALLED_BINARY: &str = "/usr/bin/accountsync";
const CONFIG: &str = "/etc/accountsync/accountsync.toml";

/// The sandbox: each of these must be set in both services, to the same values, and
/// each line must be directly preceded by a comment saying why.
const SANDBOX: &[&str] = &[
    "User",
    "Group",
    "StateDirectory",
    "StateDirectoryMode",
    "ConfigurationDirectory",
    "UMask",
    "LoadCredential",
    "ProtectSystem",
    "ReadWritePaths",
    "ProtectHome",
    "PrivateTmp",
    "PrivateMounts",
    "PrivateDevices",
    "DevicePolicy",
    "ProtectProc",
    "ProcSubset",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "NoNewPrivileges",
    "RestrictSUIDSGID",
    "PrivateUsers",
    "RestrictNamespaces",
    "RemoveIPC",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectClock",
    "ProtectHostname",
    "ProtectControlGroups",
    "MemoryDenyWriteExecute",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallErrorNumber",
    "RestrictRealtime",
    "LockPersonality",
    "RestrictAddressFamilies",
];

/// Directives that would widen or narrow the sandbox if someone added them: not
/// required, but when present they need their reason too.
const ALSO_EXPLAINED: &[&str] = &[
    "DynamicUser",
    "SupplementaryGroups",
    "NotifyAccess",
    "KillMode",
    "IPAddressAllow",
    "IPAddressDeny",
    "PrivateNetwork",
    "PrivateIPC",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "BindPaths",
    "BindReadOnlyPaths",
    "TemporaryFileSystem",
    "DeviceAllow",
    "KeyringMode",
    "LoadCredentialEncrypted",
    "SetCredential",
    "Environment",
    "EnvironmentFile",
    "RestrictFileSystems",
    "SocketBindAllow",
    "SocketBindDeny",
    "CacheDirectory",
    "LogsDirectory",
    "RuntimeDirectory",
    "RootDirectory",
];

// ---------------------------------------------------------------------------------------
// systemd-analyze

#[test]
fn each_service_scores_at_most_1_5_in_systemd_analyze_security() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    for name in SERVICES {
        let unit = unit_path(name);
        let out = run(Command::new(&analyze)
            .args(["--no-pager", "security", "--offline=true"])
            .arg(format!(
                "--threshold={}",
                (MAX_EXPOSURE * 10.0).round() as u32
            ))
            .arg(&unit));
        let text = all_output(&out);
        let score = overall_exposure(&text, name)
            .unwrap_or_else(|| panic!("no \"Overall exposure level for {name}\" line:\n{text}"));
        eprintln!("{name}: overall exposure {score}");
        assert!(
            score <= MAX_EXPOSURE,
            "{name} scores {score}, above {MAX_EXPOSURE}:\n{text}"
        );
        assert!(
            out.status.success(),
            "systemd-analyze security {name} failed ({}):\n{text}",
            out.status
        );
    }
}

/// `verify` checks that every Exec*= binary exists and is executable, and
/// /usr/bin/accountsync is not installed where the tests run. So the units are copied to
/// a temp dir with that path replaced by the binary cargo just built (the timer is
/// verified together with its service, which `verify` finds in the same directory).
/// `--root=` would avoid the rewrite, but v252 then also looks for /bin/kill and every
/// unit the services depend on (sysinit.target, network-online.target...) under that
/// root, so the test would have to fake a whole OS tree.
#[test]
fn systemd_analyze_verify_has_nothing_to_say_about_the_units() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stand_in = stand_in_binary();
    let mut units = Vec::new();
    for name in [DAEMON, RUN, TIMER] {
        let text = read_unit(name);
        if name.ends_with(".service") {
            assert!(
                text.contains(INSTALLED_BINARY),
                "{name} does not run {INSTALLED_BINARY}"
            );
        }
        let copy = dir.path().join(name);
        std::fs::write(&copy, text.replace(INSTALLED_BINARY, &stand_in)).unwrap();
        units.push(copy);
    }
    // --man=no: a Documentation=man:… line would be checked against the man pages
    // installed on this machine, not against the package.
    let out = run(Command::new(&analyze)
        .args(["--no-pager", "verify", "--man=no"])
        .args(&units));
    let text = all_output(&out);
    let about_us: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("accountsync"))
        .collect();
    assert!(
        about_us.is_empty() && out.status.success(),
        "systemd-analyze verify ({}) complains:\n{text}",
        out.status
    );
    if !text.trim().is_empty() {
        // Not about our units (this machine's own unit files): shown, not failed.
        eprintln!("systemd-analyze verify said, about other units:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------
// The files themselves

#[test]
fn every_sandbox_line_keeps_its_reason_and_both_services_share_one_sandbox() {
    let mut sandboxes = Vec::new();
    for name in SERVICES {
        let unit = Unit::load(name);
        let mut missing_reason = Vec::new();
        for entry in unit.section("Service") {
            let explained = SANDBOX.contains(&entry.key.as_str())
                || ALSO_EXPLAINED.contains(&entry.key.as_str());
            if explained && !entry.after_comment {
                missing_reason.push(format!("{name}:{}: {}", entry.line, entry.raw));
            }
        }
        assert!(
            missing_reason.is_empty(),
            "sandboxing lines need a comment line right above them saying why:\n{}",
            missing_reason.join("\n")
        );
        for key in SANDBOX {
            assert!(
                !unit.values("Service", key).is_empty(),
                "{name} does not set {key}="
            );
        }
        let sandbox: Vec<(String, String)> = unit
            .section("Service")
            .filter(|e| SANDBOX.contains(&e.key.as_str()))
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        sandboxes.push(sandbox);
    }
    assert_eq!(
        sandboxes[0], sandboxes[1],
        "{DAEMON} and {RUN} must share one sandbox (same directives, same order)"
    );
}

#[test]
fn the_units_keep_what_the_daemon_and_the_operators_rely_on() {
    let daemon = Unit::load(DAEMON);
    assert_eq!(daemon.one("Service", "Type"), "notify");
    assert_eq!(daemon.one("Service", "NotifyAccess"), "main");
    assert_eq!(
        daemon.one("Service", "ExecStart"),
        format!("{INSTALLED_BINARY} --config {CONFIG} daemon")
    );
    assert_eq!(
        daemon.one("Service", "ExecStartPre"),
        format!("{INSTALLED_BINARY} --config {CONFIG} check-config")
    );
    assert_eq!(
        daemon.one("Service", "ExecReload"),
        "/bin/kill -HUP $MAINPID"
    );
    assert!(!daemon.one("Service", "WatchdogSec").is_empty());
    assert_eq!(daemon.one("Service", "Restart"), "on-failure");
    // The daemon's shutdown deadline is 20 s: systemd must not SIGKILL it before.
    let stop = seconds(daemon.one("Service", "TimeoutStopSec"));
    assert!(stop > 20 && stop <= 60, "TimeoutStopSec={stop}s");
    assert_eq!(daemon.one("Install", "WantedBy"), "multi-user.target");

    let run = Unit::load(RUN);
    assert_eq!(run.one("Service", "Type"), "oneshot");
    assert_eq!(
        run.one("Service", "ExecStart"),
        format!("{INSTALLED_BINARY} --config {CONFIG} run")
    );
    // The daemon and the timer's runs must never hold the cache at the same time.
    assert_eq!(run.one("Unit", "Conflicts"), DAEMON);
    assert!(
        run.values("Unit", "After")
            .iter()
            .any(|v| v.split_whitespace().any(|u| u == DAEMON))
    );
    assert!(seconds(run.one("Service", "TimeoutStopSec")) > 20);
    // Started by the timer only: enabling the service itself must do nothing.
    assert!(
        run.section("Install").next().is_none(),
        "{RUN} must have no [Install]"
    );

    let timer = Unit::load(TIMER);
    assert_eq!(timer.one("Timer", "OnCalendar"), "*-*-* 02:00:00");
    assert_eq!(timer.one("Timer", "Persistent"), "true");
    // No Unit=: the timer starts the service of the same name.
    assert!(timer.values("Timer", "Unit").is_empty());
    assert_eq!(TIMER.replace(".timer", ".service"), RUN);
    assert_eq!(timer.one("Install", "WantedBy"), "timers.target");

    // The token reaches the config as ${CREDENTIALS_DIRECTORY}/api-token.
    assert_eq!(
        daemon.one("Service", "LoadCredential"),
        "api-token:/etc/accountsync/api-token"
    );
}

#[test]
fn sysusers_conf_creates_the_user_the_services_run_as() {
    let daemon = Unit::load(DAEMON);
    let user = daemon.one("Service", "User");
    let group = daemon.one("Service", "Group");
    assert_eq!(
        user, group,
        "sysusers' u line creates a group of the user's name"
    );
    let text = std::fs::read_to_string(unit_path("sysusers.conf")).unwrap();
    let lines: Vec<Vec<String>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(sysusers_fields)
        .collect();
    let [fields] = lines.as_slice() else {
        panic!("sysusers.conf should have exactly one entry:\n{text}");
    };
    assert_eq!(fields[0], "u");
    assert_eq!(fields[1], user);
    assert_eq!(fields[2], "-", "let sysusers pick a free system UID");
    assert!(
        !fields[3].contains(':'),
        "a ':' makes the GECOS field invalid"
    );
    let state = daemon.one("Service", "StateDirectory");
    assert_eq!(
        fields[4],
        format!("/var/lib/{state}"),
        "home = the state directory"
    );
}

/// The production example must keep its files where the sandbox lets the service write
/// (everything else is read-only under ProtectSystem=strict).
#[test]
fn the_production_config_keeps_its_files_where_the_sandbox_allows_writes() {
    let daemon = Unit::load(DAEMON);
    let mut writable: Vec<String> = daemon
        .values("Service", "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|p| p.trim_start_matches(['-', '+']).to_string())
        .collect();
    writable.push(format!(
        "/var/lib/{}",
        daemon.one("Service", "StateDirectory")
    ));
    let under_writable = |path: &str| {
        writable
            .iter()
            .any(|dir| Path::new(path).starts_with(dir) && path != dir)
    };

    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/accountsync.toml");
    let config: toml::Table = std::fs::read_to_string(&config_path)
        .unwrap()
        .parse()
        .unwrap();
    let get = |table: &str, key: &str| {
        config
            .get(table)
            .and_then(|t| t.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    for (table, key) in [
        ("input", "dir"),
        ("input", "archive_dir"),
        ("cache", "path"),
        ("cache", "backup_file"),
        ("report", "dir"),
    ] {
        let path = get(table, key).unwrap_or_else(|| panic!("[{table}].{key} is not set"));
        assert!(
            under_writable(&path),
            "[{table}].{key} = {path:?} is not under {writable:?}: the service could not write it"
        );
    }
    // Once the example switches to the credential, it must name the one the units load.
    if let Some(token_file) = get("api", "token_file") {
        let credential = daemon.one("Service", "LoadCredential");
        let id = credential.split(':').next().unwrap();
        assert_eq!(token_file, format!("${{CREDENTIALS_DIRECTORY}}/{id}"));
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

/// systemd-analyze from PATH, or None after saying the test is skipped.
fn systemd_analyze() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("systemd-analyze"))
            .find(|candidate| is_executable(candidate))
    });
    if found.is_none() {
        eprintln!("skipped: systemd-analyze not found");
    }
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An existing executable to stand in for /usr/bin/accountsync: the binary cargo built,
/// unless its path has characters systemd would read as quoting or specifiers.
fn stand_in_binary() -> String {
    let built = env!("CARGO_BIN_EXE_accountsync");
    let plain = built
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c));
    if plain && is_executable(Path::new(built)) {
        built.to_string()
    } else {
        "/bin/true".to_string()
    }
}

fn unit_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name)
}

fn read_unit(name: &str) -> String {
    let path = unit_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(command: &mut Command) -> Output {
    command
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "cat")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The X.Y of "→ Overall exposure level for NAME: X.Y OK 🙂".
fn overall_exposure(text: &str, name: &str) -> Option<f64> {
    let marker = format!("Overall exposure level for {name}:");
    let line = text.lines().find(|l| l.contains(&marker))?;
    let rest = &line[line.find(&marker)? + marker.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// "30s", "30", "2min", "1min 30s" in seconds (what these units use).
fn seconds(value: &str) -> u64 {
    let mut total = 0;
    for part in value.split_whitespace() {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let n: u64 = digits
            .parse()
            .unwrap_or_else(|_| panic!("not a time span: {value}"));
        total += match &part[digits.len()..] {
            "" | "s" | "sec" => n,
            "m" | "min" => n * 60,
            "h" => n * 3600,
            unit => panic!("unexpected time unit {unit:?} in {value}"),
        };
    }
    total
}

/// Whitespace-separated fields of a sysusers.d line, "double quotes" grouping.
fn sysusers_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    fields.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        fields.push(current);
    }
    fields
}

/// One `Key=value` line of a unit file.
struct Entry {
    section: String,
    key: String,
    value: String,
    line: usize,
    raw: String,
    /// The line right above is a comment.
    after_comment: bool,
}

/// A unit file, just parsed enough for these checks (no line continuations: these units
/// do not use them).
struct Unit {
    name: String,
    entries: Vec<Entry>,
}

impl Unit {
    fn load(name: &str) -> Unit {
        let text = read_unit(name);
        let mut entries = Vec::new();
        let mut section = String::new();
        let mut previous = "";
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.starts_with('[') && line.ends_with(']') {
                section = line[1..line.len() - 1].to_string();
            } else if !line.is_empty() && !line.starts_with(['#', ';']) {
                assert!(
                    !line.ends_with('\\'),
                    "{name}:{}: continuation lines",
                    i + 1
                );
                let (key, value) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{name}:{}: not Key=value: {raw}", i + 1));
                entries.push(Entry {
                    section: section.clone(),
                    key: key.trim().to_string(),
                    value: value.trim().to_string(),
                    line: i + 1,
                    raw: raw.to_string(),
                    after_comment: previous.trim_start().starts_with(['#', ';']),
                });
            }
            previous = raw;
        }
        Unit {
            name: name.to_string(),
            entries,
        }
    }

    fn section<'a>(&'a self, section: &str) -> impl Iterator<Item = &'a Entry> + use<'a> {
        let section = section.to_string();
        self.entries.iter().filter(move |e| e.section == section)
    }

    fn values(&self, section: &str, key: &str) -> Vec<&str> {
        self.section(section)
            .filter(|e| e.key == key)
            .map(|e| e.value.as_str())
            .collect()
    }

    /// The value of a key set exactly once.
    fn one(&self, section: &str, key: &str) -> &str {
        match self.values(section, key).as_slice() {
            [value] => value,
            values => panic!(
                "{}: expected one [{section}] {key}=, found {values:?}",
                self.name
            ),
        }
    }
}

#[test]
fn the_helpers_read_what_systemd_prints() {
    let sample = "✓ UMask=  Files created by service are accessible only by service's own user\n\n\
                  → Overall exposure level for accountsync.service: 1.1 OK 🙂\n";
    assert_eq!(overall_exposure(sample, "accountsync.service"), Some(1.1));
    assert_eq!(overall_exposure(sample, "accountsync-run.service"), None);
    assert_eq!(seconds("30s"), 30);
    assert_eq!(seconds("1min 30s"), 90);
    assert_eq!(
        sysusers_fields(r#"u accountsync - "a b" /var/lib/accountsync -"#),
        ["u", "accountsync", "-", "a b", "/var/lib/accountsync", "-"]
    );
}
