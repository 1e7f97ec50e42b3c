//! Starting the token renewer (`qlam-auth job-renewer`) from slurmstepd's `user_init`.
//!
//! slurmstepd is multi-threaded and runs as root with the job user's effective uid in
//! `user_init`; it blocks SIGTERM and may ignore other signals; it holds descriptors the job must
//! never see. So the child, between fork and exec, and doing only async-signal-safe system calls:
//! * starts a new session and forks again: the renewer is not slurmstepd's child (slurmstepd
//!   never has to reap it, and it outlives a step that ends while others of the job still run on
//!   the node; it ends by itself when the job has ended here);
//! * resets every signal to its default action and unblocks all signals (AUKS's renewer once
//!   inherited slurmstepd's blocked SIGTERM and jobs hung in COMPLETING);
//! * becomes the job's user for good (`setresgid`, `setresuid`: real, effective and saved ids,
//!   so it cannot become root again; the supplementary groups are already the user's, set by
//!   slurmstepd before `user_init`);
//! * marks every inherited descriptor above stderr close-on-exec (`close_range`), and gets
//!   `/dev/null` as stdin, stdout and stderr;
//! * then execs the renewer with a clean environment: only what the caller passes.
//!
//! No thread is started, and the only process left behind is the renewer itself.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::users::{Gid, Uid};

/// What to run, as whom.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// The program (absolute path).
    pub program: PathBuf,
    /// Its arguments (never a secret: every local user can read them in /proc).
    pub args: Vec<OsString>,
    /// Its whole environment.
    pub env: Vec<(OsString, OsString)>,
    /// The user it runs as.
    pub uid: Uid,
    /// The group it runs as.
    pub gid: Gid,
}

/// Starts `spec` detached (double fork) and returns once the intermediate child has exited,
/// i.e. when the renewer has been forked; `Err` if the program could not be started.
pub fn detached(spec: &Spawn) -> io::Result<()> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if spec.uid.is_root() {
        return Err(io::Error::other("refusing to start the renewer as root"));
    }
    let (uid, gid) = (spec.uid.get(), spec.gid.get());
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // functions may be called. It calls only system-call wrappers (setsid, fork, _exit,
    // sigaction via signal, sigprocmask, setresgid, setresuid, close_range) on integers it
    // captured by value; it allocates nothing and takes no lock. `io::Error::last_os_error`
    // reads errno only.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => return Err(io::Error::last_os_error()),
                0 => {}
                // The intermediate child: its parent (slurmstepd) reaps it at once.
                _ => libc::_exit(0),
            }
            for sig in 1..libc::SIGRTMIN() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setresgid(gid, gid, gid) != 0 || libc::setresuid(uid, uid, uid) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Never root again: if this succeeded, the ids above did not stick.
            if libc::setresuid(0, 0, 0) == 0 {
                return Err(io::Error::other("could not drop root"));
            }
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // The intermediate child exits right after the second fork.
    let status = child.wait()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the renewer's intermediate process ended with {status}"
        )))
    }
}

/// Sends SIGTERM to `pid` (a renewer found by [`crate::backend`] before it removes a job's
/// directory). `false` if there is no such process or it may not be signalled.
pub fn terminate(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    unsafe { libc::kill(pid, libc::SIGTERM) == 0 }
}
