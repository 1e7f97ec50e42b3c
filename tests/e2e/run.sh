#!/usr/bin/env bash
# End-to-end tests of qlam-auth on a real single-node Slurm with the real test IdP.
#
#   bash tests/e2e/run.sh          (as root; sudo is not needed)
#
# Builds the release binaries, brings up Slurm (tests/slurm/up.sh) and the test IdP
# (tests/idp/start.sh), creates the users qa1..qa6, writes their ~/.qsh/config.json with
# `qlam-auth config init`, logs them in with `qlam-auth login --device` (approved headlessly
# through the IdP's pages), installs the SPANK plugin, and checks what users and admins would:
#
#   a  the job's QLAM_ACCESS_TOKEN, QLAM_TOKEN_FILE and BEARER_TOKEN_FILE hold the same valid
#      token; the file is 0600 and the user's
#   b  a user who never logged in: sbatch refuses with `qlam-auth login`; nothing is queued
#   c  an expired access token is refreshed once; the refresh token rotates; qlam-core reads it
#   d  a revoked login fails the job with the fix in its output; the node stays idle
#   e  srun steps reuse the batch step's token (no second refresh)
#   f  --export=NONE still gets a token
#   g  a 24-task array with an expired token: one refresh, every task the same valid token
#   h  no token in Slurm's logs, `scontrol show job`, the stored job environment or state
#   i  the job's token directory is gone after the job
#   o  ... even with a non-UTF-8 name and 40 levels of directories in it (issue 10)
#   j  a job that runs sbatch does not hand its token to slurmctld (E2E_SKIP=j skips it)
#   k  salloc --qlam-auth: the allocation's steps get the token
#   m  site service accounts (plugstack m2m=): group allowlist, one token for a whole array,
#      the secret never reaches the job (tests/e2e/case_m2m.sh)
#   n  the site file gives the allowed issuers; automatic injection: a job without --qlam-auth
#      gets a token, --qlam-auth=no and QLAM_AUTH_INJECT=no get none, a user without a login is
#      not refused, a refused login is refused at sbatch (tests/e2e/case_inject.sh)
#   l  a misbehaving IdP (hanging, HTTP 500, garbage) fails the job within the plugin's timeout;
#      the node stays idle and the login survives
#   r  renewal while jobs run, with 60 s tokens: a 150 s job's token file always works, five
#      jobs cost what one costs, scancel leaves nothing behind, a revoked login is reported in the
#      status file and slurmd's log without failing the job (tests/e2e/case_renew.sh)
#   x  per-job tokens (plugstack exchange=): exact audience and scope, capped lifetime, revoked
#      after the job, scope beyond the site's refused at submission, an IdP without the grant,
#      a 20-task array with an expired login, no exchanged token in any log
#      (tests/e2e/case_exchange.sh)
#
# Prints `e2e: N passed, N failed`; exits 1 if anything failed. Everything it starts (IdP,
# Slurm daemons, plugin) is stopped/removed on exit, also after a failure or Ctrl-C.
# State: tests/.run/e2e/ (ignored by git). Safe to run twice in a row.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$here/../.." && pwd)
# shellcheck source=tests/lib/assert.sh
. "$ROOT/tests/lib/assert.sh"

RUN=$ROOT/tests/.run/e2e
SLURM_STATE=$RUN/slurm
IDP_STATE=$RUN/idp
USER_BIN=$RUN/bin
CA=$RUN/ca.pem
TOKEN_DIR=/run/qlam-auth
SECRETS=$RUN/secrets          # every token seen (root only): what must never leak (case h)
JOBS=()                       # every job id, array tasks included (cases h, i)
QA_USERS=(qa1 qa2 qa3 qa4 qa5 qa6)
LOGGED_IN=(qa1 qa3 qa4 qa5 qa6)   # qa2 never logs in (case b)
ARRAY_TASKS=24
PLUGIN_TIMEOUT=10              # plugstack timeout=: the bound on one hook (case l)
VENV=$ROOT/target/qlam-core-venv  # shared with token-core's interop tests
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"

# E2E_SKIP="j ..." skips the named optional cases (j documents a known leak until it is fixed).
skipped() { case " ${E2E_SKIP:-} " in *" $1 "*) return 0 ;; esac; return 1; }
say() { printf '\n==> %s\n' "$*"; }
die() { echo "e2e: error: $*" >&2; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
[ "$(id -u)" -eq 0 ] || die "must run as root (it starts Slurm and creates users)"
t_start=$(now_ms)

# --- cleanup: always ------------------------------------------------------------------------
BG_PIDS=()
cleanup() { # run by e2e_on_exit
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    rm -f "$SECRETS" "$RUN/needles" "$RUN/views"
    for st in "$RUN"/idp-a "$RUN"/idp-b "$RUN"/idp-c; do   # case r's IdPs
        [ -d "$st" ] && bash "$ROOT/tests/idp/stop.sh" "$st" >/dev/null 2>&1
    done
    e2e_teardown "${QA_USERS[@]}"
    echo "e2e: total $((($(now_ms) - t_start) / 1000)) s"
}
e2e_on_exit cleanup

# --- setup -------------------------------------------------------------------------------------
say "installing dependencies (tests/slurm/install-deps.sh)"
bash "$ROOT/tests/slurm/install-deps.sh"

say "building release binaries"
t=$(now_ms)
e2e_build_release 3 || die "cargo build failed"
t_build=$(($(now_ms) - t))
t_after_build=$(now_ms)

mkdir -p "$RUN"
chmod 0755 "$ROOT/tests/.run" "$RUN"
rm -rf "$USER_BIN" "$SECRETS" "$RUN"/logins
install -d -m 0755 "$USER_BIN"
install -d -m 0700 "$RUN/logins"
# A copy, so that a concurrent cargo build cannot swap the binary under a running test.
install -m 0755 "$ROOT/target/release/qlam-auth" "$USER_BIN/qlam-auth"
install -m 0600 /dev/null "$SECRETS"

say "qlam-core 0.10.0 in a venv (for the interop check of case c)"
if [ ! -e "$VENV/.qlam-core-0.10.0" ]; then
    (
        exec 9>"$VENV.lock"
        flock 9
        if [ ! -e "$VENV/.qlam-core-0.10.0" ]; then
            rm -rf "$VENV"
            /usr/bin/python3 -m venv "$VENV"
            "$VENV/bin/pip" install -q --disable-pip-version-check qlam-core==0.10.0
            touch "$VENV/.qlam-core-0.10.0"
        fi
    ) || die "could not install qlam-core 0.10.0 into $VENV"
fi
chmod -R a+rX "$VENV"
chmod a+x "$ROOT/target"

say "starting Slurm (tests/slurm/up.sh)"
bash "$ROOT/tests/slurm/up.sh" "$SLURM_STATE"

say "starting the test IdP (tests/idp/start.sh)"
idp_users=$(for u in "${QA_USERS[@]}"; do printf '%s:%s-pw,' "$u" "$u"; done)
ISSUER=$(start_idp "$IDP_STATE" "${idp_users%,}") || die "the test IdP did not start"
install -m 0644 "$IDP_STATE/ca.pem" "$CA"
echo "issuer $ISSUER, CA $CA"

say "users ${QA_USERS[*]}: fresh homes, config.json via qlam-auth config init"
bash "$ROOT/tests/slurm/users.sh" "${QA_USERS[@]}"
t_begin "setup: config.json written by qlam-auth config init (0600 in a 0700 dir, the user's)"
for u in "${QA_USERS[@]}"; do
    h=$(user_home "$u")
    rm -rf "$h/.qsh" "$h/e2e"
    install -d -o "$u" -g "$(id -g "$u")" -m 0700 "$h/e2e"
    if ! out=$(as_user "$u" qlam-auth config init --issuer "$ISSUER" --client-id qlam-cli \
                 --audience https://slurm.example/api --tenant e2e 2>&1); then
        t_fail "$u: qlam-auth config init failed: $out"
        continue
    fi
    assert_file_mode "$h/.qsh/config.json" 600
    assert_file_mode "$h/.qsh" 700
    assert_eq "$u $u" "$(stat -c '%U %U' "$h/.qsh")" "$u: owner of ~/.qsh"
    assert_eq "$u" "$(stat -c %U "$h/.qsh/config.json")" "$u: owner of config.json"
    assert_eq "$ISSUER" "$(jq -r '.contexts[0].auth_providers[0].auth_base_url' "$h/.qsh/config.json")" \
        "$u: auth_base_url"
done
t_ok || { t_summary; exit 1; }
t_pass

say "logging in ${LOGGED_IN[*]} with qlam-auth login --device (approved headlessly)"
t_begin "setup: qlam-auth login --device for ${LOGGED_IN[*]}"
t=$(now_ms)
pids=()
for u in "${LOGGED_IN[@]}"; do
    login_user "$u" "$RUN/logins/$u.out" --device --no-qr &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || t_fail "login of ${LOGGED_IN[$i]} failed (see above)"
done
echo "  logins: $(($(now_ms) - t)) ms"
for u in "${LOGGED_IN[@]}"; do
    f=$(store_file "$u") || { t_fail "$u: no credentials file after login"; continue; }
    assert_contains "$(cat "$RUN/logins/$u.out")" "Logged in to context 'default' as $u" "$u: login output"
    assert_file_mode "$f" 600
    assert_file_mode "$(dirname "$f")" 700
    assert_eq "$u" "$(stat -c %U "$f")" "$u: owner of $f"
    for k in access_token refresh_token id_token; do
        python3 "$here/store_tool.py" get "$f" "$k" >>"$SECRETS"
    done
    assert_eq 200 "$(userinfo_status "$(python3 "$here/store_tool.py" get "$f" access_token)")" \
        "$u: the stored access token is valid at the IdP"
done
t_ok || { t_summary; exit 1; }
t_pass

say "installing the SPANK plugin (tests/slurm/install-plugin.sh)"
# The allowed issuers come from the site file (plugstack site=), not from issuers= (case n).
SITE_FILE=$RUN/site.json
printf '{"issuers": ["%s"]}\n' "$ISSUER" >"$SITE_FILE"
chmod 0644 "$SITE_FILE"
plug_args="ca_bundle=$CA token_dir=$TOKEN_DIR timeout=$PLUGIN_TIMEOUT site=$SITE_FILE renewer=$USER_BIN/qlam-auth"
bash "$ROOT/tests/slurm/install-plugin.sh" "$ROOT/target/release/libqlam_spank.so" "$plug_args" \
    --state "$SLURM_STATE"
echo "plugstack: $(cat /etc/slurm/plugstack.conf.d/qlam-auth.conf)"
# slurmd.log is appended to across runs: look only at what this run wrote.
SLURMD_LOG=/var/log/slurm/slurmd.log
log_off=$(stat -c %s "$SLURMD_LOG" 2>/dev/null || echo 0)
slurmd_log() { tail -c +"$((log_off + 1))" "$SLURMD_LOG" 2>/dev/null; }
t_cases=$(now_ms)

# --- helpers for the cases -------------------------------------------------------------------

# Remember the tokens in a file (a job's copy, or a store) as secrets for case h.
remember_tokens() { # FILE...
    local f
    for f in "$@"; do
        [ -s "$f" ] && tr -d '[:space:]' <"$f" >>"$SECRETS" && echo >>"$SECRETS"
    done
    return 0
}
remember_store() { # USER
    local f k
    f=$(store_file "$1") || return 0
    for k in access_token refresh_token id_token; do
        python3 "$here/store_tool.py" get "$f" "$k" >>"$SECRETS"
    done
}

job_out() { cat "$(user_home "$1")/e2e/$2-$3.out" 2>/dev/null || echo "<no output file>"; }
field() { sed -n "s/^$1=//p" <<<"$2" | head -n 1; }   # KEY TEXT -> value of the first KEY=...

# The job script of cases a, c and f: report what the job sees, keep a copy of the token for the
# test to check at the IdP (0600 in the user's 0700 e2e dir).
# shellcheck disable=SC2016  # expanded by the job
job_report='#!/bin/bash
umask 077
s() { tr -d "[:space:]" < "$1" | sha256sum | cut -c1-64; }
echo "QLAM_TOKEN_FILE=${QLAM_TOKEN_FILE:-}"
echo "BEARER_TOKEN_FILE=${BEARER_TOKEN_FILE:-}"
echo "env_sha=$(printf %s "${QLAM_ACCESS_TOKEN:-}" | sha256sum | cut -c1-64)"
echo "file_sha=$(s "$QLAM_TOKEN_FILE")"
echo "bearer_sha=$(s "$BEARER_TOKEN_FILE")"
echo "file_stat=$(stat -c "%a %U" "$QLAM_TOKEN_FILE")"
echo "dir_stat=$(stat -c "%a %U %n" "$(dirname "$QLAM_TOKEN_FILE")")"
tr -d "[:space:]" < "$QLAM_TOKEN_FILE" > "$OUTDIR/$SLURM_JOB_NAME-$SLURM_JOB_ID.token"
echo done
'
report_script() { printf '%s' "$job_report" | sed "2i OUTDIR=$1"; }   # DIR

# --- a: the token reaches the job --------------------------------------------------------------
t_begin "a: QLAM_ACCESS_TOKEN, QLAM_TOKEN_FILE and BEARER_TOKEN_FILE hold the same valid token (0600, the user's)"
u=qa1; h=$(user_home $u)
if id_a=$(report_script "$h/e2e" | submit $u a); then
    JOBS+=("$id_a")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id_a" 60 || true)" "job $id_a state"
    out=$(job_out $u a "$id_a")
    tok=$(cat "$h/e2e/a-$id_a.token" 2>/dev/null || true)
    remember_tokens "$h/e2e/a-$id_a.token"
    assert_eq "$TOKEN_DIR/$id_a/token" "$(field QLAM_TOKEN_FILE "$out")" "QLAM_TOKEN_FILE"
    assert_eq "$TOKEN_DIR/$id_a/token" "$(field BEARER_TOKEN_FILE "$out")" "BEARER_TOKEN_FILE"
    [ -n "$tok" ] || t_fail "the job left no copy of its token"
    assert_eq "$(sha "$tok")" "$(field env_sha "$out")" "QLAM_ACCESS_TOKEN is the token"
    assert_eq "$(sha "$tok")" "$(field file_sha "$out")" "QLAM_TOKEN_FILE holds the token"
    assert_eq "$(sha "$tok")" "$(field bearer_sha "$out")" "BEARER_TOKEN_FILE holds the token"
    assert_eq "600 $u" "$(field file_stat "$out")" "token file mode and owner"
    assert_eq "700 $u $TOKEN_DIR/$id_a" "$(field dir_stat "$out")" "token directory mode and owner"
    assert_eq 200 "$(userinfo_status "$tok")" "the job's token at the IdP's userinfo"
    assert_eq "\"$u\" \"https://slurm.example/api\"" "$(jwt_claims "$tok" | jq -r '"\"\(.sub)\" \"\(.aud)\""')" \
        "token subject and audience"
    t_ok || indent "$out"
else
    t_fail "sbatch --qlam-auth failed for $u"
fi
t_pass

# --- b: never logged in -------------------------------------------------------------------------
t_begin "b: a user who never logged in is refused at submission, with 'qlam-auth login'; nothing queued"
assert_refused_at_submission qa2 "not logged in"
echo "  sbatch said: $ERR"
t_pass

# --- c: expired access token -> one refresh, rotation, qlam-core still reads the store ----------
t_begin "c: expired access token: fresh token, exactly one refresh, refresh token rotated, qlam-core reads the store"
u=qa3; h=$(user_home $u)
f=$(store_file $u)
old_at=$(python3 "$here/store_tool.py" get "$f" access_token)
old_rt=$(python3 "$here/store_tool.py" get "$f" refresh_token)
as_user $u /usr/bin/python3 "$here/store_tool.py" expire "$f"
assert_file_mode "$f" 600
assert_eq "$u" "$(stat -c %U "$f")" "store owner after aging it"
st=$(as_user $u qlam-auth status --json 2>/dev/null || true)
echo "  status after aging: access token expires in $(jq -r '.access_token_expires_in_seconds // "?"' <<<"$st" 2>/dev/null) s"
r0=$(idp_refreshes)
if id_c=$(report_script "$h/e2e" | submit $u c); then
    JOBS+=("$id_c")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id_c" 60 || true)" "job $id_c state"
    out=$(job_out $u c "$id_c")
    tok=$(cat "$h/e2e/c-$id_c.token" 2>/dev/null || true)
    remember_tokens "$h/e2e/c-$id_c.token"
    remember_store $u
    assert_eq 1 "$(($(idp_refreshes) - r0))" "refresh requests at the IdP"
    if [ -z "$tok" ] || [ "$tok" = "$old_at" ]; then t_fail "the job did not get a new access token"; fi
    assert_eq 200 "$(userinfo_status "$tok")" "the job's token at the IdP's userinfo"
    assert_eq "$(sha "$tok")" "$(field env_sha "$out")" "QLAM_ACCESS_TOKEN is the new token"
    new_rt=$(python3 "$here/store_tool.py" get "$f" refresh_token)
    if [ -z "$new_rt" ] || [ "$new_rt" = "$old_rt" ]; then t_fail "the stored refresh token did not rotate"; fi
    assert_eq "$(sha "$tok")" "$(sha "$(python3 "$here/store_tool.py" get "$f" access_token)")" \
        "the store holds the job's token"
    assert_file_mode "$f" 600
    assert_eq "$u" "$(stat -c %U "$f")" "store owner after the refresh"
    qc=$(as_user $u "$VENV/bin/python" "$ROOT/tests/interop/qlam_core_driver.py" read default qlam 2>&1 || true)
    echo "  qlam-core read: $qc"
    assert_eq true "$(jq -r .ok <<<"$qc" 2>/dev/null)" "qlam-core 0.10.0 reads the store (get_credential)"
    assert_eq "sha256:$(sha "$tok" | cut -c1-12)" "$(jq -r .fingerprint <<<"$qc" 2>/dev/null)" \
        "qlam-core sees the job's token"
    t_ok || indent "$out"
else
    t_fail "sbatch --qlam-auth failed for $u"
fi
t_pass

# --- d: revoked login -> the job fails with the fix; the node stays up --------------------------
t_begin "d: revoked login: the job fails with 'qlam-auth login' in its output; the node stays idle"
u=qa4; h=$(user_home $u)
f=$(store_file $u)
as_user $u /usr/bin/python3 "$here/store_tool.py" expire "$f"
rv=$(curl -sf --cacert "$CA" -X POST -H 'content-type: application/json' \
        -d "{\"sub\":\"$u\"}" "$ISSUER/_test/revoke" || true)
assert_eq 1 "$(jq -r .revoked_grants <<<"$rv" 2>/dev/null)" "grants revoked at the IdP"
if id_d=$(printf '#!/bin/bash\necho the-job-script-ran\n' | submit $u d); then
    JOBS+=("$id_d")
    res=$(wait_job "$id_d" 60 || true)
    case $res in FAILED\ *) ;; *) t_fail "job $id_d should have FAILED; it is '$res'" ;; esac
    out=$(job_out $u d "$id_d")
    assert_contains "$out" "qlam-auth login" "the job's output names the fix"
    assert_contains "$out" "expired or was revoked" "the job's output says why"
    assert_not_contains "$out" "the-job-script-ran" "the job script did not run"
    echo "  job output: $(head -n 3 <<<"$out")"
    assert_eq idle "$(settled_node_state)" "node state (sinfo -h -N -o %T)"
    [ -n "$(store_file $u)" ] || t_fail "the credentials file was deleted"
else
    t_fail "sbatch --qlam-auth failed for $u (the check at submission is offline and should pass)"
fi
t_pass

# --- n: site file, automatic injection, a refused login at sbatch (tests/e2e/case_inject.sh) ----
if skipped n; then echo "--- n: skipped (E2E_SKIP)"; else . "$here/case_inject.sh"; fi

# --- e: srun steps reuse the token ----------------------------------------------------------------
t_begin "e: srun steps inside a batch job reuse its token (no second refresh)"
u=qa5; h=$(user_home $u)
f=$(store_file $u)
as_user $u /usr/bin/python3 "$here/store_tool.py" expire "$f"
r0=$(idp_refreshes)
# shellcheck disable=SC2016  # expanded by the job
if id_e=$(submit $u e -n 2 <<EOF
#!/bin/bash
umask 077
tr -d '[:space:]' < "\$QLAM_TOKEN_FILE" > "$h/e2e/e-\$SLURM_JOB_ID.token"
line='echo "\$1 \$(tr -d "[:space:]" < "\$QLAM_TOKEN_FILE" | sha256sum | cut -c1-64) \$QLAM_TOKEN_FILE \$(printf %s "\$QLAM_ACCESS_TOKEN" | sha256sum | cut -c1-64)"'
bash -c "\$line" _ batch
srun -n 1 bash -c "\$line" _ step
srun -n 2 bash -c "\$line" _ step
srun -n 1 bash -c "\$line" _ step
EOF
); then
    JOBS+=("$id_e")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id_e" 60 || true)" "job $id_e state"
    out=$(job_out $u e "$id_e")
    tok=$(cat "$h/e2e/e-$id_e.token" 2>/dev/null || true)
    remember_tokens "$h/e2e/e-$id_e.token"
    remember_store $u
    assert_eq 1 "$(grep -c '^batch ' <<<"$out")" "batch lines"
    assert_eq 4 "$(grep -c '^step ' <<<"$out")" "step task lines (1 + 2 + 1)"
    assert_eq "$(sha "$tok") $TOKEN_DIR/$id_e/token $(sha "$tok")" \
        "$(awk '{print $2, $3, $4}' <<<"$out" | sort -u)" "every step and task: same file, same token"
    assert_eq 1 "$(($(idp_refreshes) - r0))" "refresh requests at the IdP (the batch step's only)"
    assert_eq 200 "$(userinfo_status "$tok")" "the token at the IdP's userinfo"
    reused=$(slurmd_log | grep -cE "job=$id_e step=[0-9]+ .*reused=yes" || true)
    assert_eq 3 "$reused" "steps logged reused=yes in slurmd.log"
    t_ok || indent "$out"
else
    t_fail "sbatch --qlam-auth failed for $u"
fi
t_pass

# --- f: --export=NONE --------------------------------------------------------------------------
t_begin "f: --export=NONE still gets the token"
u=qa1; h=$(user_home $u)
if id_f=$(report_script "$h/e2e" | submit $u f --export=NONE); then
    JOBS+=("$id_f")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id_f" 60 || true)" "job $id_f state"
    out=$(job_out $u f "$id_f")
    tok=$(cat "$h/e2e/f-$id_f.token" 2>/dev/null || true)
    remember_tokens "$h/e2e/f-$id_f.token"
    assert_eq "$TOKEN_DIR/$id_f/token" "$(field QLAM_TOKEN_FILE "$out")" "QLAM_TOKEN_FILE"
    assert_eq "$TOKEN_DIR/$id_f/token" "$(field BEARER_TOKEN_FILE "$out")" "BEARER_TOKEN_FILE"
    assert_eq "$(sha "$tok")" "$(field file_sha "$out")" "the file holds the token"
    assert_eq "$(sha "$tok")" "$(field env_sha "$out")" "QLAM_ACCESS_TOKEN is the token"
    assert_eq 200 "$(userinfo_status "$tok")" "the token at the IdP's userinfo"
    t_ok || indent "$out"
else
    t_fail "sbatch --qlam-auth --export=NONE failed for $u"
fi
t_pass

# --- g: a job array with an expired token: one refresh ------------------------------------------
t_begin "g: $ARRAY_TASKS-task array with an expired token: one refresh, every task the same valid token"
u=qa6; h=$(user_home $u)
f=$(store_file $u)
as_user $u /usr/bin/python3 "$here/store_tool.py" expire "$f"
r0=$(idp_refreshes)
t=$(now_ms)
# shellcheck disable=SC2016  # expanded by the job
if id_g=$(printf '%s\n' '#!/bin/bash' \
        'tr -d "[:space:]" < "$QLAM_TOKEN_FILE" | sha256sum | cut -c1-64' |
        submit $u g --array=1-$ARRAY_TASKS -o "$h/e2e/g-%A_%a.out"); then
    JOBS+=("$id_g")
    res=$(wait_job "$id_g" 90 || true)
    echo "  array: $(($(now_ms) - t)) ms"
    assert_eq "$ARRAY_TASKS" "$(grep -c '^COMPLETED 0:0$' <<<"$res" || true)" "COMPLETED tasks"
    mapfile -t task_ids < <(scontrol -o show job "$id_g" | grep -o '^JobId=[0-9]*' | cut -d= -f2)
    JOBS+=("${task_ids[@]}")
    assert_eq "$ARRAY_TASKS" "${#task_ids[@]}" "array task job ids"
    shas=$(cat "$h"/e2e/g-"$id_g"_*.out 2>/dev/null)
    assert_eq "$ARRAY_TASKS" "$(grep -cE '^[0-9a-f]{64}$' <<<"$shas" || true)" "tasks that wrote a token hash"
    assert_eq 1 "$(sort -u <<<"$shas" | wc -l)" "distinct tokens among the tasks"
    remember_store $u
    stored=$(python3 "$here/store_tool.py" get "$f" access_token)
    assert_eq "$(sha "$stored")" "$(sort -u <<<"$shas" | head -n 1)" "the tasks' token is the refreshed one in the store"
    assert_eq 200 "$(userinfo_status "$stored")" "that token at the IdP's userinfo"
    assert_eq 1 "$(($(idp_refreshes) - r0))" "refresh requests at the IdP"
    # How the tasks got it (timing-dependent, so shown, not asserted).
    echo "  tasks' sources (slurmd.log): $(for j in "${task_ids[@]}"; do
        slurmd_log | grep -oE "job=$j step=batch .*source=[a-z_]+" | sed 's/.*source=//'
    done | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')"
else
    t_fail "sbatch --qlam-auth --array failed for $u"
fi
t_pass

# --- k: salloc ---------------------------------------------------------------------------------
t_begin "k: salloc --qlam-auth: the allocation's steps get a valid token"
u=qa5; h=$(user_home $u)
# shellcheck disable=SC2016  # expanded by the step
out=$(cd "$h" && as_user $u timeout 60 salloc --qlam-auth -N1 -J k \
        srun bash -c 'umask 077; tr -d "[:space:]" < "$QLAM_TOKEN_FILE" > "$HOME/e2e/k.token";
                      echo "QLAM_TOKEN_FILE=$QLAM_TOKEN_FILE"; echo "job=$SLURM_JOB_ID"' 2>&1) ||
    t_fail "salloc failed: $out"
id_k=$(field job "$out")
JOBS+=("${id_k:-0}")
tok=$(cat "$h/e2e/k.token" 2>/dev/null || true)
[ -n "$tok" ] && echo "$tok" >>"$SECRETS"
assert_eq "$TOKEN_DIR/$id_k/token" "$(field QLAM_TOKEN_FILE "$out")" "QLAM_TOKEN_FILE in the salloc step"
assert_eq 200 "$(userinfo_status "$tok")" "the step's token at the IdP's userinfo"
t_ok || indent "$out"
t_pass

# --- l: a misbehaving IdP: bounded launch, failed job, idle node, login kept ---------------------
idp_fault() { # MODE COUNT
    curl -sf --cacert "$CA" --max-time 10 -H 'content-type: application/json' \
        -d "{\"mode\":\"$1\",\"count\":$2,\"retry_after\":1}" "$ISSUER/_test/fault" >/dev/null
}
t_begin "l: a hanging, failing or garbage-speaking IdP fails the job within timeout=$PLUGIN_TIMEOUT s; the node stays idle; the login survives"
u=qa5; h=$(user_home $u)
f=$(store_file $u)
for mode in hang status500 garbage; do
    as_user $u /usr/bin/python3 "$here/store_tool.py" expire "$f"
    rt_before=$(python3 "$here/store_tool.py" get "$f" refresh_token)
    idp_fault "$mode" 5 || t_fail "could not inject the $mode fault"
    t0=$(now_ms)
    if id_l=$(submit $u "l-$mode" --wrap 'echo should-not-run'); then
        JOBS+=("$id_l")
        state=$(wait_job "$id_l" 90 || true)
        took=$((($(now_ms) - t0) / 1000))
        assert_eq "FAILED 1:0" "$state" "$mode: job $id_l state"
        # Submission, scheduling and the job's own start add a few seconds to the hook's bound.
        [ "$took" -le $((PLUGIN_TIMEOUT + 15)) ] ||
            t_fail "$mode: the job took $took s from submission to its end (plugin timeout $PLUGIN_TIMEOUT s)"
        out=$(job_out $u "l-$mode" "$id_l")
        assert_contains "$out" "identity provider" "$mode: the job's output says what failed"
        assert_not_contains "$out" "should-not-run" "$mode: the job script did not run without a token"
        assert_eq idle "$(settled_node_state)" "$mode: node state"
        echo "  $mode: job $id_l $state after $took s"
    else
        t_fail "sbatch failed for $u"
    fi
    idp_fault html 0 || true
    assert_eq "$rt_before" "$(python3 "$here/store_tool.py" get "$f" refresh_token)" \
        "$mode: the stored refresh token is unchanged"
done
# The IdP is healthy again: the same login still works.
if id_l=$(report_script "$h/e2e" | submit $u l-after); then
    JOBS+=("$id_l")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id_l" 60 || true)" "job $id_l after the faults"
    tok=$(cat "$h/e2e/l-after-$id_l.token" 2>/dev/null || true)
    [ -n "$tok" ] && echo "$tok" >>"$SECRETS"
    assert_eq 200 "$(userinfo_status "$tok")" "the token after the faults, at the IdP"
fi
remember_store $u
t_pass

# --- h: no token in Slurm's logs, job records, stored environment -------------------------------
t_begin "h: no token in slurmd/slurmctld logs, scontrol show job, the stored job environment or Slurm's state"
u=qa1; h=$(user_home $u)
# A job that is still running while we look at what slurmctld stored for it.
# shellcheck disable=SC2016  # expanded by the job
if id_h=$(printf '%s\n' '#!/bin/bash' 'umask 077' \
        "tr -d '[:space:]' < \"\$QLAM_TOKEN_FILE\" > $h/e2e/h-\$SLURM_JOB_ID.token" 'sleep 3' |
        submit $u h); then
    JOBS+=("$id_h")
    for ((i = 0; i < 100; i++)); do [ -s "$h/e2e/h-$id_h.token" ] && break; sleep 0.1; done
    remember_tokens "$h/e2e/h-$id_h.token"
    envfile=$(find /var/lib/slurm/slurmctld -path "*/job.$id_h/environment" 2>/dev/null | head -n 1)
    [ -n "$envfile" ] || t_fail "no stored environment for running job $id_h under /var/lib/slurm/slurmctld"
    assert_eq RUNNING "$(scontrol -o show job "$id_h" | grep -o 'JobState=[A-Z]*' | cut -d= -f2)" \
        "job $id_h still running while checked"
    running_view=$(scontrol -dd show job "$id_h"; scontrol show job -d "$id_h"
                   scontrol write batch_script "$id_h" - 2>/dev/null
                   if [ -n "$envfile" ]; then tr '\0' '\n' <"$envfile"; fi) || true
    wait_job "$id_h" 60 >/dev/null || true
fi
for u2 in "${LOGGED_IN[@]}"; do remember_store "$u2"; done
for u2 in "${QA_USERS[@]}"; do remember_tokens "$(user_home "$u2")"/e2e/*.token; done
# Needles: every token, and the signature part of every JWT (a truncated token still leaks).
needles=$RUN/needles
install -m 0600 /dev/null "$needles"
sort -u "$SECRETS" | awk 'length($0) >= 20' >"$needles"
awk -F. 'NF == 3 && length($3) >= 20 {print $3}' "$needles" >>"$needles.sig"
cat "$needles.sig" >>"$needles" && rm -f "$needles.sig"
n_tokens=$(sort -u "$SECRETS" | awk 'length($0) >= 20' | wc -l)
echo "  looking for $n_tokens tokens (access, refresh, ID) from ${#JOBS[@]} jobs and $(( ${#LOGGED_IN[@]} )) logins"
[ "$n_tokens" -ge 10 ] || t_fail "too few tokens collected ($n_tokens): the check would prove nothing"
views=$RUN/views
install -m 0600 /dev/null "$views"
{
    printf '%s\n' "${running_view:-}"
    for j in "${JOBS[@]}"; do
        scontrol -dd show job "$j" 2>/dev/null
        scontrol show job -d "$j" 2>/dev/null
    done
} >>"$views"
leaks=$(grep -lFa -f "$needles" /var/log/slurm/*.log "$views" 2>/dev/null || true)
leaks+=${leaks:+$'\n'}$(grep -rlFa -f "$needles" /var/lib/slurm 2>/dev/null || true)
leaks=$(sed '/^$/d' <<<"$leaks")
assert_eq "" "$leaks" "files holding a token"
# Where, never what: the matching lines hold a secret.
[ -z "$leaks" ] || while read -r lf; do
    echo "  leak in $lf at line(s) $(grep -nFa -f "$needles" "$lf" | cut -d: -f1 | head -n 5 | tr '\n' ' ')"
done <<<"$leaks"
# Sanity: the needles find what they look for (the jobs' own copies of their tokens), and the
# logs do hold the plugin's lines (with fingerprints only).
copies=("$(user_home qa1)"/e2e/*.token)
assert_eq "${#copies[@]}" "$(grep -lFa -f "$needles" "${copies[@]}" | wc -l)" "needles match the jobs' token copies"
assert_contains "$(slurmd_log)" "job=${id_a:-?} step=batch" "slurmd.log has the plugin's lines"
rm -f "$views"
t_pass

# --- o: a job that fills its token directory with hostile entries is still cleaned -----------------
# (issue 10, item 2) Before the fix, a non-UTF-8 name or nesting deeper than 16 made cleanup fail
# and the directory stayed on /run; case i checks that this job's directory is gone too.
t_begin "o: a non-UTF-8 name and 40 levels of directories in the job's token directory are cleaned up; the node stays idle"
u=qa1
if id_n=$(submit $u n <<'JOB'
#!/bin/bash
d=$(dirname "$QLAM_TOKEN_FILE")
touch "$d/$(printf 'junk\377')"
deep="$d/$(printf 'l/%.0s' $(seq 40))"
mkdir -p "$deep" && touch "$deep/f"
echo "made=$(find "$d" -mindepth 1 | wc -l)"
JOB
); then
    JOBS+=("$id_n")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id_n" 60 || true)" "job $id_n state"
    made=$(field made "$(job_out $u n "$id_n")")
    [ "${made:-0}" -ge 42 ] || t_fail "the job made ${made:-no} entries, expected at least 42"
    for ((i = 0; i < 50; i++)); do
        [ -e "$TOKEN_DIR/$id_n" ] || break
        sleep 0.2
    done
    assert_eq "" "$(find "$TOKEN_DIR/$id_n" -maxdepth 0 2>/dev/null)" "job $id_n token directory left behind"
    assert_eq idle "$(settled_node_state)" "node state (sinfo -h -N -o %T)"
else
    t_fail "sbatch --qlam-auth failed for $u"
fi
t_pass

# --- i: the job's token directory is gone -----------------------------------------------------
t_begin "i: after each job its token directory ($TOKEN_DIR/<jobid>) is gone"
left=()
for j in "${JOBS[@]}"; do
    [ -e "$TOKEN_DIR/$j" ] && left+=("$j")
done
assert_eq "" "${left[*]}" "token directories left behind"
assert_eq "" "$(find "$TOKEN_DIR" -mindepth 1 -maxdepth 1 2>/dev/null)" "anything left in $TOKEN_DIR"
echo "  checked ${#JOBS[@]} jobs"
t_pass

# --- j: a job that submits a job does not pass its token to slurmctld ----------------------------
# Job chains and workflow managers running inside a job call sbatch with the job's environment,
# which slurmctld stores with the new job (StateSaveLocation/hash.N/job.ID/environment).
if skipped j; then
    echo "--- j: skipped (E2E_SKIP)"
else
t_begin "j: a job that runs sbatch does not hand its token to slurmctld (stored environment of the child job)"
u=qa1; h=$(user_home $u)
# shellcheck disable=SC2016  # expanded by the job
if id_j=$(printf '%s\n' '#!/bin/bash' 'umask 077' \
        "tr -d '[:space:]' < \"\$QLAM_TOKEN_FILE\" > $h/e2e/j-\$SLURM_JOB_ID.token" \
        "sbatch --parsable -J j-child -o /dev/null --wrap 'sleep 30' > $h/e2e/j-\$SLURM_JOB_ID.child" |
        submit $u j); then
    JOBS+=("$id_j")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id_j" 60 || true)" "job $id_j state"
    child=$(cut -d';' -f1 "$h/e2e/j-$id_j.child" 2>/dev/null || true)
    if [ -z "$child" ]; then
        t_fail "the job could not submit the child job"
    else
        envfile=$(find /var/lib/slurm/slurmctld -path "*/job.$child/environment" 2>/dev/null | head -n 1)
        [ -n "$envfile" ] || t_fail "no stored environment for child job $child"
        tok=$(cat "$h/e2e/j-$id_j.token" 2>/dev/null || true)
        if [ -n "$envfile" ] && [ -n "$tok" ]; then
            stored=$(tr '\0' '\n' <"$envfile")
            names=$(grep -oE '^(QLAM_ACCESS_TOKEN|BEARER_TOKEN|QLAM_TOKEN_FILE|BEARER_TOKEN_FILE)=' <<<"$stored" | tr '\n' ' ' || true)
            case $stored in
                *"$tok"*) t_fail "the parent job's access token is in the child job's stored environment ($envfile; variables: ${names:-none})" ;;
            esac
        fi
        scancel "$child" 2>/dev/null || true
    fi
else
    t_fail "sbatch --qlam-auth failed for $u"
fi
t_pass
fi

# --- m: site service accounts (tests/e2e/case_m2m.sh) ---------------------------------------------
if skipped m; then echo "--- m: skipped (E2E_SKIP)"; else . "$here/case_m2m.sh"; fi

# --- r: renewal while jobs run (tests/e2e/case_renew.sh) ----------------------------------------
if skipped r; then echo "--- r: skipped (E2E_SKIP)"; else . "$here/case_renew.sh"; fi

# --- x: per-job tokens by token exchange (tests/e2e/case_exchange.sh) ---------------------------
if skipped x; then echo "--- x: skipped (E2E_SKIP)"; else . "$here/case_exchange.sh"; fi

echo
echo "timing: build $((t_build / 1000)) s, setup $(((t_cases - t_after_build) / 1000)) s," \
     "cases $((($(now_ms) - t_cases) / 1000)) s"
t_summary
