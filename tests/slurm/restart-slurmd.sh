#!/usr/bin/env bash
# Restart slurmd only (it reads plugstack.conf at start: needed after plugstack
# changes so that job_prolog/job_epilog see the plugin), then wait until the new
# slurmd has registered and the node is idle. slurmctld and munged must be up.
#   usage: tests/slurm/restart-slurmd.sh [STATE_DIR]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/slurm/lib.sh
. "$here/lib.sh"

need_root
ctld_ok || die "slurmctld is not up (run tests/slurm/up.sh first)"
old=$(slurmd_log_offset)
stop_daemon slurmd "$SLURMD_PID"
pid=$(start_slurmd)
wait_idle "$old"
if [ -n "${1:-}" ] && [ -r "$1/daemons" ]; then
    sed -i "s/^slurmd .*/slurmd $pid started/" "$1/daemons"
fi
