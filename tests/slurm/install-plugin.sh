#!/usr/bin/env bash
# Install the SPANK plugin: copy SO_PATH to /usr/local/lib/qlam/libqlam_spank.so
# (0755), write /etc/slurm/plugstack.conf.d/qlam-auth.conf (0644) with
#   required /usr/local/lib/qlam/libqlam_spank.so ARGS...
# then restart slurmd (job_prolog/epilog only see plugins present at its start)
# and wait until the node is idle. slurmctld and munged must be up (up.sh).
#   usage: tests/slurm/install-plugin.sh SO_PATH ['ARGS...'] [--state STATE_DIR]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/slurm/lib.sh
. "$here/lib.sh"

state=()
args=()
while [ $# -gt 0 ]; do
    case $1 in
        --state) state=("$2"); shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
[ "${#args[@]}" -ge 1 ] || die "usage: $0 SO_PATH ['ARGS...'] [--state STATE_DIR]"
need_root
so=${args[0]}
[ -f "$so" ] || die "no such plugin file: $so"

dest=/usr/local/lib/qlam/libqlam_spank.so
install -d -m 0755 /usr/local/lib/qlam "$PLUGSTACK_DIR"
install -m 0755 "$so" "$dest.tmp"
mv -f "$dest.tmp" "$dest"   # atomic: running slurmstepds keep the old inode

line="required $dest"
[ "${#args[@]}" -gt 1 ] && line+=" ${args[*]:1}"
conf=$PLUGSTACK_DIR/qlam-auth.conf
printf '%s\n' "$line" >"$conf.tmp"
chmod 0644 "$conf.tmp"
mv -f "$conf.tmp" "$conf"

"$here/restart-slurmd.sh" "${state[@]}"
