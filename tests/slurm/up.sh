#!/usr/bin/env bash
# Bring up munged, slurmctld and slurmd on this machine (single node, no systemd).
#   usage: tests/slurm/up.sh STATE_DIR
# Writes /etc/slurm/slurm.conf, keeps /etc/slurm/plugstack.conf as Debian's include
# line, leaves healthy daemons alone (restarts the Slurm ones if slurm.conf changed),
# cleans stale pid files, resumes a drained/down node, and waits until the node is
# idle. STATE_DIR/daemons records "NAME PID started|kept" for this run.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/slurm/lib.sh
. "$here/lib.sh"

[ $# -eq 1 ] || die "usage: $0 STATE_DIR"
need_root
state_dir=$1
mkdir -p "$state_dir"
t0=$(date +%s%N)

# --- configuration --------------------------------------------------------------
cpus=$(nproc)
mem_mib=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
headroom=$((mem_mib / 20 > 256 ? mem_mib / 20 : 256))
real_mem=$((mem_mib - headroom))

conf_new=$(mktemp)
trap 'rm -f "$conf_new"' EXIT
cat >"$conf_new" <<EOF
# Written by tests/slurm/up.sh (qlam-auth test harness); overwritten on each run.
ClusterName=lab
SlurmctldHost=$SLURM_HOST(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
SlurmctldPidFile=$SLURMCTLD_PID
SlurmdPidFile=$SLURMD_PID
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
MaxArraySize=10001
MaxJobCount=20000
SlurmctldLogFile=$SLURMCTLD_LOG
SlurmdLogFile=$SLURMD_LOG
NodeName=$SLURM_HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:64
EOF
conf_changed=0
if ! cmp -s "$conf_new" "$SLURM_CONF"; then
    install -D -m 0644 "$conf_new" "$SLURM_CONF"
    conf_changed=1
fi

install -d -m 0755 "$PLUGSTACK_DIR"
if [ "$(cat "$PLUGSTACK_CONF" 2>/dev/null)" != "$PLUGSTACK_INCLUDE" ]; then
    log "resetting $PLUGSTACK_CONF to Debian's include line"
    printf '%s\n' "$PLUGSTACK_INCLUDE" >"$PLUGSTACK_CONF"
fi
chmod 0644 "$PLUGSTACK_CONF"
install -d -o slurm -g slurm -m 0755 /var/log/slurm /var/lib/slurm/slurmctld
install -d -m 0755 /var/lib/slurm/slurmd

# --- daemons ----------------------------------------------------------------------
: >"$state_dir/daemons.new"
record() { echo "$1 $2 $3" >>"$state_dir/daemons.new"; }

if pid=$(daemon_pid munged "$MUNGED_PID") && munge_ok; then
    record munged "$pid" kept
else
    [ -n "${pid:-}" ] && { log "munged ($pid) is not healthy; restarting"; stop_daemon munged "$MUNGED_PID"; }
    pid=$(start_munged)
    munge_ok || die "munge -n | unmunge fails with a fresh munged (see /var/log/munge/munged.log)"
    record munged "$pid" started
fi

if [ "$conf_changed" = 1 ]; then
    # Node/partition changes need a restart of both Slurm daemons.
    if daemon_pid slurmd "$SLURMD_PID" >/dev/null || daemon_pid slurmctld "$SLURMCTLD_PID" >/dev/null; then
        log "slurm.conf changed; restarting slurmd and slurmctld"
    fi
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$SLURMCTLD_PID"
fi

if pid=$(daemon_pid slurmctld "$SLURMCTLD_PID") && ctld_ok; then
    record slurmctld "$pid" kept
else
    [ -n "${pid:-}" ] && { log "slurmctld ($pid) does not answer; restarting"; stop_daemon slurmctld "$SLURMCTLD_PID"; }
    pid=$(start_slurmctld)
    record slurmctld "$pid" started
fi

if pid=$(daemon_pid slurmd "$SLURMD_PID"); then
    record slurmd "$pid" kept
    wait_idle
else
    old=$(slurmd_log_offset)
    pid=$(start_slurmd)
    record slurmd "$pid" started
    wait_idle "$old"
fi

mv "$state_dir/daemons.new" "$state_dir/daemons"
ms=$((($(date +%s%N) - t0) / 1000000))
echo "$ms" >"$state_dir/up.ms"
log "up: node $SLURM_HOST idle (CPUs=$cpus RealMemory=$real_mem) in ${ms} ms;" \
    "$(awk '{printf "%s%s=%s(%s)", sep, $1, $2, $3; sep=" "}' "$state_dir/daemons")"
