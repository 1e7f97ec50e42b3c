#!/usr/bin/env bash
# Fan-in benchmark: N processes of ONE user start at once and each needs a refresh (the stored
# access token is expired). Run by hand, not in CI:
#
#   bench/fanin.sh                 # N = 1 10 100 500, token-core and the real qlam-core 0.10.0
#   bench/fanin.sh 1 10            # chosen N
#
# Environment:
#   BENCH_DIR=DIR        scratch and results (default target/bench-fanin; holds tokens: private)
#   BENCH_IMPLS="token-core qlam-core"   which side(s) to run
#   BENCH_NO_BUILD=1     skip `cargo build --release -p token-core --examples`
#   BENCH_OBTAIN=PATH    another build of the worker (to compare a change to token-core)
#
# For each N and each side: a fresh device login (test IdP, headless approval), the access token
# made 1 h old, /_test/reset, N workers started and parked at a start gate (a FIFO: each blocks
# in open(2) until the harness opens it for writing, so all are released by one system call),
# released, waited for. Then /_test/stats (IdP token requests, invalid_grant) and a check of the
# login (`obtain check`: the file is there and its refresh token still works at the IdP).
#   token-core: target/release/examples/obtain run   -> Broker::obtain (lock, re-read, one refresh)
#   qlam-core:  bench/qlam_core_fanin.py             -> tests/interop/qlam_core_driver.py ensure
#               (sdk refresh_credentials(force=False)), N forked children of one interpreter
# Results: BENCH_DIR/results.md (Markdown rows) and BENCH_DIR/results.jsonl; see
# docs/performance.md for what they mean.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
DIR="${BENCH_DIR:-$ROOT/target/bench-fanin}"
IMPLS="${BENCH_IMPLS:-token-core qlam-core}"
NS=("$@")
[ ${#NS[@]} -gt 0 ] || NS=(1 10 100 500)

mkdir -p "$DIR"
chmod 700 "$DIR"
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -q -p token-core --examples)
fi
OBTAIN="${BENCH_OBTAIN:-$ROOT/target/release/examples/obtain}"

# The real qlam-core in a venv (the same one the interop tests make).
VENV="$ROOT/target/qlam-core-venv"
if [[ " $IMPLS " == *" qlam-core "* ]] && [ ! -e "$VENV/.qlam-core-0.10.0" ]; then
  rm -rf "$VENV"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check qlam-core==0.10.0
  touch "$VENV/.qlam-core-0.10.0"
fi

# The test IdP: rotation with reuse detection, 1 h access tokens.
IDP_DIR="$DIR/idp"
USERS=""
for i in $(seq 0 19); do USERS="$USERS${USERS:+,}bench$i:bench$i-pw"; done
bash "$ROOT/tests/idp/stop.sh" "$IDP_DIR" >/dev/null 2>&1 || true
ISSUER="$(IDP_USERS="$USERS" IDP_ACCESS_TTL=3600 bash "$ROOT/tests/idp/start.sh" "$IDP_DIR")"
CA="$IDP_DIR/ca.pem"
trap 'bash "$ROOT/tests/idp/stop.sh" "$IDP_DIR" >/dev/null 2>&1 || true' EXIT
control() { curl -sS --fail-with-body --max-time 10 --cacert "$CA" "$@"; }

ulimit -n 4096 2>/dev/null || true
ulimit -u unlimited 2>/dev/null || true

{
  echo "fan-in run $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(uname -r); issuer $ISSUER"
  echo
  echo "| side | N | IdP refresh requests | invalid_grant | login lost | processes with a token | wall p50 ms | wall p99 ms | wall max ms |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$DIR/results.md"
: > "$DIR/results.jsonl"

user_no=0
for n in "${NS[@]}"; do
  for impl in $IMPLS; do
    run="$DIR/$impl-$n"
    rm -rf "$run"
    mkdir -p "$run/out" "$run/err"
    write_lab_config "$run/home" "$ISSUER"
    "$OBTAIN" login --home "$run/home" --ca "$CA" --user "bench$user_no" >/dev/null
    user_no=$(( (user_no + 1) % 20 ))
    "$OBTAIN" expire --home "$run/home"
    mkfifo -m 600 "$run/gate"
    : > "$run/ready"
    control -X POST "$ISSUER/_test/reset" >/dev/null

    echo "== $impl N=$n: starting workers" >&2
    pids=()
    case "$impl" in
      token-core)
        for i in $(seq 1 "$n"); do
          "$OBTAIN" run --home "$run/home" --ca "$CA" --gate "$run/gate" --ready "$run/ready" \
            >"$run/out/$i.json" 2>"$run/err/$i" &
          pids+=($!)
        done
        ;;
      qlam-core)
        HOME="$run/home" QSH_CONFIG_DIR="$run/home/.qsh" SSL_CERT_FILE="$CA" REQUESTS_CA_BUNDLE="$CA" \
          "$VENV/bin/python" "$ROOT/bench/qlam_core_fanin.py" "$ROOT/tests/interop/qlam_core_driver.py" \
          "$n" "$run/out" "$run/ready" "$run/gate" lab testidp 2>"$run/err/launcher" &
        pids+=($!)
        ;;
    esac
    # All parked at the gate?
    for _ in $(seq 1 1200); do
      [ "$(stat -c %s "$run/ready")" -ge "$n" ] && break
      sleep 0.1
    done
    [ "$(stat -c %s "$run/ready")" -ge "$n" ] || { echo "only $(stat -c %s "$run/ready")/$n workers got ready" >&2; exit 1; }
    sleep 0.5 # from the ready byte to open(2)
    echo "== $impl N=$n: go" >&2
    date +%s%N > "$run/release_ns"
    # O_RDWR on a FIFO does not block and counts as a writer: every open(O_RDONLY) returns now, and
    # keeps returning at once while fd 3 is open.
    exec 3<>"$run/gate"
    for p in "${pids[@]}"; do wait "$p" || true; done
    exec 3>&-
    control "$ISSUER/_test/stats" > "$run/stats.json"
    "$OBTAIN" check --home "$run/home" --ca "$CA" > "$run/check.json" 2>"$run/err/check" || true
    python3 "$ROOT/bench/fanin_report.py" "$impl" "$n" "$run" > "$run/report.txt"
    head -1 "$run/report.txt" >> "$DIR/results.jsonl"
    tail -1 "$run/report.txt" >> "$DIR/results.md"
    tail -1 "$run/report.txt" >&2
  done
done
echo >&2
cat "$DIR/results.md"
