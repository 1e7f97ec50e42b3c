#!/usr/bin/env bash
# End-to-end tests of qlam-auth on several nodes in the production-like configuration:
# 3 compute nodes (TEST_SLURM_NODES=3 tests/slurm/up.sh: slurmd -N qn1..qn3, each in its own mount
# and UTS namespace with a node-local /run/qlam-auth, all sharing /home), proctrack/cgroup,
# task/cgroup and PrologFlags=Contain (an extern step on every node of a job), the real test IdP.
#
#   sudo bash tests/e2e/run-multinode.sh
#
#   n1  sbatch -N3 --qlam-auth with an expired token, srun on every node (2 tasks each): every
#       task on every node holds the same valid token in its file, BEARER_TOKEN_FILE and
#       QLAM_ACCESS_TOKEN; one refresh at the IdP for the whole job; the extern step ran on every
#       node without an error; afterwards, on every node: no token directory, no process of the
#       user (the job leaves a setsid'd process behind on purpose), node idle
#   n2  a 6-task array (one task per node at a time) with an expired token: the tasks ran on all
#       3 nodes, one refresh in all, the same token everywhere; clean on every node
#   n3  scancel of a running 3-node job: while it runs every node has the token file; after,
#       on every node: no token directory, no process of the user, node idle
#   n4  slurmd of qn2 restarts while a 3-node job runs: the token file on qn2 stays valid, the
#       job completes, and the new slurmd's epilog still removes the token directory on qn2
#
# Prints `e2e: N passed, N failed`; exits 1 if anything failed. Everything it starts is stopped
# on exit. State: tests/.run/e2e-multinode/. Safe to run twice in a row. Run it under the
# Slurm lock on a shared machine: flock /tmp/qlam-slurm.lock bash tests/e2e/run-multinode.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$here/../.." && pwd)
# shellcheck source=tests/lib/assert.sh
. "$ROOT/tests/lib/assert.sh"
# For NODE_NS_DIR, node_logfile, in_node (the node namespaces up.sh made).
# shellcheck source=tests/slurm/lib.sh
. "$ROOT/tests/slurm/lib.sh"

RUN=$ROOT/tests/.run/e2e-multinode
SLURM_STATE=$RUN/slurm
IDP_STATE=$RUN/idp
USER_BIN=$RUN/bin
CA=$RUN/ca.pem
TOKEN_DIR=/run/qlam-auth
NODES=(qn1 qn2 qn3)
MN_USERS=(qam1 qam2 qam3 qam4)
CLEAN_SECS=30                 # bound for a job's cleanup on every node
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"

say() { printf '\n==> %s\n' "$*"; }
die() { echo "e2e-multinode: error: $*" >&2; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
[ "$(id -u)" -eq 0 ] || die "must run as root (it starts Slurm and creates users)"
t_start=$(now_ms)

cleanup() { # run by e2e_on_exit
    e2e_teardown "${MN_USERS[@]}"
    echo "e2e-multinode: total $((($(now_ms) - t_start) / 1000)) s"
}
e2e_on_exit cleanup

# --- setup -------------------------------------------------------------------------------------
bash "$ROOT/tests/slurm/install-deps.sh"
say "building release binaries"
e2e_build_release 1 || die "cargo build failed"
t_setup=$(now_ms)
mkdir -p "$RUN"
chmod 0755 "$ROOT/tests/.run" "$RUN"
rm -rf "$USER_BIN" "$RUN/logins"
install -d -m 0755 "$USER_BIN"
install -d -m 0700 "$RUN/logins"
install -m 0755 "$ROOT/target/release/qlam-auth" "$USER_BIN/qlam-auth"

say "starting Slurm: 3 nodes, cgroup profile (tests/slurm/up.sh)"
TEST_SLURM_NODES=${#NODES[@]} TEST_SLURM_PROFILE=cgroup bash "$ROOT/tests/slurm/up.sh" "$SLURM_STATE"
sinfo -N -o '%N %T %c %m'

say "starting the test IdP"
idp_users=$(for u in "${MN_USERS[@]}"; do printf '%s:%s-pw,' "$u" "$u"; done)
ISSUER=$(start_idp "$IDP_STATE" "${idp_users%,}") || die "the test IdP did not start"
install -m 0644 "$IDP_STATE/ca.pem" "$CA"

say "users ${MN_USERS[*]}: config init and qlam-auth login --device"
bash "$ROOT/tests/slurm/users.sh" "${MN_USERS[@]}"
pids=()
for u in "${MN_USERS[@]}"; do
    h=$(user_home "$u")
    rm -rf "$h/.qsh" "$h/e2e"
    install -d -o "$u" -g "$(id -g "$u")" -m 0700 "$h/e2e"
    as_user "$u" qlam-auth config init --issuer "$ISSUER" --client-id qlam-cli \
        --audience https://slurm.example/api --tenant e2e >/dev/null ||
        die "$u: qlam-auth config init failed"
    login_user "$u" "$RUN/logins/$u.out" --device --no-qr &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || die "a login failed (see above)"; done

say "installing the SPANK plugin on every node"
bash "$ROOT/tests/slurm/install-plugin.sh" "$ROOT/target/release/libqlam_spank.so" \
    "ca_bundle=$CA token_dir=$TOKEN_DIR timeout=10 issuers=$ISSUER renewer=$USER_BIN/qlam-auth" \
    --state "$SLURM_STATE"
declare -A log_off
for n in "${NODES[@]}"; do log_off[$n]=$(stat -c %s "$(node_logfile "$n")"); done
node_log() { tail -c +"$((${log_off[$1]} + 1))" "$(node_logfile "$1")" 2>/dev/null; }
t_cases=$(now_ms)

# --- helpers -----------------------------------------------------------------------------------
job_out() { cat "$(user_home "$1")/e2e/$2" 2>/dev/null || echo "<no output file $2>"; }
expire() { # USER: age the stored access token (as cases c and g of run.sh do)
    as_user "$1" /usr/bin/python3 "$here/store_tool.py" expire "$(store_file "$1")"
}
# What is left of job(s) on the nodes: token directories (per node), processes of USER, nodes
# not idle. Empty when clean.
leftovers() { # USER JOBID...
    local u=$1 n j left=
    shift
    for n in "${NODES[@]}"; do
        for j in "$@"; do
            in_node "$n" test -e "$TOKEN_DIR/$j" && left+="$n:$TOKEN_DIR/$j "
        done
    done
    for j in "$@"; do [ -e "$TOKEN_DIR/$j" ] && left+="host:$TOKEN_DIR/$j "; done
    pgrep -u "$u" >/dev/null && left+="processes of $u: $(pgrep -u "$u" -a | tr '\n' ';') "
    left+=$(sinfo -h -N -o '%N %T' | sort -u | awk '$2 != "idle" && $2 != "planned" {printf "%s is %s ", $1, $2}')
    echo "$left"
}
# Bounded wait (CLEAN_SECS) until nothing of the jobs is left on any node; assert it.
assert_clean() { # USER JOBID...
    local i left
    for ((i = 0; i < CLEAN_SECS * 5; i++)); do
        left=$(leftovers "$@")
        [ -z "$left" ] && break
        sleep 0.2
    done
    assert_eq "" "$left" "left on the nodes ${CLEAN_SECS}s after job(s) $* of $1 ended"
}
# Every node's slurmd.log lines of this run that report an error for job JOB.
job_errors() { # JOBID
    local n
    for n in "${NODES[@]}"; do node_log "$n" | grep -E "\[$1(\.[a-z0-9]+)?\] error:" | sed "s/^/$n: /"; done
    return 0
}
# The report line of a step (bash -c "$line" _ LABEL): node, hostname, and fingerprints of
# what the step holds.
# shellcheck disable=SC2016  # expanded by the job
task_line='echo "$1 node=$SLURMD_NODENAME host=$(hostname) rank=$SLURM_PROCID" \
"file=$QLAM_TOKEN_FILE bearer=$BEARER_TOKEN_FILE" \
"file_sha=$(tr -d "[:space:]" < "$QLAM_TOKEN_FILE" | sha256sum | cut -c1-64)" \
"bearer_sha=$(tr -d "[:space:]" < "$BEARER_TOKEN_FILE" | sha256sum | cut -c1-64)" \
"env_sha=$(printf %s "$QLAM_ACCESS_TOKEN" | sha256sum | cut -c1-64)" \
"mode=$(stat -c %a:%U "$QLAM_TOKEN_FILE")"'
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }   # KEY LINES -> values

# --- n1: a 3-node job, srun on every node --------------------------------------------------------
t_begin "n1: sbatch -N3 --qlam-auth (expired token), srun on every node: same valid token in every task, one refresh, extern step fine, clean on every node"
u=qam1; h=$(user_home $u)
expire $u
r0=$(idp_refreshes)
t=$(now_ms)
if id1=$(submit $u n1 -N3 --ntasks-per-node=2 <<EOF
#!/bin/bash
umask 077
tr -d '[:space:]' < "\$QLAM_TOKEN_FILE" > "$h/e2e/n1-\$SLURM_JOB_ID.token"
line='$task_line'
bash -c "\$line" _ batch
squeue -h -s -j "\$SLURM_JOB_ID" -o '%i %N'
srun bash -c "\$line" _ task
# A process that outlives the script in its own session (as a daemon, or a renewer, would):
# process tracking must still end it with the job.
setsid sleep 300 </dev/null >/dev/null 2>&1 &
EOF
); then
    res=$(wait_job "$id1" 60 || true)
    echo "  job $id1: $(($(now_ms) - t)) ms from sbatch to its end"
    assert_eq "COMPLETED 0:0" "$res" "job $id1 state"
    out=$(job_out $u "n1-$id1.out")
    tok=$(cat "$h/e2e/n1-$id1.token" 2>/dev/null || true)
    tasks=$(grep '^task ' <<<"$out" || true)
    assert_eq 6 "$(grep -c . <<<"$tasks" || true)" "srun task lines (3 nodes x 2)"
    assert_eq "qn1:2 qn2:2 qn3:2" "$(kv node "$tasks" | sort | uniq -c | awk '{printf "%s%s:%s", s, $2, $1; s=" "}')" \
        "tasks per node"
    assert_eq "$(kv node "$tasks")" "$(kv host "$tasks")" "each task's hostname is its node's"
    all=$(grep -E '^(batch|task) ' <<<"$out" || true)
    assert_eq 1 "$(grep -c '^batch ' <<<"$all" || true)" "the batch step's line"
    assert_eq "$(sha "$tok")" "$( (kv file_sha "$all"; kv bearer_sha "$all"; kv env_sha "$all") | sort -u)" \
        "the batch step and every task: file, BEARER_TOKEN_FILE and QLAM_ACCESS_TOKEN hold the job's token"
    assert_eq "$TOKEN_DIR/$id1/token" "$( (kv file "$all"; kv bearer "$all") | sort -u)" "token file path on every node"
    assert_eq "600:$u" "$(kv mode "$all" | sort -u)" "token file mode and owner on every node"
    assert_eq 200 "$(userinfo_status "$tok")" "the job's token at the IdP's userinfo"
    assert_eq 1 "$(($(idp_refreshes) - r0))" "refresh requests at the IdP for the whole 3-node job"
    # The extern step of PrologFlags=Contain: it ran on every node and nothing failed.
    assert_contains "$out" "$id1.extern qn[1-3]" "squeue -s during the job: the extern step on all 3 nodes"
    for n in "${NODES[@]}"; do
        assert_contains "$(node_log $n)" "[$id1.extern] done with job" "$n: slurmd.log has the extern step's end"
        # The option is not visible there: the plugin fetches and writes nothing in it.
        assert_eq "" "$(node_log $n | grep -F "[$id1.extern] qlam-auth:" || true)" \
            "$n: the plugin's lines in the extern step"
    done
    assert_eq "" "$(job_errors "$id1")" "errors logged for job $id1 on the nodes"
    for n in qn2 qn3; do   # not the batch node: the token came from the user's store, no refresh
        assert_contains "$(node_log $n | grep -E "job=$id1 step=0 ")" "refreshed=no" \
            "$n: its first step took the refreshed token from the store (slurmd.log)"
    done
    assert_clean $u "$id1"
    echo "  token claims: $(jwt_claims "$tok" | jq -c '{iss, sub, aud, azp, client_id, scope, exp_in_s: (.exp - now | floor)}' 2>/dev/null)"
    echo "  job output (token fingerprints cut to 12 hex digits):"
    indent "$(sed -E 's/(_sha=[0-9a-f]{12})[0-9a-f]{52}/\1/g' <<<"$out")"
    echo "  plugin lines on the nodes:"
    for n in "${NODES[@]}"; do
        node_log $n | grep -E "\[$id1\.[a-z0-9]+\] qlam-auth: " | sed -E "s/^\[[^]]*\] /    $n /"
    done
    t_ok || indent "$out"
else
    t_fail "sbatch -N3 --qlam-auth failed for $u"
fi
t_pass

# --- n2: an array spread over the nodes --------------------------------------------------------
t_begin "n2: a 6-task array over the 3 nodes with an expired token: one refresh, the same valid token in every task, clean on every node"
u=qam2; h=$(user_home $u)
expire $u
r0=$(idp_refreshes)
t=$(now_ms)
# --exclusive: one task per node at a time, so the first three run on three different nodes.
# shellcheck disable=SC2016  # expanded by the job
if id2=$(printf '%s\n' '#!/bin/bash' \
        'echo "task node=$SLURMD_NODENAME sha=$(tr -d "[:space:]" < "$QLAM_TOKEN_FILE" | sha256sum | cut -c1-64)"' |
        submit $u n2 --array=1-6 --exclusive -o "$h/e2e/n2-%A_%a.out"); then
    res=$(wait_job "$id2" 90 || true)
    echo "  array: $(($(now_ms) - t)) ms"
    assert_eq 6 "$(grep -c '^COMPLETED 0:0$' <<<"$res" || true)" "COMPLETED tasks"
    mapfile -t task_ids < <(scontrol -o show job "$id2" | grep -o '^JobId=[0-9]*' | cut -d= -f2)
    lines=$(cat "$h"/e2e/n2-"$id2"_*.out 2>/dev/null || true)
    assert_eq "qn1 qn2 qn3" "$(kv node "$lines" | sort -u | tr '\n' ' ' | sed 's/ $//')" "nodes the tasks ran on"
    shas=$(kv sha "$lines")
    assert_eq 6 "$(grep -cE '^[0-9a-f]{64}$' <<<"$shas" || true)" "tasks that saw a token"
    stored=$(python3 "$here/store_tool.py" get "$(store_file $u)" access_token)
    assert_eq "$(sha "$stored")" "$(sort -u <<<"$shas")" "every task holds the refreshed token of the store"
    assert_eq 200 "$(userinfo_status "$stored")" "that token at the IdP's userinfo"
    assert_eq 1 "$(($(idp_refreshes) - r0))" "refresh requests at the IdP for the whole array"
    assert_eq "" "$(for j in "${task_ids[@]}"; do job_errors "$j"; done)" "errors logged for the array on the nodes"
    assert_clean $u "${task_ids[@]}"
    echo "  tasks per node: $(kv node "$lines" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')"
else
    t_fail "sbatch --array failed for $u"
fi
t_pass

# --- n3: scancel in the middle -----------------------------------------------------------------
t_begin "n3: scancel of a running 3-node job: clean on every node, nodes idle"
u=qam3; h=$(user_home $u)
# shellcheck disable=SC2016  # expanded by the job
if id3=$(printf '%s\n' '#!/bin/bash' \
        "srun bash -c 'touch $h/e2e/n3-\$SLURM_JOB_ID.\$SLURMD_NODENAME; exec sleep 300'" |
        submit $u n3 -N3); then
    for ((i = 0; i < 150; i++)); do
        [ "$(ls "$h/e2e/" | grep -c "^n3-$id3\.qn")" = 3 ] && break
        sleep 0.2
    done
    assert_eq 3 "$(ls "$h/e2e/" | grep -c "^n3-$id3\.qn" || true)" "tasks running on the 3 nodes"
    for n in "${NODES[@]}"; do
        in_node "$n" test -s "$TOKEN_DIR/$id3/token" || t_fail "$n: no token file while the job runs"
    done
    t=$(now_ms)
    scancel "$id3"
    assert_eq CANCELLED "$(wait_job "$id3" 60 | cut -d' ' -f1 || true)" "job $id3 state after scancel"
    assert_clean $u "$id3"
    echo "  clean $(($(now_ms) - t)) ms after scancel"
    # Slurm itself logs errors for a cancelled step (CANCELLED, "Failed to send MESSAGE_TASK_EXIT"):
    # only the plugin's count here.
    assert_eq "" "$(job_errors "$id3" | grep -E 'qlam-auth|spank' || true)" \
        "the plugin's errors logged for job $id3 on the nodes"
else
    t_fail "sbatch -N3 --qlam-auth failed for $u"
fi
t_pass

# --- n4: a slurmd restart while a job runs ------------------------------------------------------
t_begin "n4: slurmd of qn2 restarts while a 3-node job runs: qn2's token file stays valid, cleanup still happens"
u=qam4; h=$(user_home $u)
rm -f "$h/e2e/n4-go"
# shellcheck disable=SC2016  # expanded by the job
if id4=$(submit $u n4 -N3 <<EOF
#!/bin/bash
umask 077
tr -d '[:space:]' < "\$QLAM_TOKEN_FILE" > "$h/e2e/n4-\$SLURM_JOB_ID.token"
line='$task_line'
srun bash -c "touch $h/e2e/n4-\$SLURM_JOB_ID.\\\$SLURMD_NODENAME; until [ -e $h/e2e/n4-go ]; do sleep 0.2; done; \$line" _ task
EOF
); then
    for ((i = 0; i < 150; i++)); do
        [ "$(ls "$h/e2e/" | grep -c "^n4-$id4\.qn")" = 3 ] && break
        sleep 0.2
    done
    assert_eq 3 "$(ls "$h/e2e/" | grep -c "^n4-$id4\.qn" || true)" "tasks running on the 3 nodes"
    tok=$(cat "$h/e2e/n4-$id4.token" 2>/dev/null || true)
    old=$(cat "$(node_pidfile qn2)")
    bash "$ROOT/tests/slurm/restart-slurmd.sh" "$SLURM_STATE" --node qn2
    new=$(cat "$(node_pidfile qn2)")
    [ "$old" != "$new" ] || t_fail "slurmd of qn2 was not restarted (pid $old)"
    for ((i = 0; i < 100; i++)); do
        st=$(sinfo -h -n qn2 -o %T)
        case $st in allocated | mixed) break ;; esac
        sleep 0.2
    done
    assert_eq allocated "$st" "qn2's state after its slurmd restarted (the job goes on)"
    assert_eq "$(sha "$tok")" "$(in_node qn2 cat "$TOKEN_DIR/$id4/token" | tr -d '[:space:]' | sha256sum | cut -c1-64)" \
        "qn2's token file still holds the job's token"
    assert_eq 200 "$(userinfo_status "$tok")" "the token at the IdP's userinfo"
    runuser -u $u -- touch "$h/e2e/n4-go"
    assert_eq "COMPLETED 0:0" "$(wait_job "$id4" 60 || true)" "job $id4 state"
    out=$(job_out $u "n4-$id4.out")
    assert_eq "qn1 qn2 qn3" "$(kv node "$out" | sort | tr '\n' ' ' | sed 's/ $//')" "tasks that reported after the restart"
    assert_eq "$(sha "$tok")" "$(kv file_sha "$out" | sort -u)" "every task still reads the job's token"
    assert_clean $u "$id4"
    assert_contains "$(node_log qn2)" "job=$id4 token directory removed" \
        "the restarted slurmd of qn2 removed the job's token directory"
    assert_eq "" "$(job_errors "$id4")" "errors logged for job $id4 on the nodes"
    t_ok || indent "$out"
else
    t_fail "sbatch -N3 --qlam-auth failed for $u"
fi
t_pass

echo
echo "timing: setup $(((t_cases - t_setup) / 1000)) s, cases $((($(now_ms) - t_cases) / 1000)) s"
t_summary
