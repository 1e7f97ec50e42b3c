#!/usr/bin/env bash
# Per-step cost of the plugin when the user's token is valid (run by hand, not in CI):
#
#   bash bench/step_cost.sh          # 100 runs of each
#   bash bench/step_cost.sh 300
#
# Brings up the local Slurm and test IdP (as the demo does), logs a user in, installs the plugin,
# then runs `srun true` and `srun --qlam-auth true` alternately N times each as that user and
# reports wall-time p50/p99 of each and their ratio, plus the time the plugin spent in the step's
# user_init hook (slurmd.log `elapsed_ms=`, p50/p99). Stops everything at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-100}
RUN=$ROOT/tests/.run/bench-step
SLURM_STATE=$RUN/slurm
IDP_STATE=$RUN/idp
CA=$RUN/ca.pem
U=benchu
. "$ROOT/tests/e2e/lib.sh"
. "$ROOT/tests/lib/assert.sh"
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }

cleanup() {
    set +e
    bash "$ROOT/tests/idp/stop.sh" "$IDP_STATE" >/dev/null
    bash "$ROOT/tests/slurm/down.sh" "$SLURM_STATE" >/dev/null
    bash "$ROOT/tests/slurm/uninstall-plugin.sh" >/dev/null
    rm -f /usr/local/bin/qlam-auth
}
trap cleanup EXIT

bash "$ROOT/tests/slurm/install-deps.sh"
(cd "$ROOT" && cargo build --release --locked -p qlam-spank -p qlam-auth 2>&1 | tail -n 1)
install -m 0755 "$ROOT/target/release/qlam-auth" /usr/local/bin/qlam-auth
mkdir -p "$RUN" && chmod 0755 "$ROOT/tests/.run" "$RUN"
bash "$ROOT/tests/slurm/up.sh" "$SLURM_STATE" >/dev/null
ISSUER=$(start_idp "$IDP_STATE" "$U:$U-pw")
install -m 0644 "$IDP_STATE/ca.pem" "$CA"
bash "$ROOT/tests/slurm/install-plugin.sh" "$ROOT/target/release/libqlam_spank.so" "ca_bundle=$CA issuers=$ISSUER" \
    --state "$SLURM_STATE" >/dev/null
bash "$ROOT/tests/slurm/users.sh" "$U" >/dev/null
H=$(user_home "$U")
rm -rf "$H/.qsh"
as_user "$U" qlam-auth config init --issuer "$ISSUER" --client-id qlam-cli --tenant bench >/dev/null 2>&1
out=$RUN/login.out
as_user "$U" qlam-auth login --device --no-qr >"$out" 2>&1 &
lp=$!
code=
for ((i = 0; i < 200; i++)); do
    code=$(sed -n 's/^ *2\. *Enter  *\([A-Za-z0-9-]*\).*/\1/p' "$out" | head -n 1)
    [ -n "$code" ] && break
    sleep 0.1
done
node "$ROOT/tests/idp/approve.mjs" --issuer "$ISSUER" --ca "$CA" --user "$U" --password "$U-pw" \
    --user-code "$code" >/dev/null
wait "$lp"

log=/var/log/slurm/slurmd.log
off=$(stat -c %s "$log")
# Warm-up: the first job after slurmctld starts waits for the scheduler.
(cd "$H" && as_user "$U" srun true && as_user "$U" srun --qlam-auth true)
plain=() with=()
for ((i = 0; i < N; i++)); do
    t0=$(date +%s%N); (cd "$H" && as_user "$U" srun true); t1=$(date +%s%N)
    (cd "$H" && as_user "$U" srun --qlam-auth true); t2=$(date +%s%N)
    plain+=($(((t1 - t0) / 1000))) with+=($(((t2 - t1) / 1000)))
done
hook=$(tail -c +"$((off + 1))" "$log" | sed -n 's/.*qlam-auth: job=.* elapsed_ms=\([0-9]*\).*/\1/p')
python3 - "$N" "${plain[*]}" "${with[*]}" "$hook" <<'PY'
import sys
n = int(sys.argv[1])
plain = sorted(int(x) / 1000 for x in sys.argv[2].split())
withq = sorted(int(x) / 1000 for x in sys.argv[3].split())
hook = sorted(int(x) for x in sys.argv[4].split())
def pct(v, p):
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
print(f"| runs | `srun true` p50 / p99 ms | `srun --qlam-auth true` p50 / p99 ms | ratio p50 | user_init hook p50 / p99 ms (n) |")
print(f"|---|---|---|---|---|")
print(f"| {n} | {pct(plain,50):.1f} / {pct(plain,99):.1f} | {pct(withq,50):.1f} / {pct(withq,99):.1f} | "
      f"{pct(withq,50)/pct(plain,50):.2f} | {pct(hook,50)} / {pct(hook,99)} ({len(hook)}) |")
PY
