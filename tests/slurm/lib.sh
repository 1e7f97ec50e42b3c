# shellcheck shell=bash
# Helpers shared by tests/slurm/*.sh (sourced, not run). Slurm without systemd: daemons are
# started directly and tracked by pid files. One node (slurmd named after this host), or
# several (TEST_SLURM_NODES>1 in up.sh): slurmd -N NAME per node, Debian's build being made with
# --enable-multiple-slurmd (docs/development.md), each in its own mount and UTS namespace.

# shellcheck disable=SC2034  # constants used by the scripts that source this
SLURM_CONF=/etc/slurm/slurm.conf
PLUGSTACK_CONF=/etc/slurm/plugstack.conf
PLUGSTACK_DIR=/etc/slurm/plugstack.conf.d
PLUGSTACK_INCLUDE="include $PLUGSTACK_DIR/*.conf"
MUNGED_PID=/run/munge/munged.pid
SLURMCTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
SLURMCTLD_LOG=/var/log/slurm/slurmctld.log
SLURMD_LOG=/var/log/slurm/slurmd.log
SLURM_HOST=$(hostname -s)
CGROUP_CONF=/etc/slurm/cgroup.conf
# Several nodes: one namespace holder process per node (pid in NODE_NS_DIR/NAME.pid) keeps the
# node's mount namespace (its own tmpfs on NODE_LOCAL_DIRS, like a node's local /run) and UTS
# namespace (hostname NAME) across slurmd restarts. slurmd -N NAME runs inside them.
NODE_NS_DIR=/run/qlam-slurm-nodes
NODE_LOCAL_DIRS=(/run/qlam-auth)
NODE_PORT_BASE=17001            # slurmd port of node 1 (node i: base + i - 1)
node_pidfile() { echo "/run/slurmd-$1.pid"; }            # as SlurmdPidFile=/run/slurmd-%n.pid
node_logfile() { echo "/var/log/slurm/slurmd-$1.log"; }  # as SlurmdLogFile=...-%n.log
: "${SLURM_WAIT_SECS:=60}"   # bound for every wait in these scripts

log() { echo "slurm: $*" >&2; }
die() { echo "slurm: error: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root"; }
# The one argument of up.sh and down.sh, which run as root: prints it, or exits with the usage.
state_dir_arg() { # "$@"
    [ $# -eq 1 ] || die "usage: $0 STATE_DIR"
    need_root
    printf '%s\n' "$1"
}

# True if PID is a live process (not gone, not a zombie: PID 1 here may be slow
# to reap daemonized processes).
alive() { # PID
    local st threads
    st=$(awk '/^State:/ {s = $2} /^Threads:/ {t = $2} END {print s, t}' \
         "/proc/$1/status" 2>/dev/null) || return 1
    read -r st threads <<<"$st"
    case $st in
        "") return 1 ;;
        # A zombie group leader whose other threads still run is still shutting down.
        Z | X) [ "${threads:-1}" -gt 1 ] ;;
        *) return 0 ;;
    esac
}

# Print the pid from PIDFILE if that process is alive and is NAME.
daemon_pid() { # NAME PIDFILE
    local pid
    [ -s "$2" ] || return 1
    pid=$(tr -dc 0-9 <"$2")
    [ -n "$pid" ] && alive "$pid" &&
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
    echo "$pid"
}

# Remove PIDFILE when it names no live NAME process. Returns 0 if it was stale.
clean_stale_pidfile() { # NAME PIDFILE
    if [ -e "$2" ] && ! daemon_pid "$1" "$2" >/dev/null; then
        log "removing stale pid file $2"
        rm -f "$2"
        return 0
    fi
    return 1
}

# Print the last lines of the daemon logs (for error messages).
log_tail() {
    local f
    for f in "$SLURMCTLD_LOG" "$SLURMD_LOG"; do
        [ -r "$f" ] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }
    done
    return 0
}

# Stop NAME (pid from PIDFILE, or FALLBACK_PID if that is still NAME): SIGTERM,
# wait bounded, then SIGKILL. Removes the pid file. Fine when nothing runs.
stop_daemon() { # NAME PIDFILE [FALLBACK_PID]
    local name=$1 pidfile=$2 pid i
    pid=$(daemon_pid "$name" "$pidfile") || pid=
    if [ -z "$pid" ] && [ -n "${3:-}" ] &&
       alive "$3" && [ "$(cat "/proc/$3/comm" 2>/dev/null)" = "$name" ]; then
        pid=$3
    fi
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < SLURM_WAIT_SECS * 10; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "$name ($pid) ignored SIGTERM for ${SLURM_WAIT_SECS}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
        fi
    fi
    rm -f "$pidfile"
}

# Wait for a pid file of a freshly started daemon; print its pid.
wait_pidfile() { # NAME PIDFILE
    local i pid
    for ((i = 0; i < SLURM_WAIT_SECS * 10; i++)); do
        pid=$(daemon_pid "$1" "$2") && { echo "$pid"; return 0; }
        sleep 0.1
    done
    log_tail
    die "$1 did not start (no live pid in $2 after ${SLURM_WAIT_SECS}s)"
}

munge_ok() { munge -n 2>/dev/null | unmunge 2>/dev/null | grep -q 'STATUS: *Success'; }
ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_munged() {
    local force=()
    install -d -o munge -g munge -m 0755 /run/munge
    clean_stale_pidfile munged "$MUNGED_PID" && force=(--force)
    runuser -u munge -- /usr/sbin/munged "${force[@]}" >&2
    wait_pidfile munged "$MUNGED_PID"
}

start_slurmctld() {
    local i
    clean_stale_pidfile slurmctld "$SLURMCTLD_PID" || true
    /usr/sbin/slurmctld -c >&2
    wait_pidfile slurmctld "$SLURMCTLD_PID"
    for ((i = 0; i < SLURM_WAIT_SECS * 10; i++)); do
        ctld_ok && return 0
        sleep 0.1
    done
    log_tail
    die "slurmctld does not answer 'scontrol ping' after ${SLURM_WAIT_SECS}s"
}

# Size of the slurmd log now: pass it to wait_idle after (re)starting slurmd.
slurmd_log_offset() { stat -c %s "$SLURMD_LOG" 2>/dev/null || echo 0; }

# True once a slurmd has logged "started" (its socket is open) after OFFSET.
slurmd_started_since() { # OFFSET
    local off=$1
    [ "$(slurmd_log_offset)" -ge "$off" ] || off=0   # log was truncated
    tail -c +"$((off + 1))" "$SLURMD_LOG" 2>/dev/null | grep -q 'slurmd started on'
}

start_slurmd() {
    clean_stale_pidfile slurmd "$SLURMD_PID" || true
    /usr/sbin/slurmd >&2
    wait_pidfile slurmd "$SLURMD_PID"
}

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n 1; }

# Wait until every node is idle. Resume nodes drained/down from an earlier run.
# With LOG_OFFSET given (single node), also wait until a slurmd started after it (see above).
wait_idle() { # [SLURMD_LOG_OFFSET]
    local i st n bad last_resume=-100 old=${1-} lines
    for ((i = 0; i < SLURM_WAIT_SECS * 10; i++)); do
        lines=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u) || lines=
        bad=
        while read -r n st; do
            [ -n "$n" ] || continue
            case $st in
                idle) ;;
                drain* | down* | fail* | *+drain*)
                    bad+="$n=$st "
                    if ((i - last_resume >= 20)); then
                        log "node $n is '$st' ($(node_reason "$n")); resuming it"
                        scontrol update nodename="$n" state=resume >/dev/null 2>&1 || true
                    fi ;;
                *) bad+="$n=$st " ;;
            esac
        done <<<"$lines"
        if [ -n "$bad" ] && ((i - last_resume >= 20)); then last_resume=$i; fi
        if [ -n "$lines" ] && [ -z "$bad" ]; then
            if [ -z "$old" ] || slurmd_started_since "$old"; then
                return 0
            fi
        fi
        sleep 0.1
    done
    echo "slurm: nodes not idle after ${SLURM_WAIT_SECS}s: ${bad:-<no answer from sinfo>}" >&2
    log_tail
    exit 1
}

node_reason() { # [NODE]
    scontrol show node "${1:-$SLURM_HOST}" 2>/dev/null | sed -n 's/^ *Reason=//p' | head -n 1
}

# --- several nodes ----------------------------------------------------------------------

# The multiple-slurmd nodes slurm.conf names (NodeName lines with Port=); none for one node.
conf_nodes() {
    awk '/^NodeName=/ && / Port=/ {sub(/^NodeName=/, "", $1); print $1}' "$SLURM_CONF" 2>/dev/null
}

# Pid of NAME's namespace holder, if alive.
holder_pid() { # NAME
    local pid
    pid=$(daemon_pid sleep "$NODE_NS_DIR/$1.pid") || return 1
    # Ours: a holder's hostname (UTS namespace) is its node's name.
    [ "$(nsenter -t "$pid" -u hostname 2>/dev/null)" = "$1" ] || return 1
    echo "$pid"
}

# Start (or keep) NAME's namespace holder: new mount + UTS namespaces, hostname NAME, a fresh
# tmpfs on each NODE_LOCAL_DIRS. Prints its pid.
start_holder() { # NAME
    local name=$1 pid i d mounts=
    if pid=$(holder_pid "$name"); then echo "$pid"; return 0; fi
    rm -f "$NODE_NS_DIR/$name.pid"
    install -d -m 0755 "$NODE_NS_DIR"
    for d in "${NODE_LOCAL_DIRS[@]}"; do
        install -d -m 0755 "$d"
        mounts+="mount -t tmpfs -o mode=0755,size=16m qlam-$name $d && "
    done
    # setsid + unshare + sh all exec in place: $! is the holder (sleep) itself.
    setsid unshare --mount --uts -- sh -c "hostname $name && ${mounts}exec sleep infinity" \
        </dev/null >/dev/null 2>&1 &
    pid=$!
    echo "$pid" >"$NODE_NS_DIR/$name.pid"
    for ((i = 0; i < SLURM_WAIT_SECS * 10; i++)); do
        holder_pid "$name" >/dev/null && { echo "$pid"; return 0; }
        alive "$pid" || break
        sleep 0.1
    done
    die "the namespace holder of node $name did not start (unshare --mount --uts)"
}

# Run a command inside node NAME (its mount and UTS namespaces).
in_node() { # NAME CMD...
    local pid
    pid=$(holder_pid "$1") || die "node $1 has no namespace holder (run tests/slurm/up.sh)"
    shift
    nsenter -t "$pid" -m -u -- "$@"
}

# Start slurmd -N NAME inside its node; wait until it logged that it started. Prints its pid.
start_node_slurmd() { # NAME
    local name=$1 pidf log off pid i
    pidf=$(node_pidfile "$name")
    log=$(node_logfile "$name")
    clean_stale_pidfile slurmd "$pidf" || true
    install -d -m 0755 "/var/lib/slurm/slurmd-$name"
    off=$(stat -c %s "$log" 2>/dev/null || echo 0)
    start_holder "$name" >/dev/null
    in_node "$name" /usr/sbin/slurmd -N "$name" >&2
    pid=$(wait_pidfile slurmd "$pidf")
    for ((i = 0; i < SLURM_WAIT_SECS * 10; i++)); do
        [ "$(stat -c %s "$log" 2>/dev/null || echo 0)" -ge "$off" ] || off=0
        tail -c +"$((off + 1))" "$log" 2>/dev/null | grep -q 'slurmd started on' && {
            echo "$pid"; return 0; }
        alive "$pid" || break
        sleep 0.1
    done
    tail -n 15 "$log" >&2 || true
    die "slurmd -N $name did not start (see $log)"
}

# Stop every slurmd these scripts may have started (one node, or several) and, with
# "holders", the namespace holders too.
stop_all_slurmd() { # [holders]
    local f
    stop_daemon slurmd "$SLURMD_PID"
    for f in /run/slurmd-*.pid; do
        [ -e "$f" ] && stop_daemon slurmd "$f"
    done
    [ "${1:-}" = holders ] || return 0
    for f in "$NODE_NS_DIR"/*.pid; do
        [ -e "$f" ] || continue
        if holder_pid "$(basename "$f" .pid)" >/dev/null; then
            stop_daemon sleep "$f"
        else
            rm -f "$f"
        fi
    done
    return 0
}
