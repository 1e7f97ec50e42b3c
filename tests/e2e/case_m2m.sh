# shellcheck shell=bash disable=SC2154,SC2012  # sourced by run.sh (plug_args etc. are its)
# Case m of tests/e2e/run.sh: site service accounts (plugstack `m2m=NAME:FILE[:GROUPS]`).
#
# Meant to be sourced by run.sh after case j, before `t_summary` (it uses run.sh's variables
# and helpers: ROOT, RUN, CA, ISSUER, TOKEN_DIR, SLURM_STATE, plug_args, JOBS, as_user,
# user_home, wait_job, job_out, jwt_claims, t_begin/t_pass/assert_*). Hook, one line in run.sh:
#
#   [ -f "$here/case_m2m.sh" ] && ! skipped m && . "$here/case_m2m.sh"
#
# Checks:
#   m1  sbatch refuses a user outside the account's public group list; nothing is queued
#   m2  a 24-task array of a member gets the account's token in every task: one
#       client_credentials request at the IdP for all 24, the same token everywhere
#   m3  the job never sees the secret, cannot read the account file or the root-only cache
#   m4  without a public list, a non-member's job fails on the node (task_init), node stays idle
#   m5  the cache and its budget file are root's, 0700/0600; the budget counts 1 request

M2M_NAME=qpu-ci
M2M_FILE=/etc/qlam/m2m/$M2M_NAME.json
# Outside the checkout: every directory above m2m_cache must be root's and not writable by
# others (the plugin checks), and a checkout may live under /tmp.
M2M_CACHE=/var/cache/qlam-auth-e2e/m2m
M2M_SECRET=m2m-secret
m2m_requests() {
    curl -sf --cacert "$CA" --max-time 10 "$ISSUER/_test/stats" |
        jq -r '.token_requests.client_credentials // 0'
}
m2m_plugin() { # EXTRA PLUGSTACK ARGS
    bash "$ROOT/tests/slurm/install-plugin.sh" "$ROOT/target/release/libqlam_spank.so" \
        "$plug_args m2m_cache=$M2M_CACHE $*" --state "$SLURM_STATE" >/dev/null
}
m2m_submit() { # USER NAME [SBATCH ARGS...] < script
    local u=$1 name=$2 h
    shift 2
    h=$(user_home "$u")
    as_user "$u" sbatch --parsable "--qlam-auth=$M2M_NAME" -J "$name" -D "$h" \
        -o "$h/e2e/$name-%A_%a.out" "$@"
}

say "m: site service account $M2M_NAME (groups: qpu = qa3)"
groupadd -f qpu
usermod -aG qpu qa3
gpasswd -d qa1 qpu >/dev/null 2>&1 || true
install -d -m 0755 /etc/qlam
install -d -m 0700 /etc/qlam/m2m
umask_old=$(umask); umask 077
jq -n --arg iss "$ISSUER" --arg s "$M2M_SECRET" '{issuer: $iss, client_id: "qlam-m2m",
    client_secret: $s, audience: "https://slurm.example/api", allowed_groups: ["qpu"],
    monthly_budget: 100}' >"$M2M_FILE"
umask "$umask_old"
chmod 0600 "$M2M_FILE"
rm -rf "$M2M_CACHE"
install -d -o root -g root -m 0755 /var/cache/qlam-auth-e2e

# --- m1 ---------------------------------------------------------------------------------------
t_begin "m1: sbatch --qlam-auth=$M2M_NAME refuses a user outside the public group list"
m2m_plugin "m2m=$M2M_NAME:$M2M_FILE:qpu"
before=$(squeue -h -u qa1 | wc -l)
if out=$(printf '#!/bin/bash\ntrue\n' | m2m_submit qa1 m1 2>&1); then
    JOBS+=("${out%%;*}")
    t_fail "sbatch accepted a non-member: $out"
fi
assert_contains "$out" "not allowed to use the site service account '$M2M_NAME'" "sbatch message"
assert_eq "$before" "$(squeue -h -u qa1 | wc -l)" "nothing queued"
t_pass

# --- m2, m3 -----------------------------------------------------------------------------------
t_begin "m2/m3: a 24-task array of a member: one token request, same token everywhere, no secret in the job"
u=qa3; h=$(user_home $u)
cc0=$(m2m_requests)
# shellcheck disable=SC2016  # expanded by the job
script='#!/bin/bash
umask 077
tr -d "[:space:]" < "$QLAM_TOKEN_FILE" > "$HOME_E2E/m2-$SLURM_ARRAY_JOB_ID-$SLURM_ARRAY_TASK_ID.token"
env | grep -c "'"$M2M_SECRET"'" || true
cat '"$M2M_FILE"' >/dev/null 2>&1 && echo "account_file=readable" || echo "account_file=unreadable"
ls '"$M2M_CACHE"' >/dev/null 2>&1 && echo "cache=readable" || echo "cache=unreadable"
echo "token_file=$QLAM_TOKEN_FILE"
'
if arr=$(printf '%s' "$script" | sed "2i HOME_E2E=$h/e2e" | m2m_submit $u m2 --array=1-24); then
    arr=${arr%%;*}
    for i in $(seq 1 24); do
        JOBS+=("${arr}_$i")
        assert_eq "COMPLETED 0:0" "$(wait_job "${arr}_$i" 120 || true)" "task $i"
    done
    toks=$(cat "$h"/e2e/m2-"$arr"-*.token 2>/dev/null | sort -u)
    assert_eq 24 "$(ls "$h"/e2e/m2-"$arr"-*.token 2>/dev/null | wc -l)" "token copies"
    assert_eq 1 "$(printf '%s\n' "$toks" | grep -c .)" "one token for all 24 tasks"
    assert_eq 1 "$(($(m2m_requests) - cc0))" "client_credentials requests at the IdP"
    assert_eq '"qlam-m2m" "https://slurm.example/api"' \
        "$(jwt_claims "$toks" | jq -r '"\"\(.client_id)\" \"\(.aud)\""')" "token client and audience"
    outs=$(cat "$h"/e2e/m2-"$arr"_*.out 2>/dev/null)
    assert_not_contains "$outs" "$M2M_SECRET" "the secret in a job's output or environment"
    assert_not_contains "$outs" "account_file=readable" "the job reads the account file"
    assert_not_contains "$outs" "cache=readable" "the job lists the root-only cache"
    assert_contains "$outs" "token_file=$TOKEN_DIR/" "token file delivered"
    printf '%s\n' "$toks" >>"$SECRETS"
else
    t_fail "sbatch --qlam-auth=$M2M_NAME --array failed for member $u"
fi
t_pass

# --- m4 ---------------------------------------------------------------------------------------
t_begin "m4: without a public group list, a non-member's job fails on the node; the node stays up"
m2m_plugin "m2m=$M2M_NAME:$M2M_FILE"
cc0=$(m2m_requests)
if id4=$(printf '#!/bin/bash\necho ran\n' | m2m_submit qa1 m4); then
    id4=${id4%%;*}; JOBS+=("$id4")
    assert_eq "FAILED 1:0" "$(wait_job "$id4" 60 || true)" "job state"
    assert_contains "$(cat "$(user_home qa1)"/e2e/m4-"$id4"_*.out "$(user_home qa1)"/e2e/m4-"$id4"*.out 2>/dev/null)" \
        "not allowed to use the site service account" "the job's output says why"
    assert_eq 0 "$(($(m2m_requests) - cc0))" "no token request for a refused job"
    assert_eq idle "$(settled_node_state)" "node state"
else
    t_fail "sbatch refused although no public group list is configured"
fi
t_pass

# --- m5 ---------------------------------------------------------------------------------------
t_begin "m5: the account's cache is root-only and its budget file counts one request"
assert_file_mode "$M2M_CACHE/$M2M_NAME" 700
assert_eq root "$(stat -c %U "$M2M_CACHE/$M2M_NAME")" "cache owner"
bf=$(ls "$M2M_CACHE/$M2M_NAME"/budget_qlam-m2m_*.json 2>/dev/null | head -n 1)
[ -n "$bf" ] || t_fail "no budget file in $M2M_CACHE/$M2M_NAME"
[ -z "$bf" ] || assert_file_mode "$bf" 600
[ -z "$bf" ] || assert_eq 1 "$(jq -r .requests "$bf")" "requests counted this month"
t_pass

# Back to the plugin line of the other cases.
bash "$ROOT/tests/slurm/install-plugin.sh" "$ROOT/target/release/libqlam_spank.so" "$plug_args" \
    --state "$SLURM_STATE" >/dev/null
# The account file and the test cache are this test's: leave nothing behind.
rm -f "$M2M_FILE"
rmdir /etc/qlam/m2m /etc/qlam 2>/dev/null || true
rm -rf "$M2M_CACHE"
rmdir /var/cache/qlam-auth-e2e 2>/dev/null || true
