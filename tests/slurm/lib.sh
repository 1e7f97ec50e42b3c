# shellcheck shell=bash
# Helpers shared by tests/slurm/*.sh (sourced, not run). Single-node Slurm
# without systemd: daemons are started directly and tracked by pid files.

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
: "${SLURM_WAIT_SECS:=60}"   # bound for every wait in these scripts

log() { echo "slurm: $*" >&2; }
die() { echo "slurm: error: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root"; }

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

# Wait until the node is idle. Resume it when drained/down from an earlier run.
# With LOG_OFFSET given, also wait until a slurmd started after it (see above).
wait_idle() { # [SLURMD_LOG_OFFSET]
    local i st last_resume=-100 old=${1-}
    for ((i = 0; i < SLURM_WAIT_SECS * 10; i++)); do
        st=$(node_state)
        case $st in
            drain* | down | fail* | *+drain*)
                if ((i - last_resume >= 20)); then
                    log "node $SLURM_HOST is '$st' ($(node_reason)); resuming it"
                    scontrol update nodename="$SLURM_HOST" state=resume >/dev/null 2>&1 || true
                    last_resume=$i
                fi ;;
            idle)
                if [ -z "$old" ] || slurmd_started_since "$old"; then
                    return 0
                fi ;;
        esac
        sleep 0.1
    done
    echo "slurm: node state is '${st:-<no answer>}' ($(node_reason)), not idle" \
         "after ${SLURM_WAIT_SECS}s" >&2
    log_tail
    exit 1
}

node_reason() {
    scontrol show node "$SLURM_HOST" 2>/dev/null | sed -n 's/^ *Reason=//p' | head -n 1
}
