#!/usr/bin/env bash
# Restart slurmd only (it reads plugstack.conf at start: needed after plugstack
# changes so that job_prolog/job_epilog see the plugin), then wait until the new
# slurmd has registered and the node is idle. slurmctld and munged must be up.
# With several nodes (up.sh TEST_SLURM_NODES>1): every node's slurmd, or only NODE's with --node
# (then running jobs are not waited for: the node may stay allocated). A node's slurmd
# restarts inside the same node namespaces, so it sees the node's /run/qlam-auth as before.
#   usage: tests/slurm/restart-slurmd.sh [STATE_DIR] [--node NODE]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/slurm/lib.sh
. "$here/lib.sh"

state_dir= only=
while [ $# -gt 0 ]; do
    case $1 in
        --node) only=${2:?--node needs a node name}; shift 2 ;;
        *) state_dir=$1; shift ;;
    esac
done
need_root
ctld_ok || die "slurmctld is not up (run tests/slurm/up.sh first)"
mapfile -t nodes < <(conf_nodes)
if [ "${#nodes[@]}" -gt 0 ]; then
    for n in "${nodes[@]}"; do
        [ -z "$only" ] || [ "$only" = "$n" ] || continue
        stop_daemon slurmd "$(node_pidfile "$n")"
        pid=$(start_node_slurmd "$n")
        if [ -n "$state_dir" ] && [ -r "$state_dir/daemons" ]; then
            sed -i "s/^slurmd:$n .*/slurmd:$n $pid started/" "$state_dir/daemons"
        fi
    done
    [ -n "$only" ] || wait_idle
    exit 0
fi
[ -z "$only" ] || die "--node $only: slurm.conf has a single node (no Port= on its NodeName line)"
old=$(slurmd_log_offset)
stop_daemon slurmd "$SLURMD_PID"
pid=$(start_slurmd)
wait_idle "$old"
if [ -n "$state_dir" ] && [ -r "$state_dir/daemons" ]; then
    sed -i "s/^slurmd .*/slurmd $pid started/" "$state_dir/daemons"
fi
