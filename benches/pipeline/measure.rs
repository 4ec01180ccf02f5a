//! Running the two binaries and measuring them: each child's own peak RSS and CPU time
//! (`wait4`), this process's (`VmHWM`), and the sandbox the real run talks to.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{BenchResult, Step, TOKEN, entries, mb, new_entries, slug};

/// What the kernel reports about a finished child (or this process).
#[derive(Clone, Copy, Default)]
pub(crate) struct Usage {
    pub(crate) peak_rss_kib: u64,
    pub(crate) cpu: Duration,
}

impl Usage {
    pub(crate) fn of(ru: &libc::rusage) -> Usage {
        let tv = |t: libc::timeval| {
            Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
        };
        Usage {
            // Linux reports ru_maxrss in KiB.
            peak_rss_kib: u64::try_from(ru.ru_maxrss).unwrap_or(0),
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        }
    }

    pub(crate) fn of_self() -> Usage {
        // SAFETY: getrusage only writes the struct it is given; all-zero is a valid rusage.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a live rusage.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
            return Usage::default();
        }
        Usage::of(&ru)
    }
}

/// Waits for `child` with `wait4`, which hands back that one child's resource usage: its own
/// peak RSS (`ru_maxrss`, the kernel's high-water mark, so nothing between two samples is
/// missed as polling `/proc/PID/status` could) and CPU time. `getrusage(RUSAGE_CHILDREN)`
/// would not do: it reports the largest of *all* reaped children so far, so a small run
/// after a big one would inherit the big one's peak. (`ru_maxrss` survives `execve`, so a
/// child's figure is at least this bench's RSS when it was spawned: a few MB, as the
/// generator streams and nothing here holds the file.) The `Child` is not waited by std
/// afterwards (it would find nothing to reap); dropping it only closes its pipes.
pub(crate) fn wait_with_usage(child: Child) -> io::Result<(i32, Usage)> {
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    let mut status = 0;
    // SAFETY: all-zero is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pointers to live locals; pid is our own unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((code, Usage::of(&ru)))
}

/// This process's peak RSS in KiB since the last [`reset_peak_rss`], from `VmHWM` in
/// `/proc/self/status`. Not `getrusage(RUSAGE_SELF)`: Linux carries `ru_maxrss` across
/// `execve`, so it would report cargo's own peak (the process that spawned this bench).
pub(crate) fn own_peak_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0; without it the peak includes the generator,
/// which streams and stays small).
pub(crate) fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Private copies of the two binaries.
pub(crate) struct Bins {
    accountsync: PathBuf,
    sandbox: PathBuf,
}

impl Bins {
    pub(crate) fn snapshot(dir: &Path) -> io::Result<Bins> {
        let bin = dir.join("bin");
        fs::create_dir_all(&bin)?;
        let copy = |from: &str, name: &str| -> io::Result<PathBuf> {
            let to = bin.join(name);
            fs::copy(from, &to)?; // keeps the executable bit
            Ok(to)
        };
        Ok(Bins {
            accountsync: copy(env!("CARGO_BIN_EXE_accountsync"), "accountsync")?,
            sandbox: copy(
                env!("CARGO_BIN_EXE_accountsync-sandbox"),
                "accountsync-sandbox",
            )?,
        })
    }
}

/// Runs `accountsync run [--dry-run] FILE` and returns its step and its `summary.json`.
pub(crate) fn accountsync(
    bins: &Bins,
    config: &Path,
    export: &Path,
    dry_run: bool,
    label: &str,
) -> BenchResult<(Step, Value)> {
    let reports = config.with_file_name("reports");
    let before = entries(&reports);
    let stderr = File::create(config.with_file_name(format!("{}.stderr", slug(label))))?;
    let mut cmd = Command::new(&bins.accountsync);
    cmd.arg("--config").arg(config).arg("run");
    if dry_run {
        cmd.arg("--dry-run");
    }
    cmd.arg(export)
        .env("ACCOUNTSYNC_TOKEN", TOKEN)
        .env_remove("ACCOUNTSYNC_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let started = Instant::now();
    let child = cmd.spawn()?;
    let (code, usage) = wait_with_usage(child)?;
    let wall = started.elapsed();
    let summary = new_entries(&reports, &before)
        .into_iter()
        .map(|d| d.join("summary.json"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{label}: accountsync exited {code} without a summary.json; see {}",
                config
                    .with_file_name(format!("{}.stderr", slug(label)))
                    .display()
            )
        })?;
    let summary: Value = serde_json::from_slice(&fs::read(summary)?)?;
    let rows = summary["rows_read"].as_u64().unwrap_or(0);
    if code != 0 {
        eprintln!("  {label}: exit status {code} (expected 0)");
    }
    eprintln!(
        "  {:.1} s, {:.0} rows/s, peak RSS {:.1} MB",
        wall.as_secs_f64(),
        rows as f64 / wall.as_secs_f64().max(1e-9),
        mb(usage.peak_rss_kib * 1024)
    );
    Ok((
        Step {
            label: label.into(),
            rows,
            wall,
            peak_rss_kib: usage.peak_rss_kib,
            cpu: usage.cpu,
        },
        summary,
    ))
}

/// A running `accountsync-sandbox` on a free port.
pub(crate) struct Sandbox {
    child: Child,
    pub(crate) base_url: String,
    /// Kept open: the sandbox writes nothing more to stdout, but must not meet a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Sandbox {
    pub(crate) fn start(bins: &Bins, dir: &Path) -> BenchResult<Sandbox> {
        let mut child = Command::new(&bins.sandbox)
            .args(["--listen", "127.0.0.1:0", "--token", TOKEN])
            .args([
                "--custom-parameters",
                "loyaltytier,preferredstore,referralcode",
            ])
            // A million logged requests with their bodies would take gigabytes.
            .arg("--no-request-log")
            .env_remove("SANDBOX_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(dir.join("sandbox.stderr"))?)
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("sandbox stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the sandbox said {line:?}, expected `listening on http://…`; see {}",
                dir.join("sandbox.stderr").display()
            )
            .into());
        };
        Ok(Sandbox {
            base_url: format!("http://{addr}/rest/api"),
            child,
            _stdout: stdout,
        })
    }

    /// SIGTERM (graceful shutdown), then its resource usage over its whole life.
    pub(crate) fn stop(self) -> BenchResult<Usage> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: signals our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let (_, usage) = wait_with_usage(self.child)?;
        Ok(usage)
    }
}
