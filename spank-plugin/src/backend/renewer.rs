//! The renewer of a job's token file (`qlam-auth job-renewer`), seen from the plugin: its
//! command line, its status file (read as root in the user's directory, trusted for nothing but
//! a pid checked against /proc and text for the log), and stopping it before the job's
//! directory goes.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use super::RenewerSpec;
use crate::args::Args;

/// The arguments of `qlam-auth job-renewer` for `spec` (no secret among them: every local user
/// can read a process's arguments).
pub fn renewer_args(spec: &RenewerSpec, args: &Args) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "job-renewer".into(),
        "--job".into(),
        spec.job.to_string().into(),
        "--dir".into(),
        spec.dir.clone().into(),
        "--file".into(),
        spec.file_name.clone().into(),
        "--home".into(),
        spec.home.clone().into(),
        "--renew-at".into(),
        args.renew_at.to_string().into(),
        "--timeout".into(),
        args.timeout.as_secs().to_string().into(),
        "--lock-timeout".into(),
        args.lock_timeout().as_secs().to_string().into(),
    ];
    if let Some(c) = &spec.context {
        v.extend(["--context".into(), c.clone().into()]);
    }
    if let Some(e) = spec.end_time {
        v.extend(["--end-time".into(), e.to_string().into()]);
    }
    if let Some(q) = args.squeue_path() {
        v.extend(["--squeue".into(), q.into()]);
    }
    if let Some(ca) = &args.ca_bundle {
        v.extend(["--ca-bundle".into(), ca.clone().into()]);
    }
    v.extend(["--site-file".into(), args.site_file.clone().into()]);
    for i in args.issuers.iter().flatten() {
        v.extend(["--issuer".into(), i.clone().into()]);
    }
    if let Some(ex) = &spec.exchange {
        v.push("--exchange".into());
        if let Some(a) = &ex.audience {
            v.extend(["--exchange-audience".into(), a.clone().into()]);
        }
        if let Some(s) = &ex.scope {
            v.extend(["--exchange-scope".into(), s.clone().into()]);
        }
        if let Some(l) = ex.lifetime {
            v.extend([
                "--exchange-max-lifetime".into(),
                l.as_secs().to_string().into(),
            ]);
        }
    }
    v
}

/// How long the removal of a job directory waits for its renewers to end.
pub const RENEWER_STOP_WAIT: Duration = Duration::from_secs(3);

/// As root, before `dir` is removed: SIGTERM to every renewer that wrote a status file in it
/// (the pid in `<file>.status`, checked against /proc: a `job-renewer` of this job), then wait
/// at most `wait` for all of them to end. Returns how many were stopped.
pub fn stop_renewers(dir: &Path, job: &str, wait: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut pids = Vec::new();
    for e in entries.flatten().take(64) {
        let name = e.file_name();
        if !name.to_string_lossy().ends_with(".status") {
            continue;
        }
        let pid = status_of(&e.path())
            .and_then(|v| v.get("pid").and_then(|p| p.as_u64()))
            .and_then(|p| u32::try_from(p).ok());
        if let Some(pid) = pid.filter(|p| is_renewer_of(*p, job))
            && crate::spawn::terminate(pid)
        {
            pids.push(pid);
        }
    }
    let until = Instant::now() + wait;
    while pids.iter().any(|p| alive(*p)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.len()
}

/// A renewer's status file, read by root in the user's job directory: never following a link,
/// never blocking on a FIFO, at most 64 KiB; `None` if absent or not JSON. Nothing in it is
/// trusted beyond a pid that is then checked against /proc, and text for the log.
pub(super) fn status_of(path: &Path) -> Option<serde_json::Value> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(64 * 1024).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// True if `pid` runs `qlam-auth job-renewer --job JOB ...`.
fn is_renewer_of(pid: u32, job: &str) -> bool {
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
    args.contains(&&b"job-renewer"[..])
        && args
            .windows(2)
            .any(|w| w[0] == b"--job" && w[1] == job.as_bytes())
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_renewers_of_a_job_are_stopped_before_its_directory_goes_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        // Looks like `qlam-auth job-renewer --job JOB` in /proc/PID/cmdline; ends by itself
        // after 30 s at the latest.
        let fake = |job: &str| {
            let child = std::process::Command::new("sh")
                .args([
                    "-c",
                    "for i in $(seq 600); do sleep 0.05; done",
                    "job-renewer",
                    "--job",
                    job,
                ])
                .spawn()
                .unwrap();
            // spawn returns once execve has released the parent, which can be before the
            // kernel has set up the new command line: until then /proc/PID/cmdline is empty.
            let ready = Instant::now() + Duration::from_secs(5);
            while !is_renewer_of(child.id(), job) && Instant::now() < ready {
                std::thread::sleep(Duration::from_millis(5));
            }
            child
        };
        let write = |name: &str, pid: u32| {
            std::fs::write(
                tmp.path().join(name),
                format!("{{\"state\":\"ok\",\"pid\":{pid}}}"),
            )
            .unwrap()
        };
        let mut renewer = fake("42");
        let mut other = fake("7");
        write("token.status", renewer.id());
        // A status file naming a process that is not a renewer of this job: left alone.
        write("token-x.status", std::process::id());
        write("token-y.status", other.id());
        let started = Instant::now();
        let stopped = stop_renewers(tmp.path(), "42", Duration::from_secs(3));
        let took = started.elapsed();
        let renewer_gone = !alive(renewer.id());
        let other_alive = alive(other.id());
        for c in [&mut renewer, &mut other] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(stopped, 1, "only the renewer of job 42 is stopped");
        assert!(renewer_gone, "it has ended");
        assert!(took < Duration::from_secs(3), "within the bound: {took:?}");
        assert!(other_alive, "another job's renewer is not ours to stop");
    }
}
