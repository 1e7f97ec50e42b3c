//! `qlam-auth login`: device code (RFC 8628) or browser (authorization code + PKCE).
//!
//! Nothing is written before the identity provider hands out tokens; Ctrl-C before that leaves
//! the store as it was and exits 130.

use super::{Selected, select, subject_of};
use crate::cli::LoginArgs;
use crate::exit::{self, Failure};
use crate::ui::{self, Interrupt, Spinner};
use std::time::{Duration, Instant};
use token_core::config::GrantType;
use token_core::oauth::OAuthClient;
use token_core::oauth::device::{DeviceAuthorization, DeviceObserver};
use token_core::store::TokenSet;

/// How long a browser login may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);

/// The two interactive flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Device code: URL + code, approved on any device.
    Device,
    /// Authorization code + PKCE with a browser on this machine.
    Browser,
}

/// True if this session has no graphical display, or runs over ssh.
pub fn headless(env: &dyn Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
    let display = set("DISPLAY") || set("WAYLAND_DISPLAY");
    let ssh = set("SSH_CONNECTION") || set("SSH_TTY");
    !display || ssh
}

/// Which flow to use: the flag if given; device when headless; else the config's grant.
pub fn choose_flow(
    args_device: bool,
    args_browser: bool,
    grant: GrantType,
    headless: bool,
) -> Flow {
    if args_device {
        Flow::Device
    } else if args_browser {
        Flow::Browser
    } else if headless || grant == GrantType::DeviceCode {
        Flow::Device
    } else {
        Flow::Browser
    }
}

/// Runs `login`.
pub fn run(args: &LoginArgs) -> Result<(), Failure> {
    let sel = select(args.context.as_deref())?;
    let grant = sel.provider.grant_type;
    if !grant.is_user_flow() {
        return Err(Failure::msg(
            format!(
                "context '{}' uses the {} grant, which needs no login: get a token with \
                 `qlam-auth token --context {}`",
                sel.provider.context,
                grant.as_str(),
                sel.provider.context
            ),
            exit::CONFIG,
        ));
    }
    let env = |k: &str| std::env::var(k).ok();
    let is_headless = headless(&env);
    let flow = choose_flow(args.device, args.browser, grant, is_headless);
    let interrupt = Interrupt::install();
    let oauth = sel.broker.oauth()?;
    log::info!(target: "qlam_auth", "logging in to context '{}' at {} with client '{}' ({:?} flow)",
        sel.provider.context, sel.provider.issuer, sel.provider.client_id, flow);
    let response = match flow {
        Flow::Device => device_login(&sel, &oauth, &interrupt, !args.no_qr),
        Flow::Browser => browser_login(&sel, &oauth, &interrupt, is_headless),
    };
    // Ctrl-C wins over whatever the flow returned: nothing is stored after an interrupt.
    if interrupt.is_set() {
        return Err(Failure::Interrupted);
    }
    let response = response?;
    // A context from the site file goes into the user's config.json before the login is
    // stored, so that QLAM Shell and QLAM Core read the same login.
    if sel.provider.context != token_core::m2m::ENV_CONTEXT {
        let paths = super::qsh_paths()?;
        let config = super::load_config(&paths)?;
        if let Some(file) =
            super::config::adopt_site_context(&paths, &config, &sel.provider.context)?
        {
            ui::say(&format!(
                "Added the site's context '{}' to {} (for QLAM Shell and QLAM Core too).\n",
                sel.provider.context,
                file.display()
            ));
        }
    }
    finish(&sel, response)
}

struct Waiter<'a> {
    spinner: &'a mut Spinner,
    interrupt: &'a Interrupt,
}

impl DeviceObserver for Waiter<'_> {
    fn waiting(&mut self, _elapsed: Duration, remaining: Duration) {
        self.spinner.tick(&format!(
            "Waiting for you to approve the login… the code expires in {} (Ctrl-C to cancel)",
            ui::countdown(remaining)
        ));
    }

    fn slowed_down(&mut self, interval: Duration) {
        self.spinner.note(&format!(
            "(the identity provider asked us to slow down: checking every {} s now)",
            interval.as_secs()
        ));
    }

    fn cancelled(&mut self) -> bool {
        self.interrupt.is_set()
    }
}

fn device_instructions(sel: &Selected, auth: &DeviceAuthorization, qr: bool) -> String {
    let mut s = format!(
        "\nTo log in to context '{}' ({}):\n\n  1. Open   {}\n  2. Enter  {}\n\n",
        sel.provider.context,
        sel.provider.issuer,
        auth.verification_uri,
        bold(&auth.user_code)
    );
    if let Some(complete) = &auth.verification_uri_complete {
        if qr && let Some(art) = ui::qr_code(complete, std::env::var_os("NO_COLOR").is_none()) {
            s.push_str("  or scan this QR code (the code is filled in):\n\n");
            s.push_str(&art);
            s.push('\n');
        } else {
            s.push_str(&format!("  or open {complete} (the code is filled in)\n\n"));
        }
    }
    s
}

fn bold(text: &str) -> String {
    if ui::stdout_is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        format!("\x1b[1m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

fn device_login(
    sel: &Selected,
    oauth: &OAuthClient,
    interrupt: &Interrupt,
    qr: bool,
) -> Result<TokenSet, Failure> {
    let auth = oauth.start_device()?;
    if interrupt.is_set() {
        return Err(Failure::Interrupted);
    }
    let qr = qr && ui::stdout_is_terminal();
    ui::say(&device_instructions(sel, &auth, qr));
    let mut spinner = Spinner::new();
    let mut waiter = Waiter {
        spinner: &mut spinner,
        interrupt,
    };
    let result = oauth.poll_device(&auth, &mut waiter);
    spinner.clear();
    Ok(result?)
}

/// A private local page that forwards the browser to the authorization URL. xdg-open gets
/// this page's path, never the URL: a command line is visible to every local user
/// (`/proc/PID/cmdline`), and the URL's `state` and PKCE challenge would let one of them slip
/// their own login into ours (login CSRF). The page is in a new 0700 directory (0600 file) under
/// `$XDG_RUNTIME_DIR` (or the temp directory) and is removed when the login ends.
struct RedirectPage {
    dir: std::path::PathBuf,
    file: std::path::PathBuf,
}

impl RedirectPage {
    fn create(url: &str) -> std::io::Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let parent = std::env::var_os("XDG_RUNTIME_DIR")
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = parent.join(format!(
            "qlam-auth-login-{}",
            token_core::fsutil::random_suffix()
        ));
        // Fails if it exists: nobody else can have prepared it.
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let page = RedirectPage {
            file: dir.join("login.html"),
            dir,
        };
        let href = url
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let html = format!(
            "<!doctype html><meta charset=\"utf-8\"><meta name=\"referrer\" content=\"no-referrer\">\
             <meta http-equiv=\"refresh\" content=\"0;url={href}\"><title>qlam-auth login</title>\
             <p><a href=\"{href}\">Continue to the identity provider</a></p>\n"
        );
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&page.file)?
            .write_all(html.as_bytes())?;
        Ok(page)
    }
}

impl Drop for RedirectPage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Starts xdg-open on a private page that forwards to `url` (see [`RedirectPage`]).
fn try_open_browser(url: &str) -> Option<RedirectPage> {
    use std::process::{Command, Stdio};
    let page = match RedirectPage::create(url) {
        Ok(p) => p,
        Err(e) => {
            log::info!(target: "qlam_auth", "could not write the page for the browser ({e}); open the URL yourself");
            return None;
        }
    };
    match Command::new("xdg-open")
        .arg(&page.file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        // Not waited for: xdg-open may stay as long as the browser does.
        Ok(_child) => Some(page),
        Err(e) => {
            log::info!(target: "qlam_auth", "could not start xdg-open ({e}); open the URL yourself");
            None
        }
    }
}

fn browser_login(
    sel: &Selected,
    oauth: &OAuthClient,
    interrupt: &Interrupt,
    headless: bool,
) -> Result<TokenSet, Failure> {
    let req = oauth.start_authorization()?;
    if interrupt.is_set() {
        return Err(Failure::Interrupted);
    }
    let port = req
        .redirect_uri
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap_or("PORT")
        .to_owned();
    ui::say(&format!(
        "\nTo log in to context '{}' ({}), open this URL in a browser on this machine:\n\n  {}\n\n",
        sel.provider.context, sel.provider.issuer, req.url
    ));
    if headless {
        ui::say(&format!(
            "  (No display here: the identity provider sends the browser back to 127.0.0.1:{port}.\n   \
             Over ssh, forward it first: ssh -L {port}:127.0.0.1:{port} THIS-HOST, or use \
             `qlam-auth login --device`.)\n\n"
        ));
    }
    // Kept until the login ends, so that the browser can read it.
    let _page = (!headless).then(|| try_open_browser(&req.url)).flatten();
    let mut spinner = Spinner::new();
    let start = Instant::now();
    let result = oauth.finish_authorization(req, BROWSER_TIMEOUT, &mut || {
        spinner.tick(&format!(
            "Waiting for the browser… {} left (Ctrl-C to cancel)",
            ui::countdown(BROWSER_TIMEOUT.saturating_sub(start.elapsed()))
        ));
        interrupt.is_set()
    });
    spinner.clear();
    Ok(result?)
}

/// Who logged in, from the userinfo endpoint (for IdPs that send opaque access tokens and no ID
/// token). Best effort: any failure just leaves the name unknown.
fn subject_from_userinfo(
    sel: &Selected,
    access_token: &token_core::secret::Secret,
) -> Option<String> {
    let claims = sel.broker.oauth().ok()?.userinfo(access_token).ok()?;
    ["email", "preferred_username", "sub"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
}

fn finish(sel: &Selected, response: TokenSet) -> Result<(), Failure> {
    let subject = subject_of(response.id_token.as_ref(), &response.access_token)
        .or_else(|| subject_from_userinfo(sel, &response.access_token));
    let has_refresh = response.refresh_token.is_some();
    let lifetime = response
        .expires_in
        .and_then(|s| u64::try_from(s).ok())
        .map(ui::human_duration);
    log::info!(target: "qlam_auth", "login succeeded: access token {}, refresh token {}",
        response.access_token.fingerprint(),
        response.refresh_token.as_ref().map_or("none".into(), |r| r.fingerprint()));
    let path = sel.broker.save_login(response)?;
    let who = subject.unwrap_or_else(|| {
        "(unknown: the identity provider sent no ID token and its userinfo endpoint did not say)"
            .into()
    });
    let mut s = format!(
        "Logged in to context '{}' as {}.\n  credentials: {}\n",
        sel.provider.context,
        who,
        path.display()
    );
    match (&lifetime, has_refresh) {
        (Some(l), true) => s.push_str(&format!(
            "  access token valid for {l}; it is renewed automatically with the refresh token\n"
        )),
        (None, true) => {
            s.push_str("  the access token is renewed automatically with the refresh token\n")
        }
        (l, false) => {
            ui::warn(&format!(
                "the identity provider sent no refresh token, so this login lapses when the access \
                 token expires{}; ask for the offline_access scope (`qlam-auth config init ... \
                 --scope \"openid email profile offline_access\"`) or log in again then",
                l.as_ref().map(|l| format!(" (in {l})")).unwrap_or_default()
            ));
        }
    }
    ui::say(&s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headless_when_no_display_or_over_ssh() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(headless(&env(&[])));
        assert!(!headless(&env(&[("DISPLAY", ":0")])));
        assert!(!headless(&env(&[("WAYLAND_DISPLAY", "wayland-0")])));
        assert!(headless(&env(&[
            ("DISPLAY", ":0"),
            ("SSH_CONNECTION", "1 2 3 4")
        ])));
        assert!(headless(&env(&[
            ("DISPLAY", "localhost:10"),
            ("SSH_TTY", "/dev/pts/1")
        ])));
        assert!(headless(&env(&[("DISPLAY", "")])));
    }

    #[test]
    fn flow_choice() {
        use GrantType::*;
        assert_eq!(
            choose_flow(true, false, AuthorizationCode, false),
            Flow::Device
        );
        assert_eq!(choose_flow(false, true, DeviceCode, true), Flow::Browser);
        assert_eq!(
            choose_flow(false, false, AuthorizationCode, true),
            Flow::Device
        );
        assert_eq!(
            choose_flow(false, false, AuthorizationCode, false),
            Flow::Browser
        );
        assert_eq!(choose_flow(false, false, DeviceCode, false), Flow::Device);
    }
}
