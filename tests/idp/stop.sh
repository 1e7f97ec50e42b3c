#!/usr/bin/env bash
# Stop the test IdP of state directory DIR (fine when none runs) and remove DIR/ready.json.
#   tests/idp/stop.sh DIR
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 STATE_DIR" >&2
  exit 2
fi
DIR="$1"
[ -d "$DIR" ] || exit 0

stop_pid() {
  local pid="$1"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  # Only our server: never a recycled pid that now belongs to something else.
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'server\.mjs' || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do   # 10 s
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

if [ -s "$DIR/ready.json" ]; then
  stop_pid "$(sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p' "$DIR/ready.json")"
fi
if [ -s "$DIR/server.pid" ]; then
  stop_pid "$(tr -dc 0-9 < "$DIR/server.pid")"
fi
rm -f "$DIR/ready.json" "$DIR/server.pid"
