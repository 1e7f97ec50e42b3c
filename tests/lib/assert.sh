# shellcheck shell=bash
# Tiny test library for end-to-end tests. Source it, then:
#
#   t_begin "name"                      start a test
#   assert_eq EXPECTED ACTUAL [MSG]     (and the others below) record a failure
#   t_pass                              end the test; counts as passed unless an
#                                       assertion in it failed
#   t_summary                           prints "e2e: N passed, N failed"; returns 1
#                                       if anything failed
#
# Assertions return 0 even when they fail (the failure is recorded and printed),
# so scripts under `set -e` go on to the next test. Use `t_ok || ...` to skip
# the rest of a test after a failure. A test never ended by t_pass/t_fail counts
# as failed in t_summary.
#
#   res=$(wait_job "$jobid" 60) || true;  assert_eq "COMPLETED 0:0" "$res"

_T_PASSED=0
_T_FAILED=0
_T_NAME=
_T_OPEN=0       # 1 while a test is running
_T_BAD=0        # 1 once the running test has failed

t_begin() { # NAME
    [ "$_T_OPEN" = 1 ] && _t_close_unfinished
    _T_NAME=$1 _T_OPEN=1 _T_BAD=0
    echo "--- $_T_NAME"
}

t_fail() { # MSG
    echo "FAIL: ${_T_NAME:-<no test>}: $*"
    if [ "$_T_BAD" = 0 ]; then
        _T_FAILED=$((_T_FAILED + 1))
        _T_BAD=1
    fi
    return 0
}

t_pass() {
    if [ "$_T_OPEN" = 1 ] && [ "$_T_BAD" = 0 ]; then
        _T_PASSED=$((_T_PASSED + 1))
        echo "ok: $_T_NAME"
    fi
    _T_OPEN=0
    return 0
}

# True while the current test has no failure.
t_ok() { [ "$_T_BAD" = 0 ]; }

_t_close_unfinished() {
    [ "$_T_BAD" = 0 ] && t_fail "test ended without t_pass"
    _T_OPEN=0
}

assert_eq() { # EXPECTED ACTUAL [MSG]
    [ "$1" = "$2" ] && return 0
    t_fail "${3:-values differ}"
    printf '  expected: %s\n  seen:     %s\n' "$1" "$2"
}

assert_contains() { # HAYSTACK NEEDLE [MSG]
    case $1 in *"$2"*) return 0 ;; esac
    t_fail "${3:-text does not contain expected string}"
    printf '  expected to contain: %s\n  seen: %s\n' "$2" "$(_t_clip "$1")"
}

assert_not_contains() { # HAYSTACK NEEDLE [MSG]
    case $1 in *"$2"*) ;; *) return 0 ;; esac
    t_fail "${3:-text contains a forbidden string}"
    printf '  expected not to contain: %s\n  seen: %s\n' "$2" "$(_t_clip "$1")"
}

assert_file_mode() { # PATH MODE (octal, as `stat -c %a` prints it, e.g. 600)
    local seen
    if ! seen=$(stat -c %a "$1" 2>/dev/null); then
        t_fail "$1: no such file"
        printf '  expected mode: %s\n  seen: missing\n' "$2"
        return 0
    fi
    [ "$seen" = "$2" ] && return 0
    t_fail "$1: wrong mode"
    printf '  expected mode: %s\n  seen:          %s\n' "$2" "$seen"
}

# Long outputs are shown indented and cut to 40 lines.
_t_clip() {
    local n
    n=$(printf '%s\n' "$1" | wc -l)
    printf '\n'
    printf '%s\n' "$1" | head -n 40 | sed 's/^/    | /'
    [ "$n" -le 40 ] || echo "    | ... ($n lines)"
}

# Wait (at most TIMEOUT seconds) until job JOBID has finished, and print
# "STATE EXITCODE" (e.g. "COMPLETED 0:0"). For a job array, one line per task.
# A pending job that is held (e.g. requeued after a prolog failure) counts as
# finished and is reported as "HELD EXITCODE". Returns 1 on timeout (printing
# the last states seen), 2 if Slurm does not know the job.
wait_job() { # JOBID TIMEOUT
    local id=$1 deadline out states
    deadline=$(($(date +%s) + ${2:-60}))
    while :; do
        if ! out=$(scontrol -o show job "$id" 2>&1); then
            echo "UNKNOWN -"
            echo "wait_job: $out" >&2
            return 2
        fi
        states=$(printf '%s\n' "$out" | _t_job_states)
        if ! printf '%s\n' "$states" | grep -qvE \
            '^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|PREEMPTED|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|HELD) '; then
            printf '%s\n' "$states"
            return 0
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            printf '%s\n' "$states"
            echo "wait_job: job $id not finished after ${2:-60}s" >&2
            return 1
        fi
        sleep 0.2
    done
}

# scontrol -o lines -> "STATE EXITCODE" lines (held pending jobs -> HELD).
_t_job_states() {
    awk '{
        st = ""; ex = ""; held = 0
        for (i = 1; i <= NF; i++) {
            if ($i ~ /^JobState=/) st = substr($i, 10)
            else if ($i ~ /^ExitCode=/) ex = substr($i, 10)
            else if ($i == "Priority=0") held = 1
        }
        if (st == "PENDING" && held) st = "HELD"
        if (st != "") print st, ex
    }'
}

t_summary() {
    [ "$_T_OPEN" = 1 ] && _t_close_unfinished
    echo "e2e: $_T_PASSED passed, $_T_FAILED failed"
    [ "$_T_FAILED" = 0 ]
}
