# shellcheck shell=bash disable=SC2154  # sourced by run.sh (its variables and helpers)
# Case n of tests/e2e/run.sh: the site file (plugstack site=) and automatic injection.
#
# Sourced by run.sh after case d (qa4's login was revoked there) and before h/i (which check
# every job of the run). The site file $SITE_FILE already gives the allowed issuers (run.sh's
# plugstack line has no issuers=); here it also turns automatic injection on, and is put back
# afterwards. The plugin reads it in every hook: no restart.
#
#   n1  a logged-in user's job without --qlam-auth gets a valid token
#   n2  --qlam-auth=no gets none; QLAM_AUTH_INJECT=no in the submission environment gets none
#   n3  a user who never logged in is not refused: the job runs, without a token
#   n4  a user whose login the IdP refused (case d) is refused at sbatch --qlam-auth, with the
#       fix, before anything is queued

write_site() { # JSON
    printf '%s\n' "$1" >"$SITE_FILE.tmp"
    chmod 0644 "$SITE_FILE.tmp"
    mv -f "$SITE_FILE.tmp" "$SITE_FILE"
}
plain_submit() { # USER NAME [SBATCH ARGS...] < script   (no --qlam-auth)
    local u=$1 name=$2 h id
    shift 2
    h=$(user_home "$u")
    id=$(as_user "$u" "$@" sbatch --parsable -J "$name" -D "$h" -o "$h/e2e/$name-%j.out") ||
        return 1
    echo "${id%%;*}"
}
# shellcheck disable=SC2016  # expanded by the job
inject_report='#!/bin/bash
echo "QLAM_TOKEN_FILE=${QLAM_TOKEN_FILE:-none}"
echo "QLAM_ACCESS_TOKEN_SET=${QLAM_ACCESS_TOKEN:+yes}"
[ -n "${QLAM_TOKEN_FILE:-}" ] && tr -d "[:space:]" < "$QLAM_TOKEN_FILE" > "$HOME/e2e/$SLURM_JOB_NAME-$SLURM_JOB_ID.token"
echo ran
'

write_site "{\"issuers\": [\"$ISSUER\"], \"inject\": {\"automatic\": true}}"

t_begin "n1: automatic injection (site file): a logged-in user's job without --qlam-auth gets a valid token"
u=qa1; h=$(user_home $u)
if id=$(printf '%s' "$inject_report" | plain_submit $u n1); then
    JOBS+=("$id")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id" 60 || true)" "job $id state"
    out=$(job_out $u n1 "$id")
    assert_eq "$TOKEN_DIR/$id/token" "$(field QLAM_TOKEN_FILE "$out")" "QLAM_TOKEN_FILE"
    remember_tokens "$h/e2e/n1-$id.token"
    assert_eq 200 "$(userinfo_status "$(cat "$h/e2e/n1-$id.token" 2>/dev/null)")" \
        "the injected token at the IdP's userinfo"
    t_ok || indent "$out"
else
    t_fail "sbatch without --qlam-auth failed for $u"
fi
t_pass

t_begin "n2: --qlam-auth=no, and QLAM_AUTH_INJECT=no in the submission environment, get no token"
u=qa1
for how in flag env; do
    if [ $how = flag ]; then
        id=$(printf '%s' "$inject_report" |
            as_user $u sbatch --parsable --qlam-auth=no -J n2f -D "$h" -o "$h/e2e/n2f-%j.out") || id=
    else
        id=$(printf '%s' "$inject_report" | plain_submit $u n2e env QLAM_AUTH_INJECT=no) || id=
    fi
    id=${id%%;*}
    [ -n "$id" ] || { t_fail "$how: sbatch failed"; continue; }
    JOBS+=("$id")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id" 60 || true)" "$how: job $id state"
    out=$(job_out $u "n2${how:0:1}" "$id")
    assert_eq none "$(field QLAM_TOKEN_FILE "$out")" "$how: QLAM_TOKEN_FILE"
    assert_eq "" "$(field QLAM_ACCESS_TOKEN_SET "$out")" "$how: QLAM_ACCESS_TOKEN"
done
t_pass

t_begin "n3: automatic injection never refuses a user who never logged in: the job runs without a token"
u=qa2
if id=$(printf '%s' "$inject_report" | plain_submit $u n3); then
    JOBS+=("$id")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id" 60 || true)" "job $id state"
    out=$(job_out $u n3 "$id")
    assert_contains "$out" "ran" "the job script ran"
    assert_eq none "$(field QLAM_TOKEN_FILE "$out")" "QLAM_TOKEN_FILE"
else
    t_fail "sbatch without --qlam-auth was refused for $u, who never logged in"
fi
t_pass

t_begin "n4: a login the IdP refused (case d) is refused at sbatch --qlam-auth, with the fix; nothing queued"
u=qa4
assert_refused_at_submission $u "expired or was revoked"
st=$(as_user $u qlam-auth status 2>&1 || true)
assert_contains "$st" "expired or was revoked" "qlam-auth status says so too"
echo "  sbatch said: $ERR"
t_pass

write_site "{\"issuers\": [\"$ISSUER\"]}"
