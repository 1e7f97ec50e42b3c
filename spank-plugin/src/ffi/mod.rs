//! What Slurm loads: the plugin symbols, the `slurm_spank_*` hooks and the option callback.
//!
//! Every exported function is one line into `dispatch`, which catches panics (no panic ever
//! crosses into C), logs, and returns an error code only where that fails a submission or a job,
//! never where it would drain the node.
//!
//! * this file: the exported symbols, `export_hook!`, the dispatcher and its panic catching,
//!   the process-global [`State`], the option's description;
//! * `handle.rs`: [`SpankHandle`], the safe wrapper of a `spank_t`, which implements
//!   [`crate::hooks::Host`] for the policy in [`crate::hooks`];
//! * `log.rs`: the plugin's lines and token-core's `log` records into Slurm's log.
//!
//! The unsafe code of the plugin is here, in [`crate::users`] (passwd/group lookups) and in
//! [`crate::spawn`] (fork/exec of the renewer); each block says why it is sound.

use std::ffi::{CStr, c_char, c_int, c_uint};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

mod handle;
mod log;

pub use self::log::log_line;
pub use handle::SpankHandle;

use self::log::{SlurmLevel, install_log_bridge, slurm_log};
use crate::backend::TokenCore;
use crate::hooks::{self, Context, Host, Level, State, Verdict};
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
                    &format!("could not register --{}: {}", crate::OPTION_NAME, e),
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
pub(super) fn option_description() -> sys::spank_option {
    sys::spank_option {
        name: OPTION_NAME_C.as_ptr().cast_mut(),
        arginfo: OPTION_ARGINFO.as_ptr().cast_mut(),
        usage: OPTION_USAGE.as_ptr().cast_mut(),
        has_arg: OPTIONAL_ARGUMENT,
        val: 0,
        cb: Some(option_callback),
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
pub(super) unsafe fn c_string(p: *const c_char) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::ptr;

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

    /// Every line in Slurm's log starts with the plugin's target; a security line names its own.
    #[test]
    fn log_lines_carry_the_targets() {
        assert_eq!(log_line("job=1 x"), "qlam-auth: job=1 x");
        assert_eq!(
            log_line(&format!("[{}] job=1 refused", crate::logtarget::SECURITY)),
            "qlam-auth: [qlam-auth::security] job=1 refused"
        );
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
