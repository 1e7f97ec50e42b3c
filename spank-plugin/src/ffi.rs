//! What Slurm loads: the plugin symbols, the `slurm_spank_*` hooks and the option callback.
//!
//! Every exported function is one line into [`dispatch`], which catches panics (no panic ever
//! crosses into C), logs, and returns an error code only where that fails a submission or a job,
//! never where it would drain the node. [`SpankHandle`] is the safe wrapper of a `spank_t` and
//! implements [`Host`] for the policy in [`crate::hooks`].
//!
//! All hand-written unsafe code of the plugin is in this module; each block says why it is sound.

use std::ffi::{CStr, CString, OsStr, c_char, c_int, c_uint};
use std::os::unix::ffi::OsStrExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::{Mutex, Once};

use crate::broker::TokenCore;
use crate::hooks::{self, Context, Host, HostError, Level, OptionState, State, Verdict};
use crate::sys;

// ---------------------------------------------------------------------------------------------
// The symbols Slurm's plugin loader reads (see SPANK_PLUGIN in spank.h): `const char
// plugin_name[]`, `const char plugin_type[]`, `const unsigned int plugin_version`. Slurm takes
// the address of the first two as C strings, so they are NUL-terminated byte arrays.

/// `plugin_name`: [`crate::PLUGIN_NAME`], NUL-terminated.
#[allow(non_upper_case_globals)] // Slurm looks the symbol up by this name.
#[unsafe(no_mangle)]
pub static plugin_name: [u8; crate::PLUGIN_NAME.len() + 1] = nul_terminated(crate::PLUGIN_NAME);

/// `plugin_type`: always `spank`.
#[allow(non_upper_case_globals)] // Slurm looks the symbol up by this name.
#[unsafe(no_mangle)]
pub static plugin_type: [u8; 6] = nul_terminated("spank");

/// `plugin_version`: the `SLURM_VERSION_NUMBER` of the headers the plugin was built with; Slurm
/// refuses the plugin unless major and minor match its own.
#[allow(non_upper_case_globals)] // Slurm looks the symbol up by this name.
#[unsafe(no_mangle)]
pub static plugin_version: c_uint = sys::SLURM_VERSION_NUMBER;

const fn nul_terminated<const N: usize>(s: &str) -> [u8; N] {
    let bytes = s.as_bytes();
    assert!(
        bytes.len() + 1 == N,
        "array length must be the string length + 1"
    );
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i] != 0, "no NUL inside a plugin symbol string");
        out[i] = bytes[i];
        i += 1;
    }
    out
}

// The policy's copy of SLURM_BATCH_SCRIPT must match the headers.
const _: () = assert!(hooks::BATCH_STEP == sys::SLURM_BATCH_SCRIPT);

// ---------------------------------------------------------------------------------------------
// The hooks. Each is a one-liner into `dispatch`.

/// Which hook is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Init,
    InitPostOpt,
    UserInit,
    TaskInit,
    JobEpilog,
    Exit,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Init => "init",
            Hook::InitPostOpt => "init_post_opt",
            Hook::UserInit => "user_init",
            Hook::TaskInit => "task_init",
            Hook::JobEpilog => "job_epilog",
            Hook::Exit => "exit",
        }
    }
}

/// Exports one SPANK hook: a one-line `extern "C"` entry into [`dispatch`], which catches panics
/// and turns the policy's verdict into Slurm's return code.
macro_rules! export_hook {
    ($(#[$doc:meta])* $name:ident => $hook:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Called by Slurm only: `sp` is the handle of the running hook, `av` holds `ac` C strings.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(sp: sys::spank_t, ac: c_int, av: *mut *mut c_char) -> c_int {
            // SAFETY: the arguments are Slurm's, passed on unchanged (this function's contract).
            unsafe { dispatch($hook, sp, ac, av) }
        }
    };
}

export_hook!(
    /// `slurm_spank_init`: registers `--qlam-auth` (allocator, local and remote context).
    slurm_spank_init => Hook::Init
);
export_hook!(
    /// `slurm_spank_init_post_opt`: the submission check, or the job's token directory.
    slurm_spank_init_post_opt => Hook::InitPostOpt
);
export_hook!(
    /// `slurm_spank_user_init`: obtains and delivers the token (remote, as the job's user).
    slurm_spank_user_init => Hook::UserInit
);
export_hook!(
    /// `slurm_spank_task_init`: fails the job if an earlier hook could not deliver the token.
    slurm_spank_task_init => Hook::TaskInit
);
export_hook!(
    /// `slurm_spank_job_epilog`: removes the job's token directory (slurmd, root).
    slurm_spank_job_epilog => Hook::JobEpilog
);
export_hook!(
    /// `slurm_spank_exit`: the batch step removes the job's token directory.
    slurm_spank_exit => Hook::Exit
);

/// The `--qlam-auth` callback: Slurm calls it when it parses the option (allocator, local:
/// `remote` = 0, `optarg` NULL for the bare flag) or receives it (remote: `optarg` `""` for the
/// bare flag). A negative return in sbatch stops the submission.
///
/// # Safety
/// Called by Slurm only: `optarg` is NULL or a C string.
unsafe extern "C" fn option_callback(_val: c_int, optarg: *const c_char, _remote: c_int) -> c_int {
    let outcome = panic::catch_unwind(|| {
        // SAFETY: `optarg` is NULL or a NUL-terminated string that Slurm keeps alive for the
        // duration of the callback (this function's contract); it is copied at once.
        let value = unsafe { c_string(optarg) };
        let mut state = load_state();
        let verdict = hooks::option_callback(
            &|level, msg| slurm_log(level.into(), msg),
            &mut state,
            value.as_deref(),
        );
        store_state(state);
        verdict
    });
    match outcome {
        Ok(v) => verdict_code(v),
        Err(_) => {
            slurm_log(
                SlurmLevel::Error,
                "internal error (panic) while checking --qlam-auth",
            );
            -1
        }
    }
}

/// Runs one hook: never lets a panic cross into C, and turns the policy's verdict into Slurm's
/// return code.
///
/// # Safety
/// `sp` is the handle Slurm passed to the running hook; `av` is NULL or holds `ac` C strings.
unsafe fn dispatch(hook: Hook, sp: sys::spank_t, ac: c_int, av: *mut *mut c_char) -> c_int {
    let ctx = current_context();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        install_log_bridge();
        // SAFETY: `av` is NULL or holds `ac` C strings (this function's contract).
        let argv = unsafe { read_argv(ac, av) };
        // SAFETY: `sp` is the running hook's handle (this function's contract); the wrapper is
        // dropped before this function returns.
        let Some(mut handle) = (unsafe { SpankHandle::new(sp, ctx) }) else {
            slurm_log(
                SlurmLevel::Error,
                &format!("{}: Slurm passed no handle", hook.name()),
            );
            return Verdict::Continue;
        };
        run(hook, &mut handle, &argv)
    }));
    match outcome {
        Ok(v) => verdict_code(v),
        Err(_) => panic_code(hook, ctx),
    }
}

fn run(hook: Hook, handle: &mut SpankHandle, argv: &[String]) -> Verdict {
    // The state is copied out and back so that no lock is held while a hook runs (Slurm could
    // call the option callback from inside a spank_* call in some future version).
    let mut state = load_state();
    let verdict = match hook {
        Hook::Init => {
            if let Err(e) = handle.register_option() {
                handle.log(
                    Level::Error,
                    &format!("could not register --{}: {}", crate::OPTION_NAME, e.0),
                );
            }
            Verdict::Continue
        }
        Hook::InitPostOpt => hooks::init_post_opt(handle, &TokenCore, &mut state, argv),
        Hook::UserInit => hooks::user_init(handle, &TokenCore, &mut state, argv),
        Hook::TaskInit => hooks::task_init(handle, &state),
        Hook::JobEpilog => hooks::job_epilog(handle, &TokenCore, argv),
        Hook::Exit => hooks::exit(handle, &TokenCore, &state, argv),
    };
    store_state(state);
    verdict
}

fn verdict_code(v: Verdict) -> c_int {
    match v {
        Verdict::Continue => 0,
        Verdict::Fail => -1,
    }
}

/// After a panic: fail where that stops only a submission or a job; elsewhere remember the
/// failure for `task_init` and return success, so the node is not drained.
fn panic_code(hook: Hook, ctx: Context) -> c_int {
    slurm_log(
        SlurmLevel::Error,
        &format!(
            "internal error (panic) in {}; please tell your site admins",
            hook.name()
        ),
    );
    match (hook, ctx) {
        (Hook::TaskInit, _) => -1,
        (Hook::InitPostOpt, Context::Allocator | Context::Local) => -1,
        _ => {
            let mut state = load_state();
            state.failure.get_or_insert_with(|| {
                format!(
                    "internal error in the qlam-auth plugin ({}); please tell your site admins",
                    hook.name()
                )
            });
            store_state(state);
            0
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Process-global state: plain data behind a mutex; a poisoned lock is used as it is, so a panic
// can never turn into "every later hook fails".

static STATE: Mutex<State> = Mutex::new(State::new());

fn load_state() -> State {
    STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

fn store_state(state: State) {
    *STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
}

// ---------------------------------------------------------------------------------------------
// The option.

const OPTION_NAME_C: &CStr = c"qlam-auth";
const OPTION_ARGINFO: &CStr = c"[CONTEXT]";
const OPTION_USAGE: &CStr = c"Give the job a valid OAuth access token from your qlam-auth login: \
the file named by $QLAM_TOKEN_FILE and $BEARER_TOKEN_FILE (and $QLAM_ACCESS_TOKEN where the site \
allows). CONTEXT picks the qsh context (default: the current one). Log in first with \
`qlam-auth login`; check with `qlam-auth status`.";
/// `has_arg = 2`: the value is optional (`--qlam-auth` or `--qlam-auth=CONTEXT`).
const OPTIONAL_ARGUMENT: c_int = 2;

/// The option description. Slurm copies every string (`spank_option_register`) or only reads
/// them (`spank_option_getopt`); they are `'static` anyway.
fn option_description() -> sys::spank_option {
    sys::spank_option {
        name: OPTION_NAME_C.as_ptr().cast_mut(),
        arginfo: OPTION_ARGINFO.as_ptr().cast_mut(),
        usage: OPTION_USAGE.as_ptr().cast_mut(),
        has_arg: OPTIONAL_ARGUMENT,
        val: 0,
        cb: Some(option_callback),
    }
}

// ---------------------------------------------------------------------------------------------
// The handle.

/// The safe wrapper of the `spank_t` of the running hook. It cannot be copied or kept: it lives
/// inside one [`dispatch`] call.
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
    unsafe fn new(sp: sys::spank_t, ctx: Context) -> Option<Self> {
        NonNull::new(sp).map(|sp| SpankHandle {
            sp,
            ctx,
            job_end: std::cell::OnceCell::new(),
        })
    }

    fn raw(&self) -> sys::spank_t {
        self.sp.as_ptr()
    }

    fn register_option(&mut self) -> Result<(), HostError> {
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
    Err(HostError(format!(
        "{} (spank error {rc})",
        text.unwrap_or_default()
    )))
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

    fn job_uid(&self) -> Option<u32> {
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
        check(rc).ok().map(|()| uid)
    }

    fn job_gid(&self) -> Option<u32> {
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
        check(rc).ok().map(|()| gid)
    }

    fn step_id(&self) -> Option<u32> {
        self.item_u32(sys::spank_item::S_JOB_STEPID)
    }

    fn process_uid(&self) -> u32 {
        // SAFETY: getuid has no preconditions and cannot fail.
        unsafe { libc::getuid() }
    }

    fn user_home(&self, uid: u32) -> Option<PathBuf> {
        home_of(uid)
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
        let name = CString::new(name).map_err(|_| HostError("NUL in variable name".to_owned()))?;
        let value =
            CString::new(value).map_err(|_| HostError("NUL in variable value".to_owned()))?;
        // SAFETY: the handle is the running hook's; both strings are valid C strings that
        // outlive the call; Slurm copies them into the job environment.
        let rc = unsafe { sys::spank_setenv(self.raw(), name.as_ptr(), value.as_ptr(), 1) };
        check(rc)
    }

    fn unsetenv(&mut self, name: &str) -> Result<(), HostError> {
        let name = CString::new(name).map_err(|_| HostError("NUL in variable name".to_owned()))?;
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

    fn user_groups(&self, uid: u32) -> Option<Vec<u32>> {
        groups_of(uid)
    }

    fn group_id(&self, name: &str) -> Option<u32> {
        gid_of_name(name)
    }

    fn job_end_from_slurm(&self, squeue: &Path) -> Option<u64> {
        if self.ctx != Context::Remote {
            return None;
        }
        *self.job_end.get_or_init(|| {
            let job = self.job_id()?;
            // The daemon's own SLURM_CONF (root's), never the job's.
            let conf = std::env::var("SLURM_CONF").ok();
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
        slurm_log(level.into(), msg);
    }
}

/// The current context (`spank_context()`), converted with a checked TryFrom.
fn current_context() -> Context {
    // SAFETY: spank_context takes no argument and only reads Slurm's global plugin stack.
    let raw = unsafe { sys::spank_context() };
    Context::try_from(raw).unwrap_or(Context::Unknown)
}

impl TryFrom<sys::spank_context_t> for Context {
    type Error = sys::spank_context_t;

    fn try_from(raw: sys::spank_context_t) -> Result<Self, Self::Error> {
        use sys::spank_context::*;
        Ok(match raw {
            S_CTX_LOCAL => Context::Local,
            S_CTX_REMOTE => Context::Remote,
            S_CTX_ALLOCATOR => Context::Allocator,
            S_CTX_SLURMD => Context::Slurmd,
            S_CTX_JOB_SCRIPT => Context::JobScript,
            S_CTX_ERROR => Context::Unknown,
            other => return Err(other),
        })
    }
}

/// Copies a C string that may be NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
unsafe fn c_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated (this function's contract).
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Copies the plugin arguments.
///
/// # Safety
/// `av` is NULL or points to `ac` pointers, each NULL or a C string, valid during the call.
unsafe fn read_argv(ac: c_int, av: *mut *mut c_char) -> Vec<String> {
    let Ok(n) = usize::try_from(ac) else {
        return Vec::new();
    };
    if av.is_null() || n == 0 {
        return Vec::new();
    }
    // SAFETY: `av` points to `ac` pointers (this function's contract).
    let ptrs = unsafe { std::slice::from_raw_parts(av, n) };
    ptrs.iter()
        // SAFETY: each entry is NULL or a C string (this function's contract).
        .filter_map(|&p| unsafe { c_string(p) })
        .collect()
}

/// Looks `uid` up in the password database (getpwuid_r, growing the buffer as needed) and hands
/// the entry to `read`, which must copy what it needs: the entry's strings live in a buffer that
/// is freed when this returns.
fn with_passwd<T>(uid: u32, read: impl FnOnce(&libc::passwd) -> Option<T>) -> Option<T> {
    let mut buf: Vec<c_char> = vec![0; 4096];
    loop {
        let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = ptr::null_mut();
        // SAFETY: `pwd` is writable storage for one passwd, `buf` is writable for `buf.len()`
        // bytes, `result` is a valid out-pointer; getpwuid_r is thread-safe and writes only
        // into these.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                pwd.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success `result` points to `pwd`, now initialised, whose strings point into
        // `buf`, which outlives this borrow.
        return read(unsafe { &*result });
    }
}

/// The home directory of `uid` from the password database, never `$HOME`.
fn home_of(uid: u32) -> Option<PathBuf> {
    with_passwd(uid, |pw| {
        // SAFETY: `pw_dir` is NULL or a C string inside the live getpwuid_r buffer.
        let dir = unsafe { c_string(pw.pw_dir) }?;
        let dir = PathBuf::from(OsStr::from_bytes(dir.as_bytes()));
        dir.is_absolute().then_some(dir)
    })
}

/// The login name and primary group of `uid` from the password database.
fn name_and_gid(uid: u32) -> Option<(CString, libc::gid_t)> {
    with_passwd(uid, |pw| {
        // SAFETY: `pw_name` is NULL or a C string inside the live getpwuid_r buffer; copied at once.
        let name = unsafe { c_string(pw.pw_name) }?;
        Some((CString::new(name).ok()?, pw.pw_gid))
    })
}

/// The group ids of `uid`: its primary group and every group that lists it (getgrouplist).
fn groups_of(uid: u32) -> Option<Vec<u32>> {
    let (name, gid) = name_and_gid(uid)?;
    let mut cap: c_int = 64;
    loop {
        let len = usize::try_from(cap).ok()?;
        let mut groups: Vec<libc::gid_t> = vec![0; len];
        let mut count = cap;
        // SAFETY: `name` is a C string; `groups` is writable for `count` entries and `count` is
        // a valid in/out pointer; getgrouplist writes at most `count` entries and sets `count`.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(usize::try_from(count).ok()?.min(len));
            return Some(groups);
        }
        // Too small: glibc reports the number needed in `count`.
        cap = if count > cap {
            count
        } else {
            cap.checked_mul(2)?
        };
        if cap > 65_536 {
            return None;
        }
    }
}

/// The id of the group `name` (getgrnam_r).
fn gid_of_name(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    let mut buf: Vec<c_char> = vec![0; 4096];
    loop {
        let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut result: *mut libc::group = ptr::null_mut();
        // SAFETY: `name` is a C string; `grp`, `buf` (for `buf.len()` bytes) and `result` are
        // valid, writable and outlive the call; getgrnam_r writes only into them.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                grp.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 22) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success `result` points to `grp`, now initialised.
        return Some(unsafe { (*result).gr_gid });
    }
}

// ---------------------------------------------------------------------------------------------
// Logging into Slurm's log.

#[derive(Debug, Clone, Copy)]
enum SlurmLevel {
    Error,
    Info,
    Verbose,
    Debug,
    Debug2,
}

impl From<Level> for SlurmLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Error => SlurmLevel::Error,
            Level::Info => SlurmLevel::Info,
            Level::Verbose => SlurmLevel::Verbose,
            Level::Debug => SlurmLevel::Debug,
        }
    }
}

/// The line that [`slurm_log`] hands to Slurm for `msg`: always exactly one line, because
/// messages carry values from the user's side (paths, `sub`, `client_id`): control characters
/// are escaped (`\n`, `\x1b`, ...; `token_core::logsafe`).
pub fn log_line(msg: &str) -> String {
    format!("qlam-auth: {}", token_core::logsafe::escape(msg))
}

/// Logs one line through Slurm, with a fixed `"%s"` format (a `%` in the text is never read as
/// a conversion).
fn slurm_log(level: SlurmLevel, msg: &str) {
    let Ok(line) = CString::new(log_line(msg)) else {
        return;
    };
    let fmt = c"%s".as_ptr();
    // SAFETY: the format is the literal "%s", which reads exactly one `char *` argument, and
    // that argument is a valid C string living across the call.
    unsafe {
        match level {
            SlurmLevel::Error => sys::slurm_error(fmt, line.as_ptr()),
            SlurmLevel::Info => sys::slurm_info(fmt, line.as_ptr()),
            SlurmLevel::Verbose => sys::slurm_verbose(fmt, line.as_ptr()),
            SlurmLevel::Debug => sys::slurm_debug(fmt, line.as_ptr()),
            SlurmLevel::Debug2 => sys::slurm_debug2(fmt, line.as_ptr()),
        }
    }
}

/// Routes token-core's `log` records into Slurm's log. Warnings and errors go to info level:
/// the hook that receives the error reports it itself, at the level the context calls for.
struct SlurmLogBridge;

impl log::Log for SlurmLogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Debug
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error | log::Level::Warn => SlurmLevel::Info,
            log::Level::Info => SlurmLevel::Verbose,
            log::Level::Debug => SlurmLevel::Debug,
            log::Level::Trace => SlurmLevel::Debug2,
        };
        slurm_log(level, &format!("[{}] {}", record.target(), record.args()));
    }

    fn flush(&self) {}
}

static LOG_BRIDGE: SlurmLogBridge = SlurmLogBridge;

fn install_log_bridge() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if a logger is already set in this copy of `log`, which is ours alone.
        if log::set_logger(&LOG_BRIDGE).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_symbols() {
        assert_eq!(&plugin_name[..], b"qlam_auth\0");
        assert_eq!(&plugin_type[..], b"spank\0");
        assert_eq!(
            plugin_version >> 16,
            22,
            "built against Slurm 22.x headers here"
        );
        assert_eq!(OPTION_NAME_C.to_str().ok(), Some(crate::OPTION_NAME));
        assert!(crate::OPTION_NAME.len() <= sys::SPANK_OPTION_MAXLEN as usize);
    }

    #[test]
    fn option_env_name_follows_slurms_rule() {
        // Slurm: "SLURM_SPANK_" + "_SLURM_SPANK_OPTION_" + plugin + "_" + option, every
        // non-alphanumeric character of plugin and option replaced by '_'.
        let canon = |s: &str| {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        };
        let expected = format!(
            "SLURM_SPANK__SLURM_SPANK_OPTION_{}_{}",
            canon(crate::PLUGIN_NAME),
            canon(crate::OPTION_NAME)
        );
        assert_eq!(crate::OPTION_ENV, expected);
    }

    #[test]
    fn contexts_convert_with_a_checked_try_from() {
        assert_eq!(
            Context::try_from(sys::spank_context::S_CTX_REMOTE),
            Ok(Context::Remote)
        );
        assert_eq!(
            Context::try_from(sys::spank_context::S_CTX_JOB_SCRIPT),
            Ok(Context::JobScript)
        );
        assert_eq!(
            Context::try_from(sys::spank_context::S_CTX_ERROR),
            Ok(Context::Unknown)
        );
        assert_eq!(Context::try_from(77), Err(77));
    }

    #[test]
    fn groups_come_from_the_group_database() {
        let root = groups_of(0).unwrap();
        assert!(root.contains(&0), "{root:?}");
        assert_eq!(gid_of_name("root"), Some(0));
        assert_eq!(gid_of_name("no-such-group-qlam"), None);
    }

    #[test]
    fn home_of_root_comes_from_the_password_database() {
        assert_eq!(home_of(0), Some(PathBuf::from("/root")));
    }

    #[test]
    fn argv_is_copied() {
        let a = CString::new("min_valid=60").unwrap_or_default();
        let mut ptrs = [a.as_ptr().cast_mut(), ptr::null_mut()];
        // SAFETY: two entries, a C string and a NULL.
        let argv = unsafe { read_argv(2, ptrs.as_mut_ptr()) };
        assert_eq!(argv, vec!["min_valid=60".to_owned()]);
        // SAFETY: NULL argv is accepted.
        assert!(unsafe { read_argv(3, ptr::null_mut()) }.is_empty());
    }
}
