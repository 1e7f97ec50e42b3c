#!/usr/bin/env bash
# Remove the SPANK plugin installed by install-plugin.sh (conf line and .so),
# then restart slurmd (every node's) and wait until the nodes are idle (if Slurm is up).
#   usage: tests/slurm/uninstall-plugin.sh [STATE_DIR]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/slurm/lib.sh
. "$here/lib.sh"

need_root
rm -f "$PLUGSTACK_DIR/qlam-auth.conf" /usr/local/lib/qlam/libqlam_spank.so
up=0
daemon_pid slurmd "$SLURMD_PID" >/dev/null && up=1
for n in $(conf_nodes); do daemon_pid slurmd "$(node_pidfile "$n")" >/dev/null && up=1; done
if [ "$up" = 1 ] && ctld_ok; then
    "$here/restart-slurmd.sh" "$@"
fi
