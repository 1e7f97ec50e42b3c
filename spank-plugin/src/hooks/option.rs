//! `--qlam-auth[=CONTEXT]`: what a job asked for (the option, or the job environment with
//! `--export=NONE`), automatic injection, and the plugin arguments as one hook sees them.
#![forbid(unsafe_code)]

use super::env;
use super::{Host, Level, OptionState, State, Verdict};
use crate::args::{Args, MAX_CONTEXT_LEN};

/// The qsh context a job asked for: `None` is the config's current context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// `--qlam-auth=CONTEXT`.
    pub context: Option<String>,
}

impl Requested {
    /// The token file's name in the job directory: one per context, so that a step asking for
    /// another context never reuses the first one's token.
    pub fn file_name(&self) -> String {
        match &self.context {
            None => "token".to_owned(),
            Some(c) => format!("token-{c}"),
        }
    }
}

/// Checks an option value. `None`, empty and Slurm's `(null)` mean "the current context".
pub fn parse_option_value(value: Option<&str>) -> Result<Requested, String> {
    let value = match value {
        None | Some("") | Some("(null)") => return Ok(Requested { context: None }),
        Some(v) => v,
    };
    if !crate::args::is_context_name(value) {
        return Err(format!(
            "invalid --qlam-auth value: a qsh context name is 1 to {MAX_CONTEXT_LEN} characters \
             of A-Z a-z 0-9 . _ - @ + and does not start with '.'; use --qlam-auth for the \
             current context or --qlam-auth=CONTEXT (see `qlam-auth status`)"
        ));
    }
    Ok(Requested {
        context: Some(value.to_owned()),
    })
}

/// Whether and how this job asked for a token. In remote context the option may only be in the
/// job environment (`--export=NONE`): see [`crate::OPTION_ENV`].
fn requested(host: &dyn Host, state: &State) -> Option<Result<Requested, String>> {
    let (raw, source) = match host.option_value() {
        OptionState::Given(v) => (v, "spank_option_getopt"),
        OptionState::NotGiven => match &state.option_from_callback {
            Some(v) => (v.clone(), "option callback"),
            None if host.is_remote() => (Some(env::get(host, env::OPTION)?), env::OPTION.name),
            None => return None,
        },
    };
    host.log(
        Level::Debug,
        &format!("--{}={raw:?} (from {source})", crate::OPTION_NAME),
    );
    Some(parse_option_value(raw.as_deref()))
}

/// Environment variable of the submission: a user's own default for automatic injection
/// (`yes` or `no`), over the site's.
pub const ENV_INJECT: &str = env::INJECT.name;

/// `--qlam-auth=no`: this job gets no token, even with automatic injection.
pub const OPT_OUT: &str = "no";

/// What a job gets: `Some((request, automatic))`, or `None` for no token. `automatic` is true
/// when the job did not ask (automatic injection): then nothing may fail it or its submission.
pub(super) fn job_request(
    host: &dyn Host,
    state: &State,
    args: &Args,
) -> Option<(Result<Requested, String>, bool)> {
    match requested(host, state) {
        Some(Ok(r)) if r.context.as_deref() == Some(OPT_OUT) => None,
        Some(r) => Some((r, false)),
        None => {
            let user = env::get(host, env::INJECT).map(|v| v.trim().to_ascii_lowercase());
            let auto = match user.as_deref() {
                Some("yes" | "1" | "true" | "auto") => true,
                Some("no" | "0" | "false") => false,
                _ => args.inject_automatically(),
            };
            auto.then_some((Ok(Requested { context: None }), true))
        }
    }
}

pub(super) fn parse_args(host: &dyn Host, argv: &[String], level: Level) -> Args {
    let (mut args, mut problems) = Args::parse(argv);
    let site = crate::backend::load_site_file(&args.site_file);
    problems.extend(args.apply_site(site));
    for p in problems {
        host.log(level, &format!("plugstack.conf: {}", p.0));
    }
    args
}

/// The option callback: Slurm calls it when it parses `--qlam-auth` (allocator, local) or
/// receives it (remote). Failing it in sbatch stops the submission.
pub fn option_callback(
    host_log: &dyn Fn(Level, &str),
    state: &mut State,
    value: Option<&str>,
) -> Verdict {
    match parse_option_value(value) {
        Ok(_) => {
            state.option_from_callback = Some(value.map(str::to_owned));
            Verdict::Continue
        }
        Err(msg) => {
            host_log(Level::Error, &msg);
            Verdict::Fail
        }
    }
}
