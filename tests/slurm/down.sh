#!/usr/bin/env bash
# Stop slurmd (every node's, with TEST_SLURM_NODES>1 their namespace holders too), slurmctld and
# munged (in that order), wait for them to exit (bounded, then SIGKILL) and remove their pid
# files. Fine when nothing runs.
#   usage: tests/slurm/down.sh STATE_DIR
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/slurm/lib.sh
. "$here/lib.sh"

state_dir=$(state_dir_arg "$@")

# Pids recorded by up.sh are a fallback when a pid file went missing.
recorded() {
    [ -r "$state_dir/daemons" ] || return 0
    awk -v n="$1" '$1 == n {print $2}' "$state_dir/daemons"
}

stop_daemon slurmd "$SLURMD_PID" "$(recorded slurmd)"
# Several nodes: a pid file that went missing still has the pid up.sh recorded.
if [ -r "$state_dir/daemons" ]; then
    while read -r name pid _; do
        case $name in
            slurmd:*) stop_daemon slurmd "$(node_pidfile "${name#slurmd:}")" "$pid" ;;
        esac
    done <"$state_dir/daemons"
fi
stop_all_slurmd holders
stop_daemon slurmctld "$SLURMCTLD_PID" "$(recorded slurmctld)"
stop_daemon munged "$MUNGED_PID" "$(recorded munged)"
rm -f "$state_dir/daemons"
