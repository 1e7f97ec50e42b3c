//! Site service accounts (`m2m=NAME:FILE[:GROUP,...]`): `--qlam-auth=NAME` gives a job the
//! client-credentials token of a machine client the site configured, if the job's user is in
//! one of its allowed groups.
//!
//! Where each check happens, and why:
//! * **Submission** (sbatch, as the user): the account file is unreadable there, by design. The
//!   optional group list after the file in plugstack.conf (world-readable anyway, since sbatch
//!   loads it) lets sbatch refuse a user outside the groups at once. It is a convenience, not
//!   the control: a user controls their own sbatch process.
//! * **The job's node** (slurmstepd, `init_post_opt`, as root): the account file's
//!   `allowed_groups` decide, against the job user's groups from the group database
//!   (`getgrouplist`: primary and supplementary). Only then is the secret read and a token
//!   obtained, as root, through a root-only cache `m2m_cache/NAME` shared by all jobs of the
//!   node (and of all nodes, if on a shared filesystem with working `flock`). A refusal fails
//!   the job in `task_init`, never the node.
//! * **The job** gets the access token only (file and variables, as for user tokens). The
//!   secret, the key and the cache never leave root.
//!
//! The account file's model is [`crate::backend::site_account`]; its plugstack reference is
//! [`crate::args::SiteAccountRef`].
#![forbid(unsafe_code)]

use super::{Backend, Gid, Host, Level, SiteToken, State, Verdict, audited};
use crate::args::{Args, GID_PREFIX, SiteAccountRef};
use crate::backend::source_name;

/// Is a user with these group ids in one of `allowed` (names resolved by `gid_of`; a number
/// only as `gid:N`)?
pub fn member_of(
    allowed: &[String],
    user_gids: &[Gid],
    gid_of: &dyn Fn(&str) -> Option<Gid>,
) -> bool {
    allowed.iter().any(|g| {
        match g.strip_prefix(GID_PREFIX) {
            Some(n) => n.parse::<u32>().ok().map(Gid::new),
            None => gid_of(g),
        }
        .is_some_and(|gid| user_gids.contains(&gid))
    })
}

fn not_member(name: &str) -> String {
    format!(
        "you are not allowed to use the site service account '{name}' (--qlam-auth={name}): \
         ask your site admins to add you to one of its groups"
    )
}

/// Allocator context, as the submitting user: refuse users outside the account's public group
/// list right away. Without a public list the job is checked on its node.
pub fn submit_check(host: &dyn Host, account: &SiteAccountRef) -> Verdict {
    let Some(groups) = &account.public_groups else {
        host.log(
            Level::Verbose,
            &format!(
                "site account '{}': group membership is checked when the job starts",
                account.name
            ),
        );
        return Verdict::Continue;
    };
    let uid = host.process_uid();
    let mine = host.user_groups(uid).unwrap_or_default();
    if member_of(groups, &mine, &|g| host.group_id(g)) {
        host.log(
            Level::Verbose,
            &format!("site account '{}': group check passed", account.name),
        );
        Verdict::Continue
    } else {
        host.log(Level::Error, &not_member(&account.name));
        Verdict::Fail
    }
}

/// Remote `init_post_opt`, as root: check the job user's groups against the account file, then
/// obtain the account's token (shared root-only cache) and keep it for `user_init`, which writes
/// it into the job's directory as the user. Never fails the hook: problems are remembered.
pub fn fetch(
    host: &dyn Host,
    backend: &dyn Backend,
    state: &mut State,
    args: &Args,
    account: &SiteAccountRef,
) {
    let (Some(job), Some(uid)) = (host.job_id(), host.job_uid()) else {
        return state.remember(
            host,
            "Slurm did not provide the job id and uid; please tell your site admins".into(),
        );
    };
    let acct = match backend.load_site_account(account) {
        Ok(a) => a,
        Err(e) => {
            let line = format!("job={job} site account '{}': {e}", account.name);
            if e.is_security() {
                host.security(Level::Error, &line);
            } else {
                host.log(Level::Error, &line);
            }
            return state.remember(
                host,
                format!("the site service account '{}' is misconfigured on this node; please tell your site admins", account.name),
            );
        }
    };
    let groups = host.user_groups(uid).unwrap_or_default();
    if !member_of(&acct.allowed_groups, &groups, &|g| host.group_id(g)) {
        host.security(
            Level::Info,
            &format!(
                "job={job} uid={uid} refused the site account '{}' (not in {})",
                account.name,
                acct.allowed_groups.join(",")
            ),
        );
        return state.remember(host, not_member(&account.name));
    }
    let args = super::renewal::needed_validity(host, args);
    match backend.obtain_site(account, &acct, &args) {
        Ok(d) => {
            let expires_in = d
                .expires_in
                .map_or_else(|| "-".to_owned(), |s| s.to_string());
            state.site_token = Some(SiteToken {
                token: d.token,
                log: format!(
                    "site_account={} client_id={} refreshed={} source={} expires_in_s={expires_in} lock_wait_ms={} elapsed_ms={}",
                    account.name,
                    d.client_id,
                    if d.refreshed { "yes" } else { "no" },
                    source_name(d.source),
                    d.lock_wait.as_millis(),
                    d.elapsed.as_millis()
                ),
            });
        }
        Err(e) => {
            let msg = format!(
                "this job could not get a token for the site account '{}': {e}",
                account.name
            );
            state.remember(host, audited(host, &e, msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gids(ids: &[u32]) -> Vec<Gid> {
        ids.iter().copied().map(Gid::new).collect()
    }

    #[test]
    fn group_membership() {
        let gid_of = |n: &str| match n {
            "qpu" => Some(Gid::new(500)),
            "admins" => Some(Gid::new(501)),
            _ => None,
        };
        // A number needs the explicit `gid:` prefix (this test used a bare "1234" before).
        let allowed = vec!["qpu".to_owned(), "gid:1234".to_owned()];
        assert!(member_of(&allowed, &gids(&[100, 500]), &gid_of));
        assert!(member_of(&allowed, &gids(&[1234]), &gid_of));
        assert!(!member_of(&allowed, &gids(&[100, 501]), &gid_of));
        assert!(!member_of(
            &["nosuchgroup".to_owned()],
            &gids(&[100]),
            &gid_of
        ));
    }

    /// Security review item 6: a bare number is a group NAME. A group literally named `2024`
    /// (gid 777) must not match GID 2024, which may be some user's personal group.
    #[test]
    fn a_bare_number_is_a_group_name_not_a_gid() {
        let gid_of = |n: &str| (n == "2024").then_some(Gid::new(777));
        let allowed = vec!["2024".to_owned()];
        assert!(!member_of(&allowed, &gids(&[2024]), &gid_of));
        assert!(member_of(&allowed, &gids(&[777]), &gid_of));
        assert!(member_of(&["gid:2024".to_owned()], &gids(&[2024]), &gid_of));
        assert!(!member_of(&["gid:2024".to_owned()], &gids(&[777]), &gid_of));
    }
}
