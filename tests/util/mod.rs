//! Shared harness of the integration tests: a private work directory per test (config, cache,
//! reports, export files), the real `accountsync` binary run as a process, and the real
//! `accountsync-sandbox` on its own port. Failures print the command, exit status, stdout and
//! stderr (xsv's `tests/workdir.rs` style), because a CI log is all one has.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

pub const PRODUCT: &str = env!("CARGO_BIN_EXE_accountsync");
pub const SANDBOX: &str = env!("CARGO_BIN_EXE_accountsync-sandbox");
pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The token both sides use unless a test says otherwise.
pub const TOKEN: &str = "test-token";
/// The env var the generated configs name in `[api].token_env`.
pub const TOKEN_ENV: &str = "ACCOUNTSYNC_TOKEN";

/// A file of the repository, by path relative to its root.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(MANIFEST_DIR).join(rel)
}

// ---------------------------------------------------------------------------------------
// Sandbox

/// One request as the sandbox logged it (`GET /_sandbox/requests`).
#[derive(Clone, Debug, Deserialize)]
pub struct Logged {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub reference: Option<String>,
    pub body: Value,
    pub status: u16,
    pub received_ms: f64,
    /// The fault the sandbox injected (`500`, `503`, `429`, `reset`, `slow`, `applied_drop`).
    #[serde(default)]
    pub fault: Option<String>,
}

/// A running `accountsync-sandbox`, killed on drop.
pub struct Sandbox {
    child: Child,
    /// Kept open: the sandbox must never see a closed stdout.
    _stdout: BufReader<ChildStdout>,
    /// `IP:PORT`.
    pub addr: String,
    stderr_path: PathBuf,
}

impl Sandbox {
    /// Starts the sandbox on a free port with `--token TOKEN` and `args`; its stderr goes to
    /// `sandbox.stderr` in the work directory.
    pub fn start(wd: &Workdir, args: &[&str]) -> Sandbox {
        Sandbox::start_with_token(wd, TOKEN, args)
    }

    pub fn start_with_token(wd: &Workdir, token: &str, args: &[&str]) -> Sandbox {
        let stderr_path = wd.path("sandbox.stderr");
        let stderr = File::create(&stderr_path).expect("create sandbox.stderr");
        let mut cmd = Command::new(SANDBOX);
        cmd.args(["--listen", "127.0.0.1:0", "--token", token])
            .args(args)
            .env_remove("SANDBOX_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .map(str::to_owned);
        match (read, addr) {
            (Ok(_), Some(addr)) => Sandbox {
                child,
                _stdout: stdout,
                addr,
                stderr_path,
            },
            (read, _) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "sandbox did not start\ncommand: {cmd:?}\nstatus: {status:?}\nfirst stdout line: {line:?} ({read:?})\nstderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        }
    }

    /// `http://IP:PORT/rest/api`, the product's `[api].base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/rest/api", self.addr)
    }

    /// Every API request so far, in arrival order.
    pub fn requests(&self) -> Vec<Logged> {
        let body = self.http("GET", "/_sandbox/requests", None);
        let mut all: Vec<Logged> = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET /_sandbox/requests: {e}: {body}"));
        all.sort_by_key(|r| r.seq);
        all
    }

    pub fn request_count(&self) -> usize {
        self.requests().len()
    }

    /// The accounts the sandbox holds: reference -> account.
    pub fn accounts(&self) -> BTreeMap<String, Value> {
        let body = self.http("GET", "/_sandbox/accounts", None);
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET /_sandbox/accounts: {e}: {body}"))
    }

    /// Replaces the failing references (`POST /_sandbox/fail`).
    pub fn set_failures(&self, references: &[&str]) {
        let body = serde_json::json!({ "references": references }).to_string();
        self.http("POST", "/_sandbox/fail", Some(&body));
    }

    /// Replaces the fault rates at run time (`POST /_sandbox/faults`; `{}` turns them off).
    pub fn set_faults(&self, json: &str) {
        self.http("POST", "/_sandbox/faults", Some(json));
    }

    /// `GET /_sandbox/stats`: the seed, faults drawn per kind, changes applied per account.
    pub fn stats(&self) -> Value {
        let body = self.http("GET", "/_sandbox/stats", None);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /_sandbox/stats: {e}: {body}"))
    }

    /// `GET path` on the sandbox, the body as text: for a test that parses only part of a
    /// large answer (`/_sandbox/requests` after thousands of requests).
    pub fn get(&self, path: &str) -> String {
        self.http("GET", path, None)
    }

    /// The sandbox's stderr so far, for failure messages.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A minimal HTTP/1.1 exchange (`Connection: close`, read to EOF); panics unless 200.
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let mut stream = TcpStream::connect(&self.addr)
            .unwrap_or_else(|e| panic!("connect to sandbox {}: {e}", self.addr));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set_read_timeout");
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .expect("write request to sandbox");
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .expect("read response from sandbox");
        let text = String::from_utf8(raw).expect("sandbox answered UTF-8");
        let (head, payload) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("malformed HTTP answer: {text:?}"));
        let status_line = head.lines().next().unwrap_or_default();
        assert!(
            status_line.starts_with("HTTP/1.1 200"),
            "{method} {path}: {status_line}\n{payload}\nsandbox stderr:\n{}",
            self.stderr()
        );
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        if chunked {
            dechunk(payload)
        } else {
            payload.to_owned()
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = s.split_once("\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        s = rest[size..].trim_start_matches("\r\n");
    }
}

/// Requests grouped by reference.
pub fn by_reference(requests: &[Logged]) -> BTreeMap<String, Vec<&Logged>> {
    let mut map: BTreeMap<String, Vec<&Logged>> = BTreeMap::new();
    for r in requests {
        map.entry(r.reference.clone().unwrap_or_default())
            .or_default()
            .push(r);
    }
    map
}

/// The body with the `addresses` array sorted: its order carries no meaning (CONTRACT §4).
pub fn normalize_body(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(Value::Array(items)) = body.get_mut("addresses") {
        items.sort_by_key(|a| a.to_string());
    }
    body
}

// ---------------------------------------------------------------------------------------
// Config

/// The settings a test may change; rendered to a config file with absolute paths.
#[derive(Clone, Debug)]
pub struct Conf {
    pub base_url: String,
    pub token_env: String,
    pub timeout_secs: u64,
    pub requests_per_second: f64,
    pub burst: u32,
    pub max_in_flight: usize,
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub input_dir: Option<PathBuf>,
    pub pattern: String,
    pub archive_dir: Option<PathBuf>,
    pub delimiter: String,
    pub date_formats: Vec<String>,
    /// Raw TOML from `[columns]` on (its sub-tables included).
    pub columns: String,
    /// Raw TOML appended at the end.
    pub extra: String,
}

/// A small mapping for hand-written exports: `ref,email,first,last`.
pub const SMALL_COLUMNS: &str = r#"[columns]
accountreference = "ref"
email = "email"
firstname = "first"
lastname = "last"
"#;

impl Conf {
    /// Fast settings (high rate, tiny backoffs) and [`SMALL_COLUMNS`].
    pub fn new(sandbox: &Sandbox) -> Conf {
        Conf {
            base_url: sandbox.base_url(),
            token_env: TOKEN_ENV.into(),
            timeout_secs: 10,
            requests_per_second: 1000.0,
            burst: 100,
            max_in_flight: 8,
            max_attempts: 3,
            initial_backoff_ms: 10,
            max_backoff_ms: 50,
            input_dir: None,
            pattern: "*.csv".into(),
            archive_dir: None,
            delimiter: ",".into(),
            date_formats: vec!["%Y-%m-%d".into()],
            columns: SMALL_COLUMNS.into(),
            extra: String::new(),
        }
    }

    /// `config/demo.toml`'s `[columns]` (and input formats), with fast settings.
    pub fn demo(sandbox: &Sandbox) -> Conf {
        let demo = std::fs::read_to_string(repo_file("config/demo.toml")).expect("demo.toml");
        let start = demo.find("\n[columns]").expect("[columns] in demo.toml") + 1;
        let end = demo.find("\n[cache]").expect("[cache] in demo.toml") + 1;
        Conf {
            pattern: "crm-export-*.csv".into(),
            date_formats: vec!["%Y-%m-%d".into(), "%d/%m/%Y".into(), "%d.%m.%Y".into()],
            columns: demo[start..end].to_owned(),
            ..Conf::new(sandbox)
        }
    }

    fn render(&self, root: &Path) -> String {
        let s = |v: &str| toml_string(v);
        let p = |v: &Path| toml_string(&v.display().to_string());
        let mut out = String::new();
        out += &format!(
            "[api]\nbase_url = {}\ntoken_env = {}\ntimeout_secs = {}\n\n",
            s(&self.base_url),
            s(&self.token_env),
            self.timeout_secs
        );
        out += &format!(
            "[rate]\nrequests_per_second = {:?}\nburst = {}\nmax_in_flight = {}\n\n",
            self.requests_per_second, self.burst, self.max_in_flight
        );
        out += &format!(
            "[retry]\nmax_attempts = {}\ninitial_backoff_ms = {}\nmax_backoff_ms = {}\n\n",
            self.max_attempts, self.initial_backoff_ms, self.max_backoff_ms
        );
        out += &format!(
            "[input]\ndir = {}\npattern = {}\ndelimiter = {}\ndate_formats = [{}]\n",
            p(&self.input_dir.clone().unwrap_or_else(|| root.join("inbox"))),
            s(&self.pattern),
            s(&self.delimiter),
            self.date_formats
                .iter()
                .map(|f| s(f))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(dir) = &self.archive_dir {
            out += &format!("archive_dir = {}\n", p(dir));
        }
        out += "\n";
        out += &format!(
            "[cache]\npath = {}\n\n[report]\ndir = {}\n\n",
            p(&root.join("cache")),
            p(&root.join("reports"))
        );
        out += &self.columns;
        out += "\n";
        out += &self.extra;
        out
    }
}

/// A TOML basic string.
pub fn toml_string(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------
// Work directory and runs

/// A test's private directory: `config.toml`, `cache/`, `reports/`, exports.
pub struct Workdir {
    dir: tempfile::TempDir,
    pub root: PathBuf,
    /// Token put in [`TOKEN_ENV`] for runs.
    pub token: String,
}

impl Workdir {
    pub fn new(name: &str) -> Workdir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("accountsync-{name}-"))
            .tempdir()
            .expect("create temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        Workdir {
            dir,
            root,
            token: TOKEN.into(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("config.toml")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.path("cache")
    }

    pub fn reports_dir(&self) -> PathBuf {
        self.path("reports")
    }

    /// Writes `contents` to `rel` (parents created) and returns the absolute path.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        path
    }

    /// Writes `config.toml` from `conf`.
    pub fn configure(&self, conf: &Conf) -> PathBuf {
        self.write("config.toml", conf.render(&self.root))
    }

    /// `accountsync --config config.toml ARGS` with the token in the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(PRODUCT);
        cmd.current_dir(&self.root)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env_remove("ACCOUNTSYNC_CONFIG")
            .env_remove("ACCOUNTSYNC_LOG")
            .env(TOKEN_ENV, &self.token)
            .stdin(Stdio::null());
        cmd
    }

    /// `accountsync --config config.toml run ARGS`, to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        self.exec(self.command(&full))
    }

    /// Runs `cmd` to completion and picks up the report folder it created, if any.
    pub fn exec(&self, mut cmd: Command) -> Run {
        let before = self.run_dirs();
        let started = Instant::now();
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        self.finish(format!("{cmd:?}"), output, before, started)
    }

    /// Completes a [`Run`] of a process started with [`Workdir::command`] and `spawn`.
    pub fn wait(&self, cmdline: String, child: Child, before: BTreeSet<String>) -> Run {
        let output = child.wait_with_output().expect("wait for accountsync");
        self.finish(cmdline, output, before, Instant::now())
    }

    /// Starts `cmd` (from [`Workdir::command`]) with its stderr in `{name}.log`, so the test
    /// can watch the log while the process runs; [`Spawned::finish`] makes it a [`Run`].
    pub fn spawn_logged(&self, mut cmd: Command, name: &str) -> Spawned {
        let log = self.path(&format!("{name}.log"));
        let before = self.run_dirs();
        cmd.stdout(Stdio::piped())
            .stderr(File::create(&log).expect("create the log file"));
        let cmdline = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}"));
        Spawned {
            child,
            cmdline,
            log,
            before,
            started: Instant::now(),
        }
    }

    fn finish(
        &self,
        cmdline: String,
        output: Output,
        before: BTreeSet<String>,
        started: Instant,
    ) -> Run {
        let new: Vec<String> = self.run_dirs().difference(&before).cloned().collect();
        let mut run = Run {
            cmdline,
            output,
            report: None,
            elapsed: started.elapsed(),
        };
        assert!(
            new.len() <= 1,
            "one run made {} report folders {new:?}\n{run}",
            new.len()
        );
        run.report = new.first().map(|d| self.reports_dir().join(d));
        run
    }

    /// Names of the run folders under `reports/`.
    pub fn run_dirs(&self) -> BTreeSet<String> {
        match std::fs::read_dir(self.reports_dir()) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Every file under the cache directory with a hash of its bytes.
    pub fn cache_fingerprint(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out = BTreeMap::new();
        fingerprint(&self.cache_dir(), &self.cache_dir(), &mut out);
        out
    }
}

fn fingerprint(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u64, u64)>) {
    use std::hash::{DefaultHasher, Hasher};
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {dir:?}: {e}"))
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        if path.is_dir() {
            fingerprint(root, &path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
            let mut h = DefaultHasher::new();
            h.write(&bytes);
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            out.insert(rel, (bytes.len() as u64, h.finish()));
        }
    }
}

/// An `accountsync` process still running, its stderr going to a file.
pub struct Spawned {
    child: Child,
    cmdline: String,
    log: PathBuf,
    before: BTreeSet<String>,
    started: Instant,
}

impl Spawned {
    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its stderr contains `needle`; panics (showing the log) after `timeout`,
    /// or as soon as the process has exited without logging it.
    #[track_caller]
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            let exited = self.child.try_wait().expect("try_wait");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{needle:?} not logged ({}; {:?} after start)\ncommand: {}\n--- stderr\n{}",
                match exited {
                    Some(status) => format!("exited: {status}"),
                    None => "still running".to_owned(),
                },
                self.started.elapsed(),
                self.cmdline,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid, which has not been waited for yet (a
        // `Spawned` is consumed by `finish`, the only place that waits).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill failed: {}", std::io::Error::last_os_error());
    }

    /// Waits for the process to end; the [`Run`] has its stderr from the log file.
    pub fn finish(self, wd: &Workdir) -> Run {
        let mut output = self.child.wait_with_output().expect("wait for accountsync");
        output.stderr = std::fs::read(&self.log).unwrap_or_default();
        wd.finish(self.cmdline, output, self.before, self.started)
    }
}

/// One finished `accountsync` process.
pub struct Run {
    pub cmdline: String,
    pub output: Output,
    /// The report folder this run created.
    pub report: Option<PathBuf>,
    pub elapsed: Duration,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {}\nelapsed: {:?}\nreport: {:?}\n--- stdout\n{}\n--- stderr\n{}\n---",
            self.cmdline,
            self.output.status,
            self.elapsed,
            self.report,
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Asserts the exit status; the message has everything about the run.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(self.code(), Some(code), "unexpected exit status\n{self}");
        self
    }

    /// Asserts that stderr contains `needle`.
    #[track_caller]
    pub fn expect_stderr(&self, needle: &str) -> &Run {
        assert!(
            self.stderr().contains(needle),
            "stderr does not contain {needle:?}\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn report_dir(&self) -> &Path {
        self.report
            .as_deref()
            .unwrap_or_else(|| panic!("the run wrote no report folder\n{self}"))
    }

    #[track_caller]
    pub fn summary(&self) -> Value {
        let path = self.report_dir().join("summary.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}\n{self}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path:?}: {e}\n{text}"))
    }

    /// `errors.csv` rows as maps header -> cell.
    #[track_caller]
    pub fn errors(&self) -> Vec<BTreeMap<String, String>> {
        read_csv_maps(&self.report_dir().join("errors.csv"))
    }

    /// The one row of `errors.csv`, checked against `[file, line, accountreference, category,
    /// http_status]`; the row comes back for the rest of the test (the message).
    #[track_caller]
    pub fn only_error(&self, expected: [&str; 5]) -> BTreeMap<String, String> {
        let mut errors = self.errors();
        assert_eq!(errors.len(), 1, "{errors:#?}\n{self}");
        let e = errors.remove(0);
        let got = [
            "file",
            "line",
            "accountreference",
            "category",
            "http_status",
        ]
        .map(|k| e[k].as_str());
        assert_eq!(got, expected, "{e:?}\n{self}");
        e
    }

    /// `changes.csv` rows as maps header -> cell.
    #[track_caller]
    pub fn changes(&self) -> Vec<BTreeMap<String, String>> {
        read_csv_maps(&self.report_dir().join("changes.csv"))
    }

    /// A summary number (`"rows_read"`, `"retried_from_earlier_runs.updated"`).
    #[track_caller]
    pub fn count(&self, key: &str) -> u64 {
        let summary = self.summary();
        let mut v = &summary;
        for part in key.split('.') {
            v = &v[part];
        }
        v.as_u64()
            .unwrap_or_else(|| panic!("summary has no number {key}: {summary:#}\n{self}"))
    }

    /// Asserts the summary's bucket counts.
    #[track_caller]
    pub fn expect_counts(
        &self,
        rows_read: u64,
        unchanged: u64,
        updated: u64,
        rejected: u64,
        failed: u64,
    ) {
        let got =
            ["rows_read", "unchanged", "updated", "rejected", "failed"].map(|k| self.count(k));
        assert_eq!(
            got,
            [rows_read, unchanged, updated, rejected, failed],
            "summary counts [rows_read, unchanged, updated, rejected, failed]\n{:#}\n{self}",
            self.summary()
        );
    }
}

/// A report cell as the value it stands for. `errors.csv` and `changes.csv` put a `'` in
/// front of every cell that begins with `=`, `+`, `-`, `@`, TAB, CR or `'` (CSV injection);
/// removing one leading `'` gives the value back exactly.
pub fn original_cell(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

/// What a PATCH body carries for a report field (`email`, `addresses.home.street`,
/// `customparameters.loyaltytier`), as the report writes it (booleans as `true`/`false`).
pub fn body_value(body: &Value, field: &str) -> Option<String> {
    let value = if let Some(rest) = field.strip_prefix("addresses.") {
        let (kind, name) = rest.split_once('.')?;
        body.get("addresses")?
            .as_array()?
            .iter()
            .find(|a| a.get("addresstype").and_then(Value::as_str) == Some(kind))?
            .get(name)?
    } else if let Some(name) = field.strip_prefix("customparameters.") {
        body.get("customparameters")?.get(name)?
    } else {
        body.get(field)?
    };
    Some(match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Every `changes.csv` row of a real run is a value the API received: its `new` cell, with
/// the neutralising quote removed, is what a PATCH body for its reference carried. Returns
/// the rows that do not match, as readable lines.
pub fn changes_not_sent(changes: &[BTreeMap<String, String>], requests: &[Logged]) -> Vec<String> {
    let grouped = by_reference(requests);
    let mut out = Vec::new();
    for row in changes {
        let reference = original_cell(&row["accountreference"]);
        let field = original_cell(&row["field"]);
        let new = original_cell(&row["new"]);
        let sent: Vec<Option<String>> = grouped
            .get(reference)
            .map(|reqs| reqs.iter().map(|r| body_value(&r.body, field)).collect())
            .unwrap_or_default();
        if !sent.iter().any(|v| v.as_deref() == Some(new)) {
            out.push(format!(
                "line {} {reference:?} {field}: changes.csv says {:?} (read back as {new:?}), bodies sent held {sent:?}",
                row["line"], row["new"]
            ));
        }
    }
    out
}

/// Reads a CSV file (with header) into rows of header -> cell.
pub fn read_csv_maps(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    let headers = reader.headers().expect("csv header").clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("read {path:?}: {e}"));
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// Reads a CSV file into its header and rows of cells.
pub fn read_csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    let headers = reader
        .headers()
        .expect("csv header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| {
            r.unwrap_or_else(|e| panic!("read {path:?}: {e}"))
                .iter()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    (headers, rows)
}

/// Asserts two multisets of rows are equal, printing only the differences.
#[track_caller]
pub fn assert_same_rows(what: &str, mut actual: Vec<Vec<String>>, mut expected: Vec<Vec<String>>) {
    actual.sort();
    expected.sort();
    if actual == expected {
        return;
    }
    let mut missing = expected.clone();
    let mut extra = Vec::new();
    for row in &actual {
        match missing.iter().position(|e| e == row) {
            Some(i) => {
                missing.remove(i);
            }
            None => extra.push(row.clone()),
        }
    }
    let show = |rows: &[Vec<String>]| {
        rows.iter()
            .map(|r| format!("  {}", r.join(" | ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{what}: {} rows expected, {} found\nmissing:\n{}\nunexpected:\n{}",
        expected.len(),
        actual.len(),
        show(&missing),
        show(&extra)
    );
}

/// Polls `f` every 10 ms until it returns `Some`, or panics after `timeout`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Export text for [`SMALL_COLUMNS`]: `rows` of `(ref, email, first, last)`.
pub fn small_export(rows: &[(&str, &str, &str, &str)]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["ref", "email", "first", "last"])
        .expect("csv header");
    for (r, e, f, l) in rows {
        w.write_record([r, e, f, l]).expect("csv row");
    }
    String::from_utf8(w.into_inner().expect("csv flush")).expect("utf-8")
}

/// `n` clean rows `R001..`, with e-mails `r001@example.com..`.
pub fn numbered_export(prefix: &str, n: usize) -> String {
    let rows: Vec<(String, String)> = (1..=n)
        .map(|i| {
            (
                format!("{prefix}{i:03}"),
                format!("{}{i:03}@example.com", prefix.to_lowercase()),
            )
        })
        .collect();
    let refs: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|(r, e)| (r.as_str(), e.as_str(), "Ann", "Lee"))
        .collect();
    small_export(&refs)
}
