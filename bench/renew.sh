#!/usr/bin/env bash
# Renewal benchmark: K concurrent long jobs of ONE user, each with its own renewer
# (`qlam-auth job-renewer`, as the SPANK plugin starts it), 60 s access tokens, for a fixed time.
# Run by hand, not in CI:
#
#   bench/renew.sh                 # K = 1 10 50, 600 s
#   BENCH_SECONDS=300 bench/renew.sh 1 10
#
# For each K, at the same time: its own test IdP (60 s access tokens, rotation with reuse
# detection), one device login, K job directories (0700) and K renewers sharing the user's store
# (and so its lock), watching this script's pid instead of a slurmstepd. At the end: the IdP's
# refresh requests (per user per hour), whether the login still works, each renewer's resident
# memory and CPU time. Without the shared lock, K independent renewers would each refresh at half
# the lifetime: K * 3600 / 30 = 120 K requests per hour (and with one rotating refresh token
# they would revoke the login at the first overlap).
# Results: BENCH_DIR/results.md; see docs/performance.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
DIR="${BENCH_DIR:-$ROOT/target/bench-renew}"
SECONDS_RUN="${BENCH_SECONDS:-600}"
TTL=60
KS=("$@")
[ ${#KS[@]} -gt 0 ] || KS=(1 10 50)

mkdir -p "$DIR"
chmod 700 "$DIR"
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -q -p token-core --examples && cargo build --release -q -p qlam-auth)
fi
OBTAIN="$ROOT/target/release/examples/obtain"
QLAM_AUTH="$ROOT/target/release/qlam-auth"

pids=()
idps=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "${idps[@]}"; do bash "$ROOT/tests/idp/stop.sh" "$d" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

declare -A ISSUER
for k in "${KS[@]}"; do
  run="$DIR/k$k"
  rm -rf "$run"
  mkdir -p "$run/jobs"
  bash "$ROOT/tests/idp/stop.sh" "$run/idp" >/dev/null 2>&1 || true
  ISSUER[$k]="$(IDP_USERS="bench:bench-pw" IDP_ACCESS_TTL=$TTL bash "$ROOT/tests/idp/start.sh" "$run/idp")"
  idps+=("$run/idp")
  write_lab_config "$run/home" "${ISSUER[$k]}"
  "$OBTAIN" login --home "$run/home" --ca "$run/idp/ca.pem" --user bench >/dev/null
  curl -sf --cacert "$run/idp/ca.pem" -X POST "${ISSUER[$k]}/_test/reset" >/dev/null
  for i in $(seq 1 "$k"); do
    install -d -m 0700 "$run/jobs/$i"
    HOME="$run/home" QSH_CONFIG_DIR="$run/home/.qsh" SSL_CERT_FILE="$run/idp/ca.pem" \
      "$QLAM_AUTH" token --min-valid 0 > "$run/jobs/$i/token"
    chmod 600 "$run/jobs/$i/token"
    HOME="$run/home" QSH_CONFIG_DIR="$run/home/.qsh" "$QLAM_AUTH" job-renewer --job "$i" \
      --dir "$run/jobs/$i" --file token --home "$run/home" --ca-bundle "$run/idp/ca.pem" \
      --watch-pid $$ 2>"$run/jobs/$i.log" &
    pids+=($!)
  done
  echo "== K=$k: $k renewers against ${ISSUER[$k]}" >&2
done

echo "== running for $SECONDS_RUN s" >&2
sleep "$SECONDS_RUN"

{
  echo "renewal run $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(uname -r); ${TTL} s access tokens, renew_at 0.5, ${SECONDS_RUN} s"
  echo
  echo "| K jobs | IdP refresh requests | per hour | K independent renewers (120 K/h) | login kept | renewer RSS KiB (max) | renewer CPU s (max, whole run) |"
  echo "|---|---|---|---|---|---|---|"
} > "$DIR/results.md"
for k in "${KS[@]}"; do
  run="$DIR/k$k"
  n=$(curl -sf --cacert "$run/idp/ca.pem" "${ISSUER[$k]}/_test/stats" | jq -r '.token_requests.refresh_token // 0')
  per_hour=$(( n * 3600 / SECONDS_RUN ))
  kept=$("$OBTAIN" check --home "$run/home" --ca "$run/idp/ca.pem" 2>/dev/null | jq -r ".refresh_works" || echo false)
  rss=0; cpu=0
  for p in $(pgrep -f "job-renewer --job [0-9]* --dir $run/jobs/" || true); do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    [ "$r" -gt "$rss" ] && rss=$r
    [ "$t" -gt "$cpu" ] && cpu=$t
  done
  cpu_s=$(awk -v t="$cpu" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}')
  echo "| $k | $n | $per_hour | $((120 * k)) | $kept | $rss | $cpu_s |" >> "$DIR/results.md"
done
cat "$DIR/results.md"
