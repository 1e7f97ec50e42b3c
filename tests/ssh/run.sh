#!/usr/bin/env bash
# Tests of `qlam-auth ssh sign|check|config` against the test signing service (tests/sshsign,
# https, certificates signed by the real `ssh-keygen -s`) and a real OpenSSH sshd started here on
# a free 127.0.0.1 port with TrustedUserCAKeys (only certificates are accepted), as user qassh.
#
#   sudo bash tests/ssh/run.sh
#
# Cases:
#   a  sign, then ssh runs a command; a second sign sends nothing; check says valid
#   b  a forced renewal reuses the cached JWT (no API-key request)
#   c  after expiry sshd refuses the old certificate; through the `ssh config` block a plain
#      ssh renews it by itself and works again
#   d  20 parallel ssh through the block: one JWT request and one signing request
#   e  scp and rsync through the same block
#   f  every bad answer (refused key, 5xx, HTML, garbage, slow, another key, expired, other
#      principals, longer than asked) is refused with its exit code and message, files untouched;
#      a shorter validity than asked is used with a warning
#   g  `ssh check` exit codes: missing 21, expired 22 (in c), another key or principals 23
#   h  the site file must be root's and not writable by others
#   i  the URLs as flags work with no config at all (CI one-liner)
#   j  the API key and the JWT are in no output, log or generated config
#   k  --agent: the certificate is in ssh-agent for its validity, ssh works through the agent
#      alone, and the agent drops it when it expires
#
# Needs root, sshd, ssh, rsync, python3, openssl, curl and jq (tests/slurm/install-deps.sh installs
# them). Without them it skips, unless QLAM_TEST_REQUIRE_ALL=1 (CI): then it fails.
# Prints `ssh: N passed, N failed`; exits 1 if anything failed. It stops what it started (by pid).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$here/../.." && pwd)
# shellcheck source=tests/lib/assert.sh
. "$ROOT/tests/lib/assert.sh"

RUN=$ROOT/tests/.run/ssh
TUSER=qassh
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/qlam-auth

skip_or_fail() {
    if [ "${QLAM_TEST_REQUIRE_ALL:-}" = 1 ]; then
        echo "ssh tests: FAIL: $* (QLAM_TEST_REQUIRE_ALL=1 requires every test to run)" >&2
        exit 1
    fi
    echo "ssh tests: skipped: $*" >&2
    exit 0
}
[ "$(id -u)" -eq 0 ] || skip_or_fail "must run as root (starts sshd, creates the user $TUSER)"
PATH=$PATH:/usr/sbin:/sbin
for c in sshd ssh ssh-keygen scp rsync python3 openssl curl jq; do
    command -v "$c" >/dev/null 2>&1 || skip_or_fail "$c not found: run tests/slurm/install-deps.sh"
done

say() { printf '\n==> %s\n' "$*"; }
die() { echo "ssh tests: error: $*" >&2; exit 1; }

SVC_PID= SSHD_PID= AGENT_PID=
cleanup() {
    for p in $SSHD_PID $SVC_PID $AGENT_PID; do
        kill "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

say "building qlam-auth"
(cd "$ROOT" && cargo build -q --locked -p qlam-auth)

rm -rf "$RUN"
mkdir -p "$RUN/svc" "$RUN/sshd" "$RUN/home/.ssh" "$RUN/data"
chmod 755 "$RUN/home"; chmod 700 "$RUN/home/.ssh"

say "starting the test signing service and sshd"
python3 "$ROOT/tests/sshsign/server.py" --state-dir "$RUN/svc" --principal "$TUSER" \
    </dev/null >"$RUN/svc.log" 2>&1 &
SVC_PID=$!
for _ in $(seq 200); do
    [ -s "$RUN/svc/ready.json" ] && break
    kill -0 "$SVC_PID" 2>/dev/null || { cat "$RUN/svc.log" >&2; die "the signing service died"; }
    sleep 0.1
done
[ -s "$RUN/svc/ready.json" ] || die "the signing service was not ready within 20 s"
PORT=$(jq -r .port "$RUN/svc/ready.json")
CA=$RUN/svc/ca.pem
URL=https://127.0.0.1:$PORT
API_KEY=$(cat "$RUN/svc/api_key")

id "$TUSER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$TUSER"
usermod -p '*' "$TUSER"          # with UsePAM no, a locked ('!') account is refused
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$RUN/sshd/host_key"
SSHD_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$RUN/sshd/sshd_config" <<CONF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $RUN/sshd/host_key
PidFile $RUN/sshd/sshd.pid
TrustedUserCAKeys $RUN/svc/ssh_ca.pub
AuthorizedKeysFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowUsers $TUSER
MaxStartups 64
LogLevel VERBOSE
Subsystem sftp internal-sftp
CONF
SSHD=$(command -v sshd)
"$SSHD" -t -f "$RUN/sshd/sshd_config"
"$SSHD" -D -e -f "$RUN/sshd/sshd_config" </dev/null 2>"$RUN/sshd.log" &
SSHD_PID=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SSHD_PORT") 2>/dev/null && break
    kill -0 "$SSHD_PID" 2>/dev/null || { cat "$RUN/sshd.log" >&2; die "sshd died"; }
    sleep 0.1
done
echo "[127.0.0.1]:$SSHD_PORT $(cut -d' ' -f1,2 "$RUN/sshd/host_key.pub")" >"$RUN/known_hosts"

# The client side: a home of its own, the site file, the API key in the environment.
export HOME=$RUN/home SSL_CERT_FILE=$CA QLAM_AUTH_SITE_FILE=$RUN/site.json QLAM_API_KEY=$API_KEY
unset XDG_CACHE_HOME XDG_CONFIG_HOME SSH_AUTH_SOCK
KEY=$HOME/.ssh/qlam-sa
CERT=$KEY-cert.pub
JWT_FILE=$HOME/.cache/qlam-auth/ssh/testsa.jwt
ssh-keygen -q -t ed25519 -N '' -C qlam-sa -f "$KEY"
cat >"$RUN/site.json" <<JSON
{"contexts": {"other": "sections of the site file are not ours"},
 "ssh": {"services": {"testsa": {"token_url": "$URL/token", "sign_url": "$URL/sign",
                                 "key": "~/.ssh/qlam-sa", "api_key_env": "QLAM_API_KEY",
                                 "principals": ["$TUSER"]}},
         "default_service": "testsa"}}
JSON
chmod 644 "$RUN/site.json"

# qa ARGS...: runs qlam-auth (bounded), output in $OUT and appended to the leak-check log.
qa() {
    local rc=0
    timeout 60 "$BIN" "$@" >"$RUN/out" 2>&1 || rc=$?
    OUT=$(cat "$RUN/out")
    cat "$RUN/out" >>"$RUN/all-output.log"
    return "$rc"
}
admin() { curl -sf --max-time 10 --cacert "$CA" -H 'Content-Type: application/json' -d "$1" "$URL/admin" >/dev/null; }
stats() { curl -sf --max-time 10 --cacert "$CA" "$URL/stats" | jq -r '"\(.token) \(.sign)"'; }
ssh_direct() { # KEY CMD...: ssh with no config but this key and its certificate
    local k=$1; shift
    timeout 30 ssh -F none -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none \
        -o UserKnownHostsFile="$RUN/known_hosts" -o GlobalKnownHostsFile=/dev/null \
        -o StrictHostKeyChecking=yes -i "$k" -o CertificateFile="$k-cert.pub" \
        -p "$SSHD_PORT" "$TUSER@127.0.0.1" "$@"
}
CFG=$RUN/ssh_config
ssh_block() { timeout 60 ssh -F "$CFG" 127.0.0.1 "$@"; }
sums() { sha256sum "$KEY.pub" "$CERT" 2>/dev/null; ls -a "$HOME/.ssh"; }

say "tests"

t_begin "a: sign, then ssh runs a command; a second sign sends nothing"
admin '{"reset": true, "mode": "ok", "validity": 60}'
rc=0; qa ssh sign || rc=$?
assert_eq 0 "$rc" "ssh sign failed: $OUT"
assert_contains "$OUT" "renewed by service 'testsa'"
assert_file_mode "$CERT" 644
assert_file_mode "$JWT_FILE" 600
assert_eq "$TUSER" "$(ssh_direct "$KEY" id -un 2>"$RUN/ssh.err")" "ssh with the certificate: $(cat "$RUN/ssh.err")"
assert_eq "1 1" "$(stats)" "token and sign requests after the first sign"
rc=0; qa ssh sign || rc=$?
assert_eq 0 "$rc"; assert_contains "$OUT" "not renewed"
rc=0; qa ssh sign --quiet || rc=$?
assert_eq 0 "$rc"; assert_eq "" "$OUT" "--quiet prints nothing on success"
assert_eq "1 1" "$(stats)" "a valid certificate costs no request"
rc=0; qa ssh check || rc=$?
assert_eq 0 "$rc"; assert_contains "$OUT" "principals: $TUSER"
t_pass

t_begin "b: a forced renewal reuses the cached JWT (no API-key request)"
rc=0; qa ssh sign --force || rc=$?
assert_eq 0 "$rc" "$OUT"
assert_eq "1 2" "$(stats)"
t_pass

say "the ssh_config block"
qa ssh config --min-valid 3 127.0.0.1 || die "ssh config failed: $OUT"
{
    printf '%s\n' "$OUT"
    cat <<CONF
Host *
    Port $SSHD_PORT
    User $TUSER
    BatchMode yes
    IdentityAgent none
    UserKnownHostsFile $RUN/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    ConnectTimeout 10
CONF
} >"$CFG"
sed 's/^/    | /' "$CFG"

t_begin "c: after expiry sshd refuses the old certificate; the ssh_config block renews by itself"
admin '{"validity": 6}'
rc=0; qa ssh sign --force --min-valid 2 || rc=$?
assert_eq 0 "$rc" "$OUT"
cp "$CERT" "$RUN/old-cert.pub"
rc=0
for _ in $(seq 60); do   # bounded: a 6 s certificate, polled every 0.5 s for at most 30 s
    rc=0; "$BIN" ssh check --min-valid 0 --quiet || rc=$?
    [ "$rc" = 0 ] || break
    sleep 0.5
done
rc=0; qa ssh check || rc=$?
assert_eq 22 "$rc" "check of an expired certificate: $OUT"
assert_contains "$OUT" "expired"
rc=0; ssh_direct "$KEY" true 2>"$RUN/ssh.err" || rc=$?
assert_eq 255 "$rc" "ssh with an expired certificate must fail"
assert_contains "$(cat "$RUN/ssh.err")" "Permission denied"
assert_contains "$(cat "$RUN/sshd.log")" "expired"
before=$(stats)
assert_eq "$TUSER" "$(ssh_block id -un 2>"$RUN/ssh.err")" "plain ssh through the block: $(cat "$RUN/ssh.err")"
assert_eq "${before% *} $(( ${before#* } + 1 ))" "$(stats)" "one signing request for the renewal"
rc=0; qa ssh check --min-valid 1 || rc=$?
assert_eq 0 "$rc" "$OUT"
admin '{"validity": 60}'
t_pass

t_begin "d: 20 parallel ssh through the block: one JWT request, one signing request"
rm -f "$CERT" "$JWT_FILE"
admin '{"reset": true}'
pids=()
for i in $(seq 20); do
    ssh_block echo "ok-$i" >"$RUN/par.$i" 2>&1 &
    pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
assert_eq 0 "$failed" "parallel ssh failures: $(cat "$RUN"/par.* | grep -v '^ok-' | head -5)"
assert_eq 20 "$(cat "$RUN"/par.* | grep -c '^ok-')"
assert_eq "1 1" "$(stats)" "token and sign requests for 20 parallel ssh"
t_pass

t_begin "e: scp and rsync through the same block"
head -c 200000 /dev/urandom >"$RUN/data/blob"
mkdir -p "$RUN/data/tree/sub"; echo one >"$RUN/data/tree/a"; echo two >"$RUN/data/tree/sub/b"
rm -f "$CERT"
rc=0; timeout 60 scp -q -F "$CFG" "$RUN/data/blob" 127.0.0.1:scp-copy 2>"$RUN/scp.err" || rc=$?
assert_eq 0 "$rc" "scp: $(cat "$RUN/scp.err")"
assert_eq "$(sha256sum <"$RUN/data/blob")" "$(ssh_block 'sha256sum <scp-copy' 2>&1)" "scp copy"
rm -f "$CERT"
rc=0; timeout 60 rsync -a -e "ssh -F $CFG" "$RUN/data/tree/" 127.0.0.1:rsync-copy/ 2>"$RUN/rsync.err" || rc=$?
assert_eq 0 "$rc" "rsync: $(cat "$RUN/rsync.err")"
assert_eq "one two" "$(ssh_block 'cat rsync-copy/a rsync-copy/sub/b' 2>&1 | tr '\n' ' ' | sed 's/ $//')"
t_pass

t_begin "f: bad answers are refused with their exit code and message; files untouched"
admin '{"mode": "ok", "validity": 60, "delay": 5}'
qa ssh sign --force >/dev/null || t_fail "setup sign failed: $OUT"
good=$(sums)
# MODE EXPECTED-CODE MESSAGE [EXTRA SIGN ARGS]
while IFS='|' read -r mode want msg extra; do
    [ -n "$mode" ] || continue
    rm -f "$JWT_FILE"
    case $mode in token_*) ;; *) qa ssh sign --force >/dev/null || true ;; esac  # a cached JWT
    good=$(sums)
    admin "{\"mode\": \"$mode\"}"
    start=$(date +%s%N)
    rc=0
    # shellcheck disable=SC2086
    qa ssh sign --force $extra || rc=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    admin '{"mode": "ok", "validity": 60}'
    assert_eq "$want" "$rc" "$mode: exit code ($OUT)"
    assert_contains "$OUT" "$msg" "$mode: message"
    assert_eq "$good" "$(sums)" "$mode: the key and certificate files must be untouched"
    [ "$ms" -lt 15000 ] || t_fail "$mode: took $ms ms"
    case $mode in *_slow) [ "$ms" -lt 4500 ] || t_fail "$mode: --timeout 2 took $ms ms" ;; esac
done <<'CASES'
token_401|20|the API key was refused
token_403|20|Rotate it
token_500|5|HTTP 500
token_html|5|HTML page, not JSON
token_garbage|5|not JSON
token_slow|5|timed out|--timeout 2
sign_500|5|HTTP 500
sign_html|5|HTML page, not JSON
sign_garbage|5|not JSON
sign_slow|5|timed out|--timeout 2
sign_401|6|refused a fresh token
sign_other_key|24|it certifies another key
sign_expired|24|it has already expired
sign_wrong_principal|24|its principals are [someone-else]
CASES
# A wrong API key at the real endpoint (no fault mode), and none at all.
rm -f "$JWT_FILE"
good=$(sums)
rc=0; QLAM_API_KEY=qsa_wrong qa ssh sign --force || rc=$?
assert_eq 20 "$rc" "wrong API key: $OUT"; assert_contains "$OUT" "the API key was refused"
rc=0; QLAM_API_KEY= qa ssh sign --force || rc=$?
assert_eq 7 "$rc" "no API key: $OUT"; assert_contains "$OUT" "export QLAM_API_KEY"
# Longer than asked: refused; shorter than asked: used, with a warning.
admin '{"validity": 3600}'
rc=0; qa ssh sign --force --duration 1m || rc=$?
assert_eq 24 "$rc" "longer than asked: $OUT"; assert_contains "$OUT" "longer than the 1m asked"
assert_eq "$good" "$(sums)" "longer than asked: files untouched"
admin '{"validity": 60}'
rc=0; qa ssh sign --force --duration 5m || rc=$?
assert_eq 0 "$rc" "shorter than asked: $OUT"
assert_contains "$OUT" "warning: the service granted 1m, less than the 5m asked"
t_pass

t_begin "g: ssh check: missing 21, another key 23, other principals 23"
ssh-keygen -q -t ed25519 -N '' -f "$HOME/.ssh/other"
rc=0; qa ssh check -f "$HOME/.ssh/other" || rc=$?
assert_eq 21 "$rc" "$OUT"; assert_contains "$OUT" "no certificate"
cp "$CERT" "$HOME/.ssh/other-cert.pub"
rc=0; qa ssh check -f "$HOME/.ssh/other" || rc=$?
assert_eq 23 "$rc" "$OUT"; assert_contains "$OUT" "certifies another key"
rc=0; qa ssh check --principal root || rc=$?
assert_eq 23 "$rc" "$OUT"; assert_contains "$OUT" "principals are [$TUSER]"
rc=0; qa ssh sign -f "$HOME/.ssh/nokey" || rc=$?
assert_eq 7 "$rc" "sign without KEY.pub: $OUT"; assert_contains "$OUT" "ssh-keygen -t ed25519"
rc=0; qa ssh check --quiet -f "$HOME/.ssh/other" || rc=$?
assert_eq 23 "$rc"; assert_eq "" "$OUT" "check --quiet prints nothing"
t_pass

t_begin "h: the site file must be root's and not writable by others"
cp "$RUN/site.json" "$RUN/site-user.json"; chown "$TUSER" "$RUN/site-user.json"
rc=0; QLAM_AUTH_SITE_FILE=$RUN/site-user.json qa ssh sign || rc=$?
assert_eq 8 "$rc" "$OUT"; assert_contains "$OUT" "must belong to root"
assert_contains "$OUT" "chown root:root"
cp "$RUN/site.json" "$RUN/site-ww.json"; chmod 666 "$RUN/site-ww.json"
rc=0; QLAM_AUTH_SITE_FILE=$RUN/site-ww.json qa ssh sign || rc=$?
assert_eq 8 "$rc" "$OUT"; assert_contains "$OUT" "mode 0666"
t_pass

t_begin "i: --token-url and --sign-url work with no config at all"
ssh-keygen -q -t ed25519 -N '' -f "$HOME/.ssh/ci"
rc=0; QLAM_AUTH_SITE_FILE=$RUN/none.json qa ssh sign --quiet -f "$HOME/.ssh/ci" \
    --token-url "$URL/token" --sign-url "$URL/sign" || rc=$?
assert_eq 0 "$rc" "$OUT"
assert_eq "$TUSER" "$(ssh_direct "$HOME/.ssh/ci" id -un 2>&1)"
t_pass

t_begin "j: the API key and the JWT are in no output, log or generated config"
qa ssh sign --force >/dev/null || true
JWT=$(cat "$JWT_FILE" 2>/dev/null || true)
[ -n "$JWT" ] || t_fail "no cached JWT to look for"
for f in "$RUN/all-output.log" "$RUN/svc.log" "$RUN/sshd.log" "$CFG" "$RUN"/par.* "$RUN"/*.err; do
    [ -n "$JWT" ] && grep -qF "$JWT" "$f" && t_fail "the JWT is in $f"
    grep -qF "$API_KEY" "$f" && t_fail "the API key is in $f"
done
grep -qF -- "$API_KEY" "$CFG" && t_fail "the API key is in the ssh_config block"
t_pass

t_begin "k: --agent adds the certificate to ssh-agent for its validity only"
eval "$(ssh-agent -s)" >/dev/null
AGENT_PID=$SSH_AGENT_PID
admin '{"validity": 10}'
rc=0; qa ssh sign --force --agent --min-valid 2 || rc=$?
assert_eq 0 "$rc" "sign --agent: $OUT"
assert_contains "$(ssh-add -L 2>&1)" "ssh-ed25519-cert-v01@openssh.com" "the agent holds the certificate"
rc=0
out=$(timeout 30 ssh -F none -o BatchMode=yes -o IdentityAgent="$SSH_AUTH_SOCK" \
    -o UserKnownHostsFile="$RUN/known_hosts" -o GlobalKnownHostsFile=/dev/null \
    -p "$SSHD_PORT" "$TUSER@127.0.0.1" id -un 2>&1) || rc=$?
assert_eq "0 $TUSER" "$rc $out" "ssh through the agent alone"
gone=no
for _ in $(seq 60); do   # bounded: the agent's lifetime is the certificate's ~10 s
    ssh-add -L 2>/dev/null | grep -q -- '-cert-v01@' || { gone=yes; break; }
    sleep 0.5
done
assert_eq yes "$gone" "the agent dropped the expired certificate"
admin '{"validity": 60}'
rc=0; SSH_AUTH_SOCK= qa ssh sign --agent || rc=$?
assert_eq 7 "$rc" "--agent without an agent: $OUT"; assert_contains "$OUT" "ssh-agent -s"
kill "$AGENT_PID" 2>/dev/null || true
AGENT_PID=
unset SSH_AUTH_SOCK SSH_AGENT_PID
t_pass

t_summary | sed 's/^e2e:/ssh:/'
[ "${PIPESTATUS[0]}" = 0 ]
