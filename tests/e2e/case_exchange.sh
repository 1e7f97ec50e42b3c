# shellcheck shell=bash disable=SC2154,SC2016  # sourced by run.sh (plug_args etc. are its)
# Case x of tests/e2e/run.sh: each job gets its own narrow token (plugstack exchange=): RFC 8693
# token exchange of the user's token at job start, RFC 7009 revocation at job end.
#
# Sourced by run.sh after the other cases (it uses run.sh's variables and helpers: ROOT, RUN,
# CA, ISSUER, SLURM_STATE, plug_args, JOBS, as_user, user_home, wait_job, slurmd_log, sha,
# t_begin/...). The main test IdP offers the grant for the user's client (tests/idp/server.mjs):
# opaque job tokens for https://storage.example/data (scopes storage.read storage.write) or
# the API, revocable and introspectable; /_test/resource is a resource server that checks the
# audience; /_test/exchange turns the grant off and on.
#
#   x1  a 2-minute job asking for storage.read: its token is the storage token with exactly that
#       scope, taken by the storage resource and refused by the API; it lives at most the job's
#       remaining time plus the margin, as slurmctld tells it (the plugin asks squeue: Slurm 22.05
#       sets no SLURM_JOB_END_TIME, and the job submits a false one a day late, which must not
#       stretch the token); an srun step reuses it (one exchange); slurmd logs job,
#       subject, client id, audience and the token's fingerprint; after the job the IdP says
#       it is inactive
#   x2  a scope beyond the site's: sbatch refuses with the reason; nothing is queued
#   x3  an IdP without the grant: exchange=required fails the job with the reason, node idle;
#       exchange=preferred gives the user's own token, with the reason in slurmd's log
#   x4  a 20-task array with an expired login: one refresh in all, one exchange per task (each
#       array task is its own job; the cache is per job), 20 distinct job tokens, each living at
#       most exchange_max_lifetime, all revoked
#   x5  no exchanged token in Slurm's logs or state

X_STORAGE=https://storage.example/data
X_API=https://slurm.example/api
X_TASKS=20
X_LIMIT_MIN=2
X_MAX=600
x_policy="exchange_audience=$X_STORAGE,$X_API exchange_scope=storage.read,storage.write exchange_max_lifetime=$X_MAX"
x_plugin() { # MODE
    bash "$ROOT/tests/slurm/install-plugin.sh" "$ROOT/target/release/libqlam_spank.so" \
        "$plug_args exchange=$1 $x_policy" --state "$SLURM_STATE" >/dev/null
}
x_stat() { # JQ PATH in the IdP's stats
    curl -sf --cacert "$CA" --max-time 10 "$ISSUER/_test/stats" | jq -r "$1 // 0"
}
x_introspect() { # TOKEN -> compact JSON
    curl -s --cacert "$CA" --max-time 10 -u qlam-introspect:introspect-secret \
        --data-urlencode "token=$1" "$ISSUER/token/introspection" | jq -c .
}
# Waits (at most S seconds) until the IdP says TOKEN is inactive; prints the last answer.
x_wait_inactive() { # TOKEN S
    local i v
    for ((i = 0; i < $2 * 10; i++)); do
        v=$(x_introspect "$1")
        [ "$(jq -r .active <<<"$v")" = false ] && break
        sleep 0.1
    done
    echo "$v"
}
x_grant() { # true|false
    curl -sf --cacert "$CA" --max-time 10 -H 'content-type: application/json' \
        -d "{\"enabled\": $1}" "$ISSUER/_test/exchange" >/dev/null
}
x_submit() { # USER NAME SCOPE [SBATCH ARGS...] < script   (X_END: a SLURM_JOB_END_TIME to pass)
    local u=$1 name=$2 scope=$3 h id
    shift 3
    h=$(user_home "$u")
    local want=()
    [ -n "$scope" ] && want=("QLAM_AUTH_SCOPE=$scope")
    [ -n "${X_END:-}" ] && want+=("SLURM_JOB_END_TIME=$X_END")
    id=$(as_user "$u" env "${want[@]}" sbatch --parsable --qlam-auth \
        -J "$name" -D "$h" -o "$h/e2e/$name-%j.out" "$@") || return 1
    echo "${id%%;*}"
}
# The job of x1/x3: what the job's token is, and what a resource and the IdP say about it.
x_job="#!/bin/bash
umask 077
t=\$(tr -d '[:space:]' < \"\$QLAM_TOKEN_FILE\")
printf %s \"\$t\" > \"\$HOME/e2e/\$SLURM_JOB_NAME-\$SLURM_JOB_ID.token\"
echo \"file_sha=\$(printf %s \"\$t\" | sha256sum | cut -c1-64)\"
echo \"env_sha=\$(printf %s \"\$QLAM_ACCESS_TOKEN\" | sha256sum | cut -c1-64)\"
echo \"srun_sha=\$(srun -n1 bash -c 'tr -d \"[:space:]\" < \"\$QLAM_TOKEN_FILE\" | sha256sum | cut -c1-64')\"
r() { curl -s -o /dev/null -w '%{http_code}' --cacert $CA --max-time 10 -H \"Authorization: Bearer \$t\" \"$ISSUER/_test/resource?audience=\$1\"; }
echo \"storage=\$(r $X_STORAGE)\"
echo \"api=\$(r $X_API)\"
echo \"userinfo=\$(curl -s -o /dev/null -w '%{http_code}' --cacert $CA --max-time 10 -H \"Authorization: Bearer \$t\" $ISSUER/me)\"
echo \"introspect=\$(curl -s --cacert $CA --max-time 10 -u qlam-introspect:introspect-secret --data-urlencode \"token=\$t\" $ISSUER/token/introspection | jq -c '{active, aud, scope, sub, client_id, life: (.exp - .iat)}')\"
"
X_TOKENS=()   # every exchanged token seen (for x5)

say "x: per-job tokens by token exchange (plugstack exchange=)"

# --- x1 --------------------------------------------------------------------------------------
t_begin "x1: the job's token: exactly storage.read for $X_STORAGE, <= its time limit, one exchange, revoked after the job"
x_plugin required
u=qa5; h=$(user_home $u)
te0=$(x_stat '.successes["token-exchange"]')
x1_end=$(($(date +%s) + 86400)) # a lie: the job's end is in X_LIMIT_MIN minutes
if id=$(printf '%s' "$x_job" | X_END=$x1_end x_submit $u x1 storage.read -t "$X_LIMIT_MIN"); then
    JOBS+=("$id")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id" 90 || true)" "job state"
    out=$(cat "$h/e2e/x1-$id.out" 2>/dev/null || echo "<no output>")
    tok=$(cat "$h/e2e/x1-$id.token" 2>/dev/null || true)
    [ -n "$tok" ] && X_TOKENS+=("$tok") && echo "$tok" >>"$SECRETS"
    assert_eq "$(sha "$tok")" "$(sed -n 's/^env_sha=//p' <<<"$out")" "QLAM_ACCESS_TOKEN is the file's token"
    assert_eq "$(sha "$tok")" "$(sed -n 's/^srun_sha=//p' <<<"$out")" "the srun step reuses it"
    assert_eq 200 "$(sed -n 's/^storage=//p' <<<"$out")" "the storage resource takes it"
    assert_eq 401 "$(sed -n 's/^api=//p' <<<"$out")" "the API (another audience) refuses it"
    [ "$(sed -n 's/^userinfo=//p' <<<"$out")" != 200 ] || t_fail "userinfo (the user's API) accepts the job token"
    intro=$(sed -n 's/^introspect=//p' <<<"$out")
    assert_eq "true $X_STORAGE storage.read $u qlam-cli" \
        "$(jq -r '"\(.active) \(.aud) \(.scope) \(.sub) \(.client_id)"' <<<"$intro")" "introspection during the job"
    life=$(jq -r .life <<<"$intro")
    echo "  job token lifetime: $life s (limit $X_LIMIT_MIN min + 150 s margin)"
    [ "$life" -gt 0 ] && [ "$life" -le $((X_LIMIT_MIN * 60 + 150)) ] ||
        t_fail "job token lifetime $life s is not within the job's time limit plus margin"
    assert_eq 1 "$(($(x_stat '.successes["token-exchange"]') - te0))" "token exchanges at the IdP"
    fp="sha256:$(sha "$tok" | cut -c1-12)"
    line=$(slurmd_log | grep "job=$id step=batch" | grep "exchanged=yes" | head -n 1)
    assert_contains "$line" "token=$fp exchanged=yes subject=$u client_id=qlam-cli audience=$X_STORAGE scope=storage.read" \
        "slurmd's audit line"
    after=$(x_wait_inactive "$tok" 15)
    assert_eq false "$(jq -r .active <<<"$after")" "introspection after the job"
    assert_contains "$(slurmd_log | grep "job=$id revoked")" "$fp" "slurmd logs the revocation"
else
    t_fail "sbatch --qlam-auth failed for $u with exchange=required"
fi
t_pass

# --- x2 --------------------------------------------------------------------------------------
t_begin "x2: a scope beyond the site's is refused at submission; nothing is queued"
u=qa1
before=$(squeue -h -u $u | wc -l)
if out=$(printf '#!/bin/bash\ntrue\n' | x_submit $u x2 "storage.read storage.admin" 2>&1); then
    JOBS+=("${out%%;*}")
    t_fail "sbatch accepted a scope beyond the site's: $out"
fi
assert_contains "$out" "the scope 'storage.admin' is not allowed for job tokens here" "sbatch message"
assert_contains "$out" "allowed: storage.read storage.write" "sbatch names what is allowed"
assert_eq "$before" "$(squeue -h -u $u | wc -l)" "nothing queued"
t_pass

# --- x3 --------------------------------------------------------------------------------------
t_begin "x3: an IdP without the grant: required fails the job (node idle); preferred gives the user's token with the reason logged"
x_grant false
u=qa5; h=$(user_home $u)
if id=$(printf '#!/bin/bash\necho script-ran\n' | x_submit $u x3r ""); then
    JOBS+=("$id")
    assert_eq "FAILED 1:0" "$(wait_job "$id" 60 || true)" "job state with exchange=required"
    out=$(cat "$h/e2e/x3r-$id.out" 2>/dev/null || true)
    assert_contains "$out" "token exchange is required on this cluster" "the job's output says why"
    assert_contains "$out" "unsupported_grant_type" "the job's output names the IdP's answer"
    assert_not_contains "$out" "script-ran" "the script did not run"
    assert_eq idle "$(settled_node_state)" "node state"
else
    t_fail "sbatch failed for $u"
fi
x_plugin preferred
if id=$(printf '%s' "$x_job" | x_submit $u x3p ""); then
    JOBS+=("$id")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id" 60 || true)" "job state with exchange=preferred"
    out=$(cat "$h/e2e/x3p-$id.out" 2>/dev/null || true)
    tok=$(cat "$h/e2e/x3p-$id.token" 2>/dev/null || true)
    [ -n "$tok" ] && echo "$tok" >>"$SECRETS"
    assert_eq 200 "$(sed -n 's/^userinfo=//p' <<<"$out")" "the job has the user's own (API) token"
    assert_eq "$X_API" "$(jwt_claims "$tok" | jq -r .aud)" "its audience"
    assert_contains "$(slurmd_log | grep "job=$id: token exchange failed")" \
        "the job gets the user's own token (exchange=preferred)" "slurmd logs the reason"
    assert_eq 200 "$(userinfo_status "$tok")" "the user's token is not revoked after the job"
else
    t_fail "sbatch failed for $u with exchange=preferred"
fi
x_grant true
t_pass

# --- x4 --------------------------------------------------------------------------------------
t_begin "x4: a $X_TASKS-task array with an expired login: one refresh in all, one exchange per task, all revoked"
x_plugin required
u=qa6; h=$(user_home $u)
f=$(store_file $u)
as_user $u /usr/bin/python3 "$here/store_tool.py" expire "$f"
r0=$(idp_refreshes)
te0=$(x_stat '.successes["token-exchange"]')
script='#!/bin/bash
umask 077
tr -d "[:space:]" < "$QLAM_TOKEN_FILE" > "$HOME/e2e/x4-$SLURM_ARRAY_JOB_ID-$SLURM_ARRAY_TASK_ID.token"
'
if arr=$(printf '%s' "$script" | x_submit $u x4 "" --array=1-$X_TASKS -o "$h/e2e/x4-%A_%a.out"); then
    res=$(wait_job "$arr" 120 || true)
    mapfile -t task_ids < <(scontrol -o show job "$arr" | grep -o '^JobId=[0-9]*' | cut -d= -f2)
    JOBS+=("${task_ids[@]}")
    assert_eq "$X_TASKS" "$(grep -c '^COMPLETED 0:0$' <<<"$res" || true)" "COMPLETED tasks"
    mapfile -t toks < <(for i in $(seq 1 $X_TASKS); do cat "$h/e2e/x4-$arr-$i.token" 2>/dev/null; echo; done | grep .)
    X_TOKENS+=("${toks[@]}")
    printf '%s\n' "${toks[@]}" >>"$SECRETS"
    assert_eq "$X_TASKS" "$(printf '%s\n' "${toks[@]}" | sort -u | grep -c .)" "distinct job tokens"
    assert_eq 1 "$(($(idp_refreshes) - r0))" "refreshes of the user's token at the IdP"
    assert_eq "$X_TASKS" "$(($(x_stat '.successes["token-exchange"]') - te0))" "token exchanges (one per task)"
    active=0
    for t in "${toks[@]}"; do
        [ "$(jq -r .active <<<"$(x_wait_inactive "$t" 15)")" = false ] || active=$((active + 1))
    done
    assert_eq 0 "$active" "job tokens still active after the array"
    long=0
    for j in "${task_ids[@]}"; do
        l=$(slurmd_log | grep "job=$j step=batch" | grep -o 'exchanged=yes.* expires_in_s=[0-9]*' | sed 's/.*=//' | head -n 1)
        [ -n "$l" ] && [ "$l" -le "$X_MAX" ] || long=$((long + 1))
    done
    assert_eq 0 "$long" "tasks whose job token lived longer than exchange_max_lifetime=$X_MAX (or had no audit line)"
else
    t_fail "sbatch --array failed for $u"
fi
t_pass

# --- x5 --------------------------------------------------------------------------------------
t_begin "x5: no exchanged token in Slurm's logs or state"
xn=$RUN/x-needles
install -m 0600 /dev/null "$xn"
printf '%s\n' "${X_TOKENS[@]}" | awk 'length($0) >= 20' >"$xn"
assert_eq "$((X_TASKS + 1))" "$(grep -c . "$xn")" "exchanged tokens collected"
leaks=$(grep -lFa -f "$xn" /var/log/slurm/*.log 2>/dev/null || true)
leaks+=$(grep -rlFa -f "$xn" /var/lib/slurm 2>/dev/null || true)
assert_eq "" "$leaks" "files holding an exchanged token"
rm -f "$xn"
t_pass

# Back to the plugin line of the other cases.
bash "$ROOT/tests/slurm/install-plugin.sh" "$ROOT/target/release/libqlam_spank.so" "$plug_args" \
    --state "$SLURM_STATE" >/dev/null
