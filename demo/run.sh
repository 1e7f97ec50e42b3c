#!/usr/bin/env bash
# The qlam-auth demo: a Slurm job gets a valid OAuth access token from the user's login.
#
#   bash demo/run.sh            (as root; sudo is not needed)
#
# On a fresh Debian 12 machine, as root: installs what it needs (tests/slurm/install-deps.sh;
# a Rust toolchain must be on PATH), builds qlam-auth and the SPANK plugin, brings up a
# single-node Slurm and a local test identity provider (https://127.0.0.1:PORT, with its own
# CA), writes the site file (what an admin sets up once: the default context, the allowed
# issuers), creates the user `demo`, and then, as that user:
#
#   qlam-auth login               # no flags: the site file names the identity provider;
#                                 # device code: URL, code, QR code (approved "on the phone")
#   qlam-auth status
#   sbatch --qlam-auth job.sh     # the job finds its token in $BEARER_TOKEN_FILE
#
# and shows the job's output. Everything it started is stopped at the end (also on failure or
# Ctrl-C); qlam-auth and the plugin are uninstalled again. Safe to run twice.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN=$ROOT/tests/.run/demo
SLURM_STATE=$RUN/slurm
IDP_STATE=$RUN/idp
CA=$RUN/ca.pem
USER_BIN=/usr/local/bin
DEMO_USER=demo
# shellcheck source=tests/e2e/lib.sh
. "$ROOT/tests/e2e/lib.sh"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run_as() { printf '\033[2m%s$\033[0m %s\n' "$DEMO_USER" "$*"; }   # show what the user types
die() { echo "demo: error: $*" >&2; exit 1; }
quiet() { # run a command; show its output only if it fails
    local log rc=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    [ "$rc" = 0 ] || { tail -n 30 "$log" >&2; rm -f "$log"; die "failed: $*"; }
    rm -f "$log"
}
[ "$(id -u)" -eq 0 ] || die "run it as root (a root shell: bash demo/run.sh)"

LOGIN_PID=
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    step "stopping everything (identity provider, Slurm) and uninstalling qlam-auth"
    [ -n "$LOGIN_PID" ] && kill "$LOGIN_PID" 2>/dev/null
    scancel -u "$DEMO_USER" 2>/dev/null
    bash "$ROOT/tests/idp/stop.sh" "$IDP_STATE"
    bash "$ROOT/tests/slurm/down.sh" "$SLURM_STATE"
    bash "$ROOT/tests/slurm/uninstall-plugin.sh"   # Slurm is down: just removes the files
    rm -f "$USER_BIN/qlam-auth"
    [ "$rc" = 0 ] && echo "done." || echo "demo failed (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the site's side ---------------------------------------------------------------------------
step "installing Slurm, munge, node, ... (tests/slurm/install-deps.sh)"
bash "$ROOT/tests/slurm/install-deps.sh"

step "building qlam-auth and the SPANK plugin (cargo build --release)"
(cd "$ROOT" && cargo build --release --locked -p qlam-spank -p qlam-auth 2>&1 | tail -n 1)
[ "${PIPESTATUS[0]}" = 0 ] || die "cargo build failed"
install -m 0755 "$ROOT/target/release/qlam-auth" "$USER_BIN/qlam-auth"
echo "installed $USER_BIN/qlam-auth ($(qlam-auth --version))"

step "starting a single-node Slurm (tests/slurm/up.sh)"
mkdir -p "$RUN"
chmod 0755 "$ROOT/tests/.run" "$RUN"
bash "$ROOT/tests/slurm/up.sh" "$SLURM_STATE" 2>&1 | sed 's/^slurm: //'
sinfo

step "starting the identity provider (a local OpenID Connect server: tests/idp/start.sh)"
ISSUER=$(start_idp "$IDP_STATE" "$DEMO_USER:$DEMO_USER-pw") || die "the identity provider did not start"
install -m 0644 "$IDP_STATE/ca.pem" "$CA"   # its CA, readable by users and by the plugin
echo "issuer: $ISSUER  (TLS with a test CA: $CA)"

step "the admin's site file (on a cluster: /etc/qlam-auth/site.json; the demo keeps it in $RUN)"
SITE=$RUN/site.json
cat >"$SITE" <<JSON
{
  "default_context": "default",
  "contexts": [
    { "name": "default", "issuer": "$ISSUER", "client_id": "qlam-cli",
      "audience": "https://slurm.example/api", "tenant": "demo" }
  ],
  "issuers": ["$ISSUER"]
}
JSON
chmod 0644 "$SITE"
cat "$SITE"

step "installing the SPANK plugin (plugstack.conf.d/qlam-auth.conf)"
quiet bash "$ROOT/tests/slurm/install-plugin.sh" "$ROOT/target/release/libqlam_spank.so" \
    "ca_bundle=$CA site=$SITE" --state "$SLURM_STATE"
cat /etc/slurm/plugstack.conf.d/qlam-auth.conf

step "creating the user '$DEMO_USER'"
bash "$ROOT/tests/slurm/users.sh" "$DEMO_USER"
HOME_DIR=$(user_home "$DEMO_USER")
rm -rf "$HOME_DIR/.qsh" "$HOME_DIR"/demo-*.out "$HOME_DIR/job.sh"
id "$DEMO_USER"

# --- the user's side -----------------------------------------------------------------------------
step "as $DEMO_USER: qlam-auth login (no ~/.qsh yet, no flags)"
run_as "export SSL_CERT_FILE=$CA   # trust the local test IdP's CA (not needed with a real IdP)"
run_as "export QLAM_AUTH_SITE_FILE=$SITE   # only because the demo's site file is not in /etc"
run_as "qlam-auth login"
# In a terminal (script(1) gives it one) the CLI draws a QR code of the login link. The demo
# plays the user's phone: it reads the code from the screen and approves it in the identity
# provider's real web pages (tests/idp/approve.mjs: login form, password, consent).
out=$RUN/login.out
: >"$out"
as_user "$DEMO_USER" env QLAM_AUTH_SITE_FILE="$SITE" script -qfec "qlam-auth login" /dev/null \
    </dev/null >"$out" 2>&1 &
LOGIN_PID=$!
# The screen as a person sees it: no spinner redraws, no colour codes.
screen() { sed 's/\r$//; s/\x1b\[2K//g' "$out" | awk -F'\r' '{print $NF}' | sed 's/\x1b\[[0-9;]*m//g'; }
code=
for ((i = 0; i < 200; i++)); do
    code=$(screen | sed -n 's/^ *2\. *Enter  *\([A-Za-z0-9-]*\).*/\1/p' | head -n 1)
    [ -n "$code" ] && break
    kill -0 "$LOGIN_PID" 2>/dev/null || break
    sleep 0.1
done
# The QR code keeps its colours (it is drawn with them); everything else is shown plain.
sed 's/\r$//; s/\x1b\[2K//g' "$out" | awk -F'\r' '{print $NF}' | grep -v 'Waiting for you' || true
n_shown=$(wc -l <"$out")
[ -n "$code" ] || die "qlam-auth login showed no code"
printf '\n\033[2m   [on the phone: open the link, enter %s, log in as %s, approve]\033[0m\n' "$code" "$DEMO_USER"
node "$ROOT/tests/idp/approve.mjs" --issuer "$ISSUER" --ca "$CA" --user "$DEMO_USER" \
    --password "$DEMO_USER-pw" --user-code "$code"
rc=0
wait "$LOGIN_PID" || rc=$?
LOGIN_PID=
# The rest of what the CLI printed after the approval.
sed 's/\r$//; s/\x1b\[2K//g' "$out" | tail -n +"$((n_shown + 1))" | awk -F'\r' '{print $NF}' |
    sed 's/\x1b\[[0-9;]*m//g' | grep -v -e 'Waiting for you' -e '^$' || true
[ "$rc" = 0 ] || die "qlam-auth login exited $rc"
echo "(the login wrote ~/.qsh/config.json from the site file, in the format QLAM Core reads)"
ls -la "$HOME_DIR/.qsh"

step "as $DEMO_USER: qlam-auth status"
run_as "qlam-auth status"
as_user "$DEMO_USER" qlam-auth status

step "as $DEMO_USER: a batch job that uses its token"
cat >"$HOME_DIR/job.sh" <<EOF
#!/bin/bash
#SBATCH --job-name=demo
#SBATCH --output=demo-%j.out
echo "QLAM_TOKEN_FILE   = \$QLAM_TOKEN_FILE"
echo "BEARER_TOKEN_FILE = \$BEARER_TOKEN_FILE"
echo "token file mode   = \$(stat -c '%a, owner %U' "\$BEARER_TOKEN_FILE")"
echo "token directory   = \$(stat -c '%a, owner %U' "\$(dirname "\$BEARER_TOKEN_FILE")")"
# The token's claims (never the token itself):
python3 - "\$BEARER_TOKEN_FILE" <<'PY'
import base64, json, sys, time
tok = open(sys.argv[1]).read().strip()
p = tok.split(".")[1]
c = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
print(f"token claims      = sub={c['sub']} aud={c['aud']} "
      f"exp in {c['exp'] - int(time.time())} s")
PY
# Ask the identity provider who this token belongs to (OIDC userinfo):
echo -n "userinfo          = "
curl -sS --cacert $CA -H "Authorization: Bearer \$(cat "\$BEARER_TOKEN_FILE")" \\
     $ISSUER/me
echo
# The file is kept valid while the job runs; its renewer says how it is doing:
for i in \$(seq 50); do [ -s "\$QLAM_TOKEN_STATUS_FILE" ] && break; sleep 0.1; done
echo "renewal status    = \$(jq -c '{state, token_expires_at, next_check_at}' "\$QLAM_TOKEN_STATUS_FILE")"
EOF
chown "$DEMO_USER:" "$HOME_DIR/job.sh"
sed 's/^/    /' "$HOME_DIR/job.sh"
run_as "sbatch --qlam-auth job.sh"
submitted=$(as_user "$DEMO_USER" sbatch --qlam-auth job.sh)
echo "$submitted"
jobid=${submitted##* }
# shellcheck source=tests/lib/assert.sh
. "$ROOT/tests/lib/assert.sh"
state=$(wait_job "$jobid" 60 || true)
echo "job $jobid: $state"

step "the job's output (demo-$jobid.out)"
run_as "cat demo-$jobid.out"
cat "$HOME_DIR/demo-$jobid.out"
[ "$state" = "COMPLETED 0:0" ] || die "the job did not complete"
if [ -e "/run/qlam-auth/$jobid" ]; then
    die "the job's token directory /run/qlam-auth/$jobid is still there"
fi
echo
echo "(after the job, its token directory /run/qlam-auth/$jobid is gone)"
