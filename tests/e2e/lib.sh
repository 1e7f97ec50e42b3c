# shellcheck shell=bash
# Helpers shared by tests/e2e/run.sh, run-multinode.sh, their case_*.sh and demo/run.sh (sourced,
# not run).
#
# Expects: ROOT (the repository), and, once the IdP is up, ISSUER and CA (a world-readable copy
# of the test IdP's CA). USER_BIN is put first on the users' PATH (where qlam-auth is).

: "${USER_BIN:=/usr/local/bin}"

# Run a command as USER, from their home, with a clean environment (as a user logged in on a
# login node would have it) plus the CA of the test IdP in SSL_CERT_FILE.
as_user() { # USER CMD...
    local u=$1 home
    shift
    home=$(getent passwd "$u" | cut -d: -f6)
    (cd "$home" && runuser -u "$u" -- env -i \
        HOME="$home" USER="$u" LOGNAME="$u" SHELL=/bin/bash LANG=C.UTF-8 \
        PATH="$USER_BIN:/usr/local/bin:/usr/bin:/bin" \
        ${CA:+SSL_CERT_FILE="$CA"} "$@")
}

user_home() { getent passwd "$1" | cut -d: -f6; }

# The user's only credentials file (QLAM Core's cache_<key>_<sha256>.json), or nothing.
store_file() { # USER
    local f
    for f in "$(user_home "$1")"/.qsh/credentials/cache_*.json; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

# Log USER in with `qlam-auth login ARGS...` (device flow: the CLI picks it without a display)
# and approve the code headlessly through the IdP's
# real pages (tests/idp/approve.mjs), as the user would on their phone. The CLI's output goes to
# OUT. To show a QR code the CLI needs a terminal:
# with LOGIN_TTY=1 it runs under script(1).
login_user() { # USER OUT [LOGIN ARGS...]
    local u=$1 out=$2 pid code i rc=0
    shift 2
    : >"$out"
    if [ "${LOGIN_TTY:-0}" = 1 ]; then
        # script(1) gives the CLI a terminal (for the QR code); its copy of the output goes to OUT.
        local cmd="qlam-auth login"
        local a
        for a in "$@"; do cmd+=" $(printf '%q' "$a")"; done
        as_user "$u" script -qfec "$cmd" /dev/null </dev/null >"$out" 2>&1 &
    else
        as_user "$u" qlam-auth login "$@" </dev/null >"$out" 2>&1 &
    fi
    pid=$!
    code=
    for ((i = 0; i < 200; i++)); do   # 20 s
        code=$(sed 's/\x1b\[[0-9;]*m//g' "$out" | sed -n 's/^ *2\. *Enter  *\([A-Za-z0-9-]*\).*/\1/p' | head -n 1)
        [ -n "$code" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$code" ]; then
        echo "login_user $u: no user code in the output of qlam-auth login:" >&2
        sed 's/^/  | /' "$out" >&2
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        return 1
    fi
    if ! node "$ROOT/tests/idp/approve.mjs" --issuer "$ISSUER" --ca "$CA" \
            --user "$u" --password "$u-pw" --user-code "$code" >>"$out.approve" 2>&1; then
        echo "login_user $u: approval of code $code failed:" >&2
        sed 's/^/  | /' "$out.approve" >&2
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        return 1
    fi
    wait "$pid" || rc=$?
    if [ "$rc" != 0 ]; then
        echo "login_user $u: qlam-auth login exited $rc:" >&2
        sed 's/^/  | /' "$out" >&2
        return 1
    fi
}

# HTTP status of the IdP's userinfo endpoint for an access token (200 = valid).
userinfo_status() { # TOKEN
    curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" --max-time 10 \
        -H "Authorization: Bearer $1" "$ISSUER/me" || echo 000
}

# Count of refresh-token requests the IdP has seen.
idp_refreshes() {
    curl -sf --cacert "$CA" --max-time 10 "$ISSUER/_test/stats" |
        jq -r '.token_requests.refresh_token // 0'
}

# The claims of a JWT (header and signature left out), as compact JSON.
jwt_claims() { # TOKEN
    local p
    p=$(cut -d. -f2 <<<"$1" | tr '_-' '/+')
    while [ $((${#p} % 4)) != 0 ]; do p+="="; done
    base64 -d <<<"$p" 2>/dev/null | jq -c .
}

# Start the test IdP (tests/idp/start.sh) for STATE with the given IDP_USERS, fresh (new keys,
# zeroed counters); print its issuer. One retry: a start once failed here without a trace in
# server.log (seen 1 time in about 15 starts).
start_idp() { # STATE IDP_USERS
    local try
    for try in 1 2; do
        bash "$ROOT/tests/idp/stop.sh" "$1"
        if IDP_USERS=$2 bash "$ROOT/tests/idp/start.sh" "$1"; then
            return 0
        fi
        echo "start_idp: the test IdP did not start (attempt $try)" >&2
    done
    return 1
}

# The nodes' states (one word per distinct state) once they are idle, or what they still are
# after 10 s (a bound, not a wait). `planned` counts as idle: since 22.05 Slurm marks an idle node
# the backfill scheduler has set aside for a pending job so (it is neither drained nor down,
# which is what the tests check).
node_states() {
    sinfo -h -N -o %T | sed 's/^planned$/idle/' | sort -u | tr '\n' ' ' | xargs
}
settled_node_state() {
    local node= i
    for ((i = 0; i < 50; i++)); do
        node=$(node_states)
        [ "$node" = idle ] && break
        sleep 0.2
    done
    echo "$node"
}

# `sbatch --qlam-auth` as USER is refused at submission, its message names the fix
# (`qlam-auth login`) and says WHY, and nothing is queued. Sets ERR to sbatch's message.
assert_refused_at_submission() { # USER WHY
    local u=$1 why=$2 before rc=0
    before=$(squeue -h -u "$u" -t all | wc -l)
    ERR=$(as_user "$u" sbatch --parsable --qlam-auth -o /dev/null --wrap 'echo should-not-run' 2>&1) || rc=$?
    [ "$rc" != 0 ] || t_fail "sbatch exited 0 (job ${ERR})"
    assert_contains "$ERR" "qlam-auth login" "sbatch's message names the fix"
    assert_contains "$ERR" "$why" "sbatch's message says why"
    assert_eq "$before" "$(squeue -h -u "$u" -t all | wc -l)" "jobs of $u in squeue -t all"
}

# Submits a batch script (stdin) as USER with --qlam-auth, from their home, output in
# ~/e2e/NAME-JOBID.out; prints the job id (the caller adds it to JOBS: this runs in a subshell).
submit() { # USER NAME [SBATCH ARGS...]
    local u=$1 name=$2 h id
    shift 2
    h=$(user_home "$u")
    id=$(as_user "$u" sbatch --parsable --qlam-auth -J "$name" -D "$h" -o "$h/e2e/$name-%j.out" "$@") ||
        return 1
    echo "${id%%;*}"
}

sha() { printf '%s' "$1" | sha256sum | cut -c1-64; }      # TEXT -> its SHA-256 in hex
indent() { printf '%s\n' "$1" | sed 's/^/    | /'; }      # TEXT, shown under a test line

# Runs FN when the script exits, also after a failure, Ctrl-C or SIGTERM (then with status 130):
# says so, runs FN with `set +e`, and exits with the script's status.
e2e_on_exit() { # FN
    # shellcheck disable=SC2064  # FN is expanded now, on purpose
    trap "_e2e_exit $1" EXIT
    trap 'exit 130' INT TERM
}
_e2e_exit() { # FN
    local rc=$?
    set +e
    trap - EXIT INT TERM
    echo
    echo "==> cleaning up (plugin, IdP, Slurm)"
    "$1"
    exit "$rc"
}

# The end of an e2e run, also after a failure or Ctrl-C: cancels the jobs of USERS and deletes
# their jobs' token copies, stops the test IdP (IDP_STATE) and Slurm (SLURM_STATE), then removes
# the plugin (Slurm being down, only its plugstack line and the .so). Warns, never fails.
e2e_teardown() { # USERS...
    local u
    for u in "$@"; do
        scancel -u "$u" 2>/dev/null
        rm -f "$(user_home "$u")"/e2e/*.token 2>/dev/null   # the jobs' token copies
    done
    bash "$ROOT/tests/idp/stop.sh" "$IDP_STATE" || echo "e2e: warning: IdP stop failed" >&2
    bash "$ROOT/tests/slurm/down.sh" "$SLURM_STATE" || echo "e2e: warning: slurm down failed" >&2
    bash "$ROOT/tests/slurm/uninstall-plugin.sh" || echo "e2e: warning: plugin uninstall failed" >&2
}

# Builds the release plugin and qlam-auth, showing cargo's last LINES lines; fails if cargo does.
e2e_build_release() { # LINES
    (set -o pipefail; cd "$ROOT" && cargo build --release --locked -p qlam-spank -p qlam-auth 2>&1 | tail -n "$1")
}
