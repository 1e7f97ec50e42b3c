//! [`SpankHandle`], the safe wrapper of the `spank_t` of the running hook, and its [`Host`]
//! implementation: the job's ids, its environment, the option's value.
//!
//! Which environment a setting is read from is the policy's choice, made visible in
//! [`crate::hooks::env`]; this file only carries it out: [`Host::getenv`] reads the job's
//! environment in slurmstepd (`spank_getenv`) and this process's own elsewhere (sbatch, salloc
//! and srun run as the user, with the user's environment).

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};

use super::{c_string, option_description};
use crate::hooks::{Context, Host, HostError, Level, OptionState};
use crate::sys;
use crate::users::{self, Gid, Uid};

/// The safe wrapper of the `spank_t` of the running hook. It cannot be copied or kept: it lives
/// inside one `dispatch` call.
#[derive(Debug)]
pub struct SpankHandle {
    sp: NonNull<sys::spank_handle>,
    ctx: Context,
    /// The job's end time from slurmctld, asked at most once per hook.
    job_end: std::cell::OnceCell<Option<u64>>,
}

impl SpankHandle {
    /// # Safety
    /// `sp` must be NULL or the handle Slurm passed to the running hook, and the wrapper must be
    /// dropped before the hook returns.
    pub(super) unsafe fn new(sp: sys::spank_t, ctx: Context) -> Option<Self> {
        NonNull::new(sp).map(|sp| SpankHandle {
            sp,
            ctx,
            job_end: std::cell::OnceCell::new(),
        })
    }

    fn raw(&self) -> sys::spank_t {
        self.sp.as_ptr()
    }

    pub(super) fn register_option(&mut self) -> Result<(), HostError> {
        let mut opt = option_description();
        // SAFETY: the handle is the running hook's (type invariant); `opt` is a valid
        // spank_option whose strings are 'static and NUL-terminated; Slurm copies it.
        let rc = unsafe { sys::spank_option_register(self.raw(), &mut opt) };
        check(rc)
    }

    fn item_u32(&self, item: sys::spank_item_t) -> Option<u32> {
        debug_assert!(matches!(
            item,
            sys::spank_item::S_JOB_ID | sys::spank_item::S_JOB_STEPID
        ));
        let mut value: u32 = 0;
        // SAFETY: the handle is the running hook's; for S_JOB_ID and S_JOB_STEPID spank.h
        // documents the variadic argument as `uint32_t *`, and `value` outlives the call.
        let rc = unsafe { sys::spank_get_item(self.raw(), item, &mut value as *mut u32) };
        check(rc).ok().map(|()| value)
    }
}

/// Checks a spank_err_t.
fn check(rc: sys::spank_err_t) -> Result<(), HostError> {
    if rc == sys::ESPANK_SUCCESS {
        return Ok(());
    }
    // SAFETY: spank_strerror returns a pointer to a static string for any value (it has a
    // default case); it is NULL-checked and copied at once.
    let text = unsafe { c_string(sys::spank_strerror(rc)) };
    Err(HostError::Slurm {
        code: i64::from(rc),
        text: text.unwrap_or_default(),
    })
}

impl Host for SpankHandle {
    fn context(&self) -> Context {
        self.ctx
    }

    fn is_remote(&self) -> bool {
        // SAFETY: the handle is the running hook's (type invariant); spank_remote only reads it.
        (unsafe { sys::spank_remote(self.raw()) }) == 1
    }

    fn job_id(&self) -> Option<u32> {
        self.item_u32(sys::spank_item::S_JOB_ID)
    }

    fn job_uid(&self) -> Option<Uid> {
        let mut uid: libc::uid_t = 0;
        // SAFETY: the handle is the running hook's; for S_JOB_UID spank.h documents the
        // variadic argument as `uid_t *`, and `uid` outlives the call.
        let rc = unsafe {
            sys::spank_get_item(
                self.raw(),
                sys::spank_item::S_JOB_UID,
                &mut uid as *mut libc::uid_t,
            )
        };
        check(rc).ok().map(|()| Uid::new(uid))
    }

    fn job_gid(&self) -> Option<Gid> {
        let mut gid: libc::gid_t = 0;
        // SAFETY: the handle is the running hook's; for S_JOB_GID spank.h documents the
        // variadic argument as `gid_t *`, and `gid` outlives the call.
        let rc = unsafe {
            sys::spank_get_item(
                self.raw(),
                sys::spank_item::S_JOB_GID,
                &mut gid as *mut libc::gid_t,
            )
        };
        check(rc).ok().map(|()| Gid::new(gid))
    }

    fn step_id(&self) -> Option<u32> {
        self.item_u32(sys::spank_item::S_JOB_STEPID)
    }

    fn process_uid(&self) -> Uid {
        users::real_uid()
    }

    fn user_home(&self, uid: Uid) -> Option<PathBuf> {
        users::home_dir(uid)
    }

    fn getenv(&self, name: &str) -> Option<String> {
        if self.ctx != Context::Remote {
            // sbatch / salloc / srun: this process runs as the user with the user's environment.
            return std::env::var(name).ok();
        }
        let name = CString::new(name).ok()?;
        let mut len: usize = 4096;
        loop {
            let mut buf = vec![0u8; len];
            let c_len = c_int::try_from(len).ok()?;
            // SAFETY: the handle is the running hook's; `name` is a C string; `buf` is writable
            // for `c_len` bytes, and Slurm copies at most that many, NUL included (strlcpy),
            // answering ESPANK_NOSPACE when the value does not fit.
            let rc = unsafe {
                sys::spank_getenv(
                    self.raw(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast::<c_char>(),
                    c_len,
                )
            };
            match rc {
                sys::ESPANK_SUCCESS => {
                    let value = CStr::from_bytes_until_nul(&buf).ok()?;
                    return Some(value.to_string_lossy().into_owned());
                }
                sys::slurm_err_t::ESPANK_NOSPACE if len < (1 << 20) => len *= 8,
                _ => return None,
            }
        }
    }

    fn setenv(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        let name = CString::new(name).map_err(|_| HostError::Nul { what: "name" })?;
        let value = CString::new(value).map_err(|_| HostError::Nul { what: "value" })?;
        // SAFETY: the handle is the running hook's; both strings are valid C strings that
        // outlive the call; Slurm copies them into the job environment.
        let rc = unsafe { sys::spank_setenv(self.raw(), name.as_ptr(), value.as_ptr(), 1) };
        check(rc)
    }

    fn unsetenv(&mut self, name: &str) -> Result<(), HostError> {
        let name = CString::new(name).map_err(|_| HostError::Nul { what: "name" })?;
        // SAFETY: the handle is the running hook's; `name` is a C string that outlives the call.
        let rc = unsafe { sys::spank_unsetenv(self.raw(), name.as_ptr()) };
        check(rc)
    }

    fn remove_process_env(&mut self, name: &str) {
        if self.ctx != Context::Allocator {
            return;
        }
        // SAFETY: only in allocator context, i.e. inside sbatch or salloc during
        // spank_init_post_opt, before either starts any thread (salloc's signal and message
        // threads come after option processing); nothing else reads or writes the environment
        // concurrently.
        unsafe { std::env::remove_var(name) };
    }

    fn user_groups(&self, uid: Uid) -> Option<Vec<Gid>> {
        users::groups(uid)
    }

    fn group_id(&self, name: &str) -> Option<Gid> {
        users::group_by_name(name)
    }

    fn job_end_from_slurm(&self, squeue: &Path) -> Option<u64> {
        if self.ctx != Context::Remote {
            return None;
        }
        *self.job_end.get_or_init(|| {
            let job = self.job_id()?;
            // The daemon's own SLURM_CONF (root's), never the job's.
            let conf = crate::backend::daemon_env("SLURM_CONF");
            match slurm_jobinfo::query_end_time(
                squeue,
                job,
                conf.as_deref(),
                slurm_jobinfo::QUERY_TIMEOUT,
            ) {
                Ok(end) => Some(end),
                Err(e) => {
                    self.log(
                        Level::Verbose,
                        &format!("job={job}: the job's end time is unknown ({e})"),
                    );
                    None
                }
            }
        })
    }

    fn option_value(&self) -> OptionState {
        let mut opt = option_description();
        let mut arg: *mut c_char = ptr::null_mut();
        // SAFETY: the handle is the running hook's; `opt` is a valid spank_option with 'static
        // strings; `arg` is a valid out-pointer. Slurm sets it to NULL or to a string it owns
        // and keeps alive for the rest of the hook; it is copied at once below.
        let rc = unsafe { sys::spank_option_getopt(self.raw(), &mut opt, &mut arg) };
        if check(rc).is_err() {
            return OptionState::NotGiven;
        }
        // SAFETY: see above: NULL or a live C string owned by Slurm.
        OptionState::Given(unsafe { c_string(arg) })
    }

    fn log(&self, level: Level, msg: &str) {
        super::log::slurm_log(level.into(), msg);
    }
}
