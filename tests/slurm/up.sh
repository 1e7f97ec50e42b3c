#!/usr/bin/env bash
# Bring up munged, slurmctld and slurmd on this machine (no systemd).
#   usage: [TEST_SLURM_NODES=N] [TEST_SLURM_PROFILE=linuxproc|cgroup] tests/slurm/up.sh STATE_DIR
#
# TEST_SLURM_NODES=1 (default): one node named after this host, as the demo and tests/e2e/run.sh use.
# TEST_SLURM_NODES=N (2..8): nodes qn1..qnN, each its own `slurmd -N qnI` (port 17001+I-1, spool
# /var/lib/slurm/slurmd-qnI, log /var/log/slurm/slurmd-qnI.log, pid /run/slurmd-qnI.pid) in its
# own mount and UTS namespace (hostname qnI, a node-local tmpfs on /run/qlam-auth), all sharing
# /home as a shared filesystem would. See docs/development.md.
# TEST_SLURM_PROFILE=linuxproc (default): proctrack/linuxproc, task/none. TEST_SLURM_PROFILE=cgroup, as
# production sites run: proctrack/cgroup, task/cgroup, PrologFlags=Contain, cgroup v1.
#
# Writes /etc/slurm/slurm.conf, keeps /etc/slurm/plugstack.conf as Debian's include
# line, leaves healthy daemons alone (restarts the Slurm ones if slurm.conf changed),
# cleans stale pid files, resumes a drained/down node, and waits until the node is
# idle. STATE_DIR/daemons records "NAME PID started|kept" for this run.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/slurm/lib.sh
. "$here/lib.sh"

state_dir=$(state_dir_arg "$@")
mkdir -p "$state_dir"
t0=$(date +%s%N)

# --- configuration --------------------------------------------------------------
nodes=${TEST_SLURM_NODES:-1}
profile=${TEST_SLURM_PROFILE:-linuxproc}
case $nodes in [1-8]) ;; *) die "TEST_SLURM_NODES=$nodes: give a number of nodes from 1 to 8" ;; esac
case $profile in
    linuxproc) proctrack=proctrack/linuxproc task=task/none ;;
    cgroup)
        proctrack=proctrack/cgroup task=task/cgroup
        [ -d /sys/fs/cgroup/freezer ] ||
            die "TEST_SLURM_PROFILE=cgroup needs cgroup v1 with the freezer controller at" \
                "/sys/fs/cgroup/freezer (see docs/development.md for cgroup v2)" ;;
    *) die "TEST_SLURM_PROFILE=$profile: use linuxproc (default) or cgroup" ;;
esac
if ((nodes == 1)); then
    slurmd_pid=$SLURMD_PID spool=/var/lib/slurm/slurmd slurmd_log=$SLURMD_LOG
else
    slurmd_pid=$(node_pidfile %n) spool=/var/lib/slurm/slurmd-%n slurmd_log=$(node_logfile %n)
fi
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
SlurmdPidFile=$slurmd_pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=$spool
ProctrackType=$proctrack
TaskPlugin=$task
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
SlurmdLogFile=$slurmd_log
EOF
[ "$profile" = cgroup ] && echo "PrologFlags=Contain" >>"$conf_new"
if ((nodes == 1)); then
    cat >>"$conf_new" <<EOF
NodeName=$SLURM_HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:64
EOF
else
    # No OverSubscribe: the scheduler spreads jobs over the nodes (each has this machine's CPUs).
    for ((i = 1; i <= nodes; i++)); do
        echo "NodeName=qn$i NodeHostname=qn$i NodeAddr=127.0.0.1 Port=$((NODE_PORT_BASE + i - 1))" \
             "CPUs=$cpus RealMemory=$((real_mem / nodes)) State=UNKNOWN" >>"$conf_new"
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"$conf_new"
fi
conf_changed=0
if [ "$profile" = cgroup ]; then
    # The cgroup v1 configuration verified on this machine (shared/notes/slurm.md).
    cgroup_new=$(printf '%s\n' "# Written by tests/slurm/up.sh (TEST_SLURM_PROFILE=cgroup)." \
        CgroupPlugin=cgroup/v1 CgroupMountpoint=/sys/fs/cgroup ConstrainCores=yes \
        ConstrainRAMSpace=no)
    if [ "$(cat "$CGROUP_CONF" 2>/dev/null)" != "$cgroup_new" ]; then
        printf '%s\n' "$cgroup_new" >"$CGROUP_CONF"
        chmod 0644 "$CGROUP_CONF"
        conf_changed=1
    fi
fi
if [ "$profile" != cgroup ] && head -n 1 "$CGROUP_CONF" 2>/dev/null | grep -q '^# Written by tests/slurm/up.sh'; then
    rm -f "$CGROUP_CONF"   # ours, from an earlier TEST_SLURM_PROFILE=cgroup run
fi
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
    stop_all_slurmd holders   # one node or several; fresh node namespaces
    stop_daemon slurmctld "$SLURMCTLD_PID"
fi

if pid=$(daemon_pid slurmctld "$SLURMCTLD_PID") && ctld_ok; then
    record slurmctld "$pid" kept
else
    [ -n "${pid:-}" ] && { log "slurmctld ($pid) does not answer; restarting"; stop_daemon slurmctld "$SLURMCTLD_PID"; }
    pid=$(start_slurmctld)
    record slurmctld "$pid" started
fi

if ((nodes > 1)); then
    for ((i = 1; i <= nodes; i++)); do
        n=qn$i
        if pid=$(daemon_pid slurmd "$(node_pidfile $n)") && holder_pid $n >/dev/null; then
            record "slurmd:$n" "$pid" kept
        else
            [ -n "${pid:-}" ] && stop_daemon slurmd "$(node_pidfile $n)"
            pid=$(start_node_slurmd $n)
            record "slurmd:$n" "$pid" started
        fi
        record "holder:$n" "$(holder_pid $n)" up
    done
    wait_idle
elif pid=$(daemon_pid slurmd "$SLURMD_PID"); then
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
log "up: $(sinfo -h -o '%D node(s) %N %t' | head -n 1) ($profile, CPUs=$cpus each) in ${ms} ms;" \
    "$(awk '{printf "%s%s=%s(%s)", sep, $1, $2, $3; sep=" "}' "$state_dir/daemons")"
