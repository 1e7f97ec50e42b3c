//! slurm-jobinfo: a Slurm job's end time, from slurmctld itself.
//!
//! Slurm 23.02 and later put `SLURM_JOB_END_TIME` into the job's environment; Slurm 22.05 does
//! not, and on any release a variable of the job's environment is the user's to set (sbatch
//! copies the submitter's environment). The end time decides how long a job token may live and
//! how long the user's token must stay valid, so the plugin asks slurmctld, the authority:
//! `squeue --noheader --jobs=ID --format=%e` with `SLURM_TIME_FORMAT=%s`, which prints the end
//! time (start plus time limit) as Unix seconds.
//!
//! The query runs as a child process in the calling thread, with a clean environment (a fixed
//! `PATH`, the daemon's own `SLURM_CONF` if it has one, never the job's), no stdin, stderr
//! discarded, at most [`MAX_OUTPUT`] bytes read, and killed at its deadline. Any failure gives
//! `None` with the reason, and the caller decides (the plugin falls back to the job's `SLURM_JOB_END_TIME`; the renewer keeps
//! the end it was given).
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `squeue` may take before it is killed.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// The most output read from `squeue` (one line is expected).
pub const MAX_OUTPUT: u64 = 4096;

/// Where `squeue` is looked for when plugstack `squeue=` is not given.
pub const DEFAULT_SQUEUE: [&str; 3] = [
    "/usr/bin/squeue",
    "/usr/local/bin/squeue",
    "/opt/slurm/bin/squeue",
];

/// The `squeue` to run when none is configured: the first of [`DEFAULT_SQUEUE`] that exists.
pub fn default_squeue() -> Option<PathBuf> {
    DEFAULT_SQUEUE
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Why the end time could not be learned from Slurm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// `squeue` could not be started.
    Spawn(String),
    /// It did not finish within its deadline (and was killed).
    TimedOut(Duration),
    /// It exited unsuccessfully.
    Failed(Option<i32>),
    /// Its output was not an end time (e.g. `Unknown` for a job without one).
    NoEndTime,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Spawn(e) => {
                write!(f, "could not run squeue: {e} (set plugstack squeue=PATH)")
            }
            QueryError::TimedOut(d) => write!(f, "squeue did not answer within {}s", d.as_secs()),
            QueryError::Failed(Some(c)) => write!(f, "squeue exited with status {c}"),
            QueryError::Failed(None) => write!(f, "squeue was killed by a signal"),
            QueryError::NoEndTime => write!(f, "squeue reported no end time for the job"),
        }
    }
}

/// Asks slurmctld (through `squeue`) for the end time of `job`, in Unix seconds.
pub fn query_end_time(
    squeue: &Path,
    job: u32,
    slurm_conf: Option<&str>,
    timeout: Duration,
) -> Result<u64, QueryError> {
    let mut cmd = Command::new(squeue);
    cmd.arg("--noheader")
        .arg(format!("--jobs={job}"))
        .arg("--format=%e")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("SLURM_TIME_FORMAT", "%s")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(conf) = slurm_conf.filter(|c| !c.is_empty()) {
        cmd.env("SLURM_CONF", conf);
    }
    let mut child = cmd.spawn().map_err(|e| QueryError::Spawn(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            // Someone else reaped it (ECHILD): its output is still in the pipe.
            Err(_) => break None,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(QueryError::TimedOut(timeout));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    if let Some(status) = status.filter(|s| !s.success()) {
        return Err(QueryError::Failed(status.code()));
    }
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = stdout.take(MAX_OUTPUT).read_to_string(&mut out);
    }
    parse_end_time(&out).ok_or(QueryError::NoEndTime)
}

/// The end time in `squeue --format=%e` output under `SLURM_TIME_FORMAT=%s`: the first line,
/// a positive number of seconds. `Unknown`, `N/A`, `NONE` or garbage give `None`.
pub fn parse_end_time(out: &str) -> Option<u64> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    line.parse::<u64>().ok().filter(|t| *t > 0)
}

/// For tests of this crate and its callers: a stand-in for `squeue`, to show what a caller does
/// with what squeue prints, with its exit status, and with one that never answers (the real
/// squeue is exercised by the e2e suite, case x1).
#[doc(hidden)]
pub mod testing {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    /// Writes `dir/squeue`, a shell script running `body`. The file is written by a child
    /// process, so no descriptor open for writing can leak into a process that another test
    /// thread forks meanwhile (which would make executing it fail with "Text file busy").
    pub fn fake_squeue(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("squeue");
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg("cat > \"$1\" && chmod 755 \"$1\"")
            .arg("sh")
            .arg(&p)
            .stdin(Stdio::piped())
            .spawn()
            .expect("/bin/sh");
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(format!("#!/bin/sh\n{body}\n").as_bytes())
                .expect("write the script");
        }
        assert!(child.wait().expect("wait for /bin/sh").success());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_squeue_prints() {
        assert_eq!(parse_end_time("1764590400\n"), Some(1_764_590_400));
        assert_eq!(
            parse_end_time("  1764590400  \n1764590999\n"),
            Some(1_764_590_400)
        );
        assert_eq!(parse_end_time("\n1764590400\n"), Some(1_764_590_400));
        for none in [
            "",
            "\n",
            "Unknown\n",
            "N/A",
            "NONE",
            "0",
            "-5",
            "2026-12-01T11:00:00",
            "17645x",
        ] {
            assert_eq!(parse_end_time(none), None, "{none:?}");
        }
    }

    use crate::testing::fake_squeue;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qlam-joblimit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn runs_squeue_with_a_clean_environment_and_the_job_id() {
        let d = tempdir("args");
        let log = d.join("seen");
        let q = fake_squeue(
            &d,
            &format!(
                "echo \"$* fmt=$SLURM_TIME_FORMAT conf=$SLURM_CONF home=${{HOME:-unset}}\" > {}\necho 1764590400",
                log.display()
            ),
        );
        let got = query_end_time(&q, 4242, Some("/etc/slurm/x.conf"), QUERY_TIMEOUT);
        assert_eq!(got, Ok(1_764_590_400));
        let seen = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            seen.trim(),
            "--noheader --jobs=4242 --format=%e fmt=%s conf=/etc/slurm/x.conf home=unset"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn failures_are_reported_not_guessed() {
        let d = tempdir("fail");
        let q = fake_squeue(
            &d,
            "echo 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1",
        );
        assert_eq!(
            query_end_time(&q, 1, None, QUERY_TIMEOUT),
            Err(QueryError::Failed(Some(1)))
        );
        let q = fake_squeue(&d, "echo Unknown");
        assert_eq!(
            query_end_time(&q, 1, None, QUERY_TIMEOUT),
            Err(QueryError::NoEndTime)
        );
        let missing = d.join("no-such-squeue");
        assert!(matches!(
            query_end_time(&missing, 1, None, QUERY_TIMEOUT),
            Err(QueryError::Spawn(_))
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_squeue_that_hangs_is_killed_at_its_deadline() {
        let d = tempdir("hang");
        let q = fake_squeue(&d, "exec sleep 30");
        let t0 = Instant::now();
        let got = query_end_time(&q, 1, None, Duration::from_millis(300));
        assert_eq!(got, Err(QueryError::TimedOut(Duration::from_millis(300))));
        // A bound, not a timing measurement: it returned long before the child would have.
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        let _ = std::fs::remove_dir_all(&d);
    }
}
