//! `qlam-auth ssh sign|check|config`: short-lived SSH certificates for service accounts.

use crate::cli::{SshCheckArgs, SshConfigArgs, SshEndpointArgs, SshServiceArgs, SshSignArgs};
use crate::exit::{self, Failure};
use crate::ui;
use std::path::{Path, PathBuf};
use std::time::Duration;
use token_core::http::{HttpSettings, UreqClient};
use token_core::ssh::cert::CertState;
use token_core::ssh::config::{self, Loaded, Overrides};
use token_core::ssh::{self as core_ssh, SignOptions, SignOutcome};

const DEFAULT_MIN_VALID: u64 = 10;
const DEFAULT_TIMEOUT: u64 = 20;

fn home() -> Result<PathBuf, Failure> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            Failure::msg(
                "HOME is not set: set it to your home directory",
                exit::CONFIG,
            )
        })
}

fn load(site_file: &Path, home: &Path) -> Result<Loaded, Failure> {
    let xdg = std::env::var("XDG_CONFIG_HOME").ok();
    let user = config::user_file(home, xdg.as_deref());
    Ok(config::load(site_file, Some(&user))?)
}

fn overrides(which: &SshServiceArgs, endpoint: Option<&SshEndpointArgs>) -> Overrides {
    let mut o = Overrides {
        service: which.service.clone(),
        key: which.key.clone(),
        principals: which.principals.clone(),
        ..Overrides::default()
    };
    if let Some(e) = endpoint {
        o.token_url.clone_from(&e.token_url);
        o.sign_url.clone_from(&e.sign_url);
        o.duration.clone_from(&e.duration);
        o.api_key_env.clone_from(&e.api_key_env);
        o.api_key_file.clone_from(&e.api_key_file);
    }
    o
}

fn cache_dir(home: &Path) -> PathBuf {
    match std::env::var("XDG_CACHE_HOME")
        .ok()
        .filter(|x| x.starts_with('/'))
    {
        Some(x) => Path::new(&x).join("qlam-auth/ssh"),
        None => home.join(".cache/qlam-auth/ssh"),
    }
}

/// `ssh sign`.
pub fn sign(a: &SshSignArgs, site_file: &Path) -> Result<(), Failure> {
    let home = home()?;
    let loaded = load(site_file, &home)?;
    let service = config::resolve(&loaded, &overrides(&a.which, Some(&a.endpoint)), &home)?;
    let timeout = Duration::from_secs(a.endpoint.timeout.unwrap_or(DEFAULT_TIMEOUT).max(1));
    let http = UreqClient::new(&HttpSettings {
        timeout,
        connect_timeout: timeout.min(Duration::from_secs(5)),
        ..super::http_settings()
    })?;
    let opts = SignOptions {
        min_valid: Duration::from_secs(a.which.min_valid.unwrap_or(DEFAULT_MIN_VALID)),
        // Up to three requests (a refused cached JWT, a new one, the signing), plus slack.
        lock_timeout: timeout * 3 + Duration::from_secs(5),
        cache_dir: cache_dir(&home),
        force: a.force,
    };
    let env = |name: &str| std::env::var(name).ok();
    let outcome = core_ssh::ensure_certificate(&http, &service, &opts, &env)?;
    if a.agent {
        let remaining = match &outcome {
            SignOutcome::AlreadyValid { remaining, .. }
            | SignOutcome::Renewed { remaining, .. } => *remaining,
        };
        add_to_agent(&service.key, remaining)?;
    }
    match outcome {
        SignOutcome::AlreadyValid {
            cert_path,
            remaining,
        } => {
            if !a.quiet {
                say(&format!(
                    "{} is valid for {} more (not renewed)\n",
                    cert_path.display(),
                    config::format_duration(remaining)
                ))?;
            }
        }
        SignOutcome::Renewed {
            cert_path,
            remaining,
            warnings,
            ..
        } => {
            for w in &warnings {
                ui::warn(w);
            }
            if !a.quiet {
                say(&format!(
                    "{} renewed by service '{}': valid for {} more\n",
                    cert_path.display(),
                    service.name,
                    config::format_duration(remaining)
                ))?;
            }
        }
    }
    Ok(())
}

/// The longest `ssh-add` may take.
const SSH_ADD_TIMEOUT: Duration = Duration::from_secs(10);

/// `ssh-add -q -t REMAINING KEY`: ssh-add reads the private key and KEY-cert.pub (qlam-auth
/// never does); the agent removes both once the lifetime is over. Bounded in time, no prompt.
fn add_to_agent(key: &Path, remaining: u64) -> Result<(), Failure> {
    if std::env::var_os("SSH_AUTH_SOCK").is_none_or(|s| s.is_empty()) {
        return Err(Failure::msg(
            "--agent needs a running ssh-agent, and SSH_AUTH_SOCK is not set: start one with \
             `eval \"$(ssh-agent -s)\"`, or leave out --agent (the certificate file was written)",
            exit::CONFIG,
        ));
    }
    let mut child = std::process::Command::new("ssh-add")
        .arg("-q")
        .arg("-t")
        .arg(remaining.max(1).to_string())
        .arg(key)
        .env("SSH_ASKPASS_REQUIRE", "never")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            Failure::msg(
                format!("cannot run ssh-add ({e}): install openssh-client, or leave out --agent"),
                exit::OTHER,
            )
        })?;
    let start = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                return Err(Failure::msg(
                    format!(
                        "ssh-add {} failed ({st}); a key with a passphrase cannot be added \
                         without a prompt: use a key without one for the service account",
                        key.display()
                    ),
                    exit::OTHER,
                ));
            }
            Ok(None) if start.elapsed() < SSH_ADD_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::msg(
                    format!(
                        "ssh-add did not finish within {} s (is the agent at SSH_AUTH_SOCK \
                         alive?)",
                        SSH_ADD_TIMEOUT.as_secs()
                    ),
                    exit::OTHER,
                ));
            }
        }
    }
}

fn say(text: &str) -> Result<(), Failure> {
    ui::emit(&[text]).map_err(|e| {
        Failure::msg(
            format!("cannot write to stdout ({e}); redirect it to a file"),
            exit::OTHER,
        )
    })
}

/// `ssh check`.
pub fn check(a: &SshCheckArgs, site_file: &Path) -> Result<(), Failure> {
    let home = home()?;
    let loaded = load(site_file, &home)?;
    let (key, principals) = config::key_and_principals(&loaded, &overrides(&a.which, None), &home)?;
    let min_valid = a.which.min_valid.unwrap_or(DEFAULT_MIN_VALID);
    let files = core_ssh::KeyFiles::of(&key)?;
    let cert = files.cert_path();
    let mut state = core_ssh::check_certificate(&key, Duration::from_secs(min_valid))?;
    if let (
        CertState::Valid {
            principals: has, ..
        },
        Some(want),
    ) = (&state, &principals)
    {
        let (mut h, mut w) = (has.clone(), want.clone());
        h.sort();
        h.dedup();
        w.sort();
        w.dedup();
        if h != w {
            state = CertState::OtherPrincipals {
                principals: has.clone(),
            };
        }
    }
    let d = config::format_duration;
    let renew = format!(
        "run `qlam-auth ssh sign -f {}` to get a new one",
        key.display()
    );
    let (code, text) = match &state {
        CertState::Valid {
            remaining,
            principals,
            key_id,
            serial,
        } => (
            exit::OK,
            format!(
                "{}: valid for {} more (principals: {}; key id: {key_id}; serial {serial})",
                cert.display(),
                d(*remaining),
                principals.join(", ")
            ),
        ),
        CertState::Missing => (
            exit::SSH_NO_CERT,
            format!("{}: no certificate; {renew}", cert.display()),
        ),
        CertState::Expired { ago } => (
            exit::SSH_CERT_EXPIRED,
            format!("{}: expired {} ago; {renew}", cert.display(), d(*ago)),
        ),
        CertState::NotYetValid { in_secs } => (
            exit::SSH_CERT_EXPIRED,
            format!(
                "{}: not valid for another {} (check the clock); {renew}",
                cert.display(),
                d(*in_secs)
            ),
        ),
        CertState::ExpiresSoon { remaining } => (
            exit::SSH_CERT_EXPIRED,
            format!(
                "{}: valid for only {} more, less than --min-valid {}; {renew}",
                cert.display(),
                d(*remaining),
                d(min_valid)
            ),
        ),
        CertState::OtherKey { certified, key: k } => (
            exit::SSH_CERT_MISMATCH,
            format!(
                "{}: certifies another key ({certified}), not {} ({k}); {renew}",
                cert.display(),
                files.pub_path().display()
            ),
        ),
        CertState::OtherPrincipals { principals: has } => (
            exit::SSH_CERT_MISMATCH,
            format!(
                "{}: its principals are [{}], not the [{}] asked for; {renew}",
                cert.display(),
                has.join(", "),
                principals.as_deref().unwrap_or_default().join(", ")
            ),
        ),
        CertState::Unreadable { detail } => (
            exit::SSH_CERT_MISMATCH,
            format!("{}: unusable: {detail}; {renew}", cert.display()),
        ),
    };
    if code == exit::OK {
        if !a.quiet {
            say(&format!("{text}\n"))?;
        }
        return Ok(());
    }
    if !a.quiet {
        eprintln!("qlam-auth: {text}");
    }
    Err(Failure::Reported(code))
}

/// A word for ssh_config: `%` doubled (ssh expands %-tokens), and refused if it would need
/// quoting that ssh_config cannot express.
fn ssh_config_word(what: &str, s: &str) -> Result<String, Failure> {
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\'))
    {
        return Err(Failure::msg(
            format!(
                "{what} '{}' cannot be written into an ssh_config (no quotes, backslashes or \
                 control characters); use another path or name",
                s.escape_default()
            ),
            exit::USAGE,
        ));
    }
    Ok(s.replace('%', "%%"))
}

/// `ssh config`.
pub fn config(a: &SshConfigArgs, site_file: &Path) -> Result<(), Failure> {
    let home = home()?;
    let loaded = load(site_file, &home)?;
    // Resolving now reports a bad service or URL here, not at the first ssh.
    let service = config::resolve(&loaded, &overrides(&a.which, Some(&a.endpoint)), &home)?;
    let key = if service.key.is_absolute() {
        service.key.clone()
    } else {
        std::env::current_dir()
            .map_err(|e| {
                Failure::msg(
                    format!("cannot find the current directory: {e}"),
                    exit::OTHER,
                )
            })?
            .join(&service.key)
    };
    let files = core_ssh::KeyFiles::of(&key)?;
    let exe = std::env::current_exe().map_err(|e| {
        Failure::msg(
            format!("cannot find the path of qlam-auth itself: {e}"),
            exit::OTHER,
        )
    })?;
    let exe = exe.to_string_lossy().into_owned();
    // The command ssh runs: every setting that came from the command line is repeated.
    let mut cmd = vec![format!(
        "'{}'",
        ssh_config_word("the qlam-auth path", &exe)?
    )];
    cmd.push("ssh sign --quiet".to_owned());
    let mut arg = |flag: &str, v: &str| -> Result<(), Failure> {
        cmd.push(format!("{flag} '{}'", ssh_config_word(flag, v)?));
        Ok(())
    };
    if let Some(s) = &a.which.service {
        arg("--service", s)?;
    }
    arg("-f", &key.to_string_lossy())?;
    if let Some(m) = a.which.min_valid {
        arg("--min-valid", &m.to_string())?;
    }
    for p in &a.which.principals {
        arg("--principal", p)?;
    }
    let e = &a.endpoint;
    for (flag, v) in [
        ("--token-url", &e.token_url),
        ("--sign-url", &e.sign_url),
        ("--api-key-env", &e.api_key_env),
        ("--duration", &e.duration),
    ] {
        if let Some(v) = v {
            arg(flag, v)?;
        }
    }
    if let Some(f) = &e.api_key_file {
        arg("--api-key-file", &f.to_string_lossy())?;
    }
    if let Some(t) = e.timeout {
        arg("--timeout", &t.to_string())?;
    }
    let mut hosts = Vec::new();
    for h in &a.hosts {
        if h.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err(Failure::msg(
                format!("'{h}' is not one host pattern: give each pattern as its own argument"),
                exit::USAGE,
            ));
        }
        hosts.push(ssh_config_word("the host pattern", h)?);
    }
    let id = ssh_config_word("the key path", &key.to_string_lossy())?;
    let cert = ssh_config_word("the certificate path", &files.cert_path().to_string_lossy())?;
    let block = format!(
        "# qlam-auth: SSH certificates from service '{name}' for {hosts}.\n\
         # Before each connection, ssh runs `qlam-auth ssh sign`, which renews the certificate\n\
         # only when needed. Paste into ~/.ssh/config, or save and `Include` it from there.\n\
         Match host \"{hosts}\" exec \"{cmd}\"\n\
         \x20   IdentityFile \"{id}\"\n\
         \x20   CertificateFile \"{cert}\"\n\
         \x20   IdentitiesOnly yes\n",
        name = service.name,
        hosts = hosts.join(","),
        cmd = cmd.join(" "),
    );
    say(&block)
}
