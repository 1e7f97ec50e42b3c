#!/usr/bin/env bash
# Prove the Slurm harness works: deps, up, a batch job as alice, a 20-task array,
# srun, down, and up/down twice in a row. Run as root.
#   usage: tests/slurm/selftest.sh [STATE_DIR]     (default: tests/.run/slurm)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/lib/assert.sh
. "$root/tests/lib/assert.sh"
state=${1:-$root/tests/.run/slurm}
mkdir -p "$state"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
trap '"$here/down.sh" "$state" || true' EXIT

t_begin "install-deps"
t=$(now_ms)
"$here/install-deps.sh" || t_fail "install-deps.sh failed"
t_pass
echo "  install-deps: $(($(now_ms) - t)) ms"

t_begin "up"
t=$(now_ms)
if "$here/up.sh" "$state"; then
    echo "  up: $(($(now_ms) - t)) ms"
    assert_eq idle "$(sinfo -h -N -o %T)" "node state"
    t_pass
else
    t_fail "up.sh failed"
    t_summary
    exit 1
fi

t_begin "users"
"$here/users.sh" alice
assert_eq alice "$(id -un alice 2>/dev/null)" "user alice"
assert_eq /home/alice "$(getent passwd alice | cut -d: -f6)" "alice's home"
[ -d /home/alice ] || t_fail "/home/alice missing"
t_pass

t_begin "sbatch as alice"
t=$(now_ms)
jobid=$(cd /home/alice && runuser -u alice -- sbatch --parsable -D /home/alice \
        --wrap 'id; env | sort') || t_fail "sbatch failed"
if t_ok; then
    res=$(wait_job "$jobid" 60) || true
    echo "  sbatch to end: $(($(now_ms) - t)) ms"
    assert_eq "COMPLETED 0:0" "$res" "job $jobid state"
    out=/home/alice/slurm-$jobid.out
    [ -f "$out" ] || t_fail "no output file $out"
    if t_ok; then
        assert_contains "$(cat "$out")" "uid=$(id -u alice)(alice)" "job runs as alice"
        assert_contains "$(cat "$out")" "SLURM_JOB_ID=$jobid" "job env"
        assert_eq alice "$(stat -c %U "$out")" "output file owner"
    fi
fi
t_pass

t_begin "20-task array"
t=$(now_ms)
arr=$(cd /home/alice && runuser -u alice -- sbatch --parsable --array=1-20 \
      -D /home/alice -o /dev/null --wrap 'sleep 2') || t_fail "sbatch --array failed"
if t_ok; then
    res=$(wait_job "$arr" 60) || true
    ms=$(($(now_ms) - t))
    echo "  array of 20 x 'sleep 2': $ms ms"
    assert_eq 20 "$(grep -c '^COMPLETED 0:0$' <<<"$res" || true)" "COMPLETED tasks"
    # Serially this would take >= 40 s; concurrently about 3 s.
    [ "$ms" -lt 20000 ] || t_fail "array took $ms ms: tasks did not run concurrently"
fi
t_pass

t_begin "srun as alice"
t=$(now_ms)
if out=$(cd /home/alice && runuser -u alice -- srun true 2>&1); then
    echo "  srun true: $(($(now_ms) - t)) ms"
    assert_eq "" "$out" "srun output"
else
    t_fail "srun true failed: $out"
fi
t_pass

t_begin "down"
"$here/down.sh" "$state" || t_fail "down.sh failed"
for f in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
    [ ! -e "$f" ] || t_fail "$f left behind"
done
assert_eq "" "$(scontrol ping 2>/dev/null | grep 'is UP' || true)" "slurmctld still answers"
t_pass

t_begin "up twice, down twice"
t=$(now_ms)
"$here/up.sh" "$state" || t_fail "first up.sh failed"
echo "  up (cold): $(($(now_ms) - t)) ms"
first=$(cat "$state/daemons" 2>/dev/null || true)
t=$(now_ms)
"$here/up.sh" "$state" || t_fail "second up.sh failed"
echo "  up (already up): $(($(now_ms) - t)) ms"
assert_eq "$(awk '{print $1, $2}' <<<"$first")" \
          "$(awk '{print $1, $2}' "$state/daemons" 2>/dev/null)" "second up kept the same daemons"
assert_eq 3 "$(grep -c ' kept$' "$state/daemons" 2>/dev/null || true)" "second up started nothing"
"$here/down.sh" "$state" || t_fail "first down.sh failed"
"$here/down.sh" "$state" || t_fail "second down.sh failed"
t_pass

trap - EXIT
t_summary
