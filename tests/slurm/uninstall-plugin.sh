#!/usr/bin/env bash
# Remove the SPANK plugin installed by install-plugin.sh (conf line and .so),
# then restart slurmd and wait until the node is idle (if Slurm is up).
#   usage: tests/slurm/uninstall-plugin.sh [STATE_DIR]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/slurm/lib.sh
. "$here/lib.sh"

need_root
rm -f "$PLUGSTACK_DIR/qlam-auth.conf" /usr/local/lib/qlam/libqlam_spank.so
if daemon_pid slurmd "$SLURMD_PID" >/dev/null && ctld_ok; then
    "$here/restart-slurmd.sh" "$@"
fi
