#!/usr/bin/env bash
# Start the test IdP in the background for state directory DIR and print its issuer.
#   tests/idp/start.sh DIR
# Idempotent: if DIR/ready.json names a live server, prints its issuer and exits 0.
# Environment knobs (IDP_*) are passed through to server.mjs; IDP_PORT picks a port (default 0).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/idp/state-dir.sh
. "$HERE/state-dir.sh"
NODE="${NODE:-node}"

# Prints the pid named by FILE if that process is alive and is our server.
live_pid() {
  local file="$1" pid
  [ -s "$file" ] || return 1
  if [ "${file##*.}" = json ]; then
    pid="$(sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p' "$file")"
  else
    pid="$(tr -dc 0-9 < "$file")"
  fi
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'server\.mjs' || return 1
  echo "$pid"
}

issuer_of() { sed -n 's/.*"issuer":"\([^"]*\)".*/\1/p' "$DIR/ready.json"; }

# One start at a time per state dir.
exec 9>"$DIR/.start.lock"
flock 9

if live_pid "$DIR/ready.json" >/dev/null; then
  issuer_of
  exit 0
fi
# A server that started but never became ready (or a stale pid file): stop it first.
if pid="$(live_pid "$DIR/server.pid")"; then
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
rm -f "$DIR/ready.json"

if [ ! -d "$HERE/node_modules/oidc-provider" ]; then
  (
    cd "$HERE"
    # Serialise concurrent installs into the same tree.
    exec 8>"$HERE/node_modules.lock"
    flock 8
    if [ ! -d node_modules/oidc-provider ]; then
      npm ci --no-audit --no-fund --loglevel=error >"$DIR/npm-ci.log" 2>&1 || {
        echo "start.sh: npm ci failed in $HERE:" >&2
        tail -n 20 "$DIR/npm-ci.log" >&2
        exit 1
      }
    fi
  )
  rm -f "$HERE/node_modules.lock"
fi

# Detached from this shell (own session), no inherited pipes: output goes to server.log.
setsid nohup "$NODE" "$HERE/server.mjs" --state-dir "$DIR" --port "${IDP_PORT:-0}" \
  </dev/null >>"$DIR/server.log" 2>&1 9>&- &
PID=$!

for _ in $(seq 200); do   # 20 s
  if [ -s "$DIR/ready.json" ] && live_pid "$DIR/ready.json" >/dev/null; then
    issuer_of
    exit 0
  fi
  if ! kill -0 "$PID" 2>/dev/null; then
    break
  fi
  sleep 0.1
done

echo "start.sh: the test IdP did not become ready within 20 s (state dir $DIR). server.log:" >&2
tail -n 30 "$DIR/server.log" >&2 || true
kill "$PID" 2>/dev/null || true
exit 1
