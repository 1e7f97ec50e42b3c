#!/usr/bin/env bash
# Install (as root, from Debian) everything the project's tests need.
# Idempotent and fast: no apt call at all when every package is already there.
# Quiet unless something fails.
#   usage: tests/slurm/install-deps.sh
set -euo pipefail

pkgs=(slurmctld slurmd slurm-client munge libslurm-dev libclang-dev openssl curl jq
      python3-venv ca-certificates procps)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs npm)

die() { echo "install-deps: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

missing=()
for p in "${pkgs[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    log=$(mktemp /tmp/install-deps.XXXXXX.log)
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -q >"$log" 2>&1 &&
           apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; }; then
        tail -n 40 "$log" >&2
        die "apt-get failed installing: ${missing[*]} (full log: $log)"
    fi
    rm -f "$log"
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
        die "cargo is installed at ${HOME:-/root}/.cargo/bin/cargo but not on PATH:" \
            "run: export PATH=\"${HOME:-/root}/.cargo/bin:\$PATH\""
    fi
    die "cargo not found: install a Rust toolchain (rustup, or 'apt-get install cargo')" \
        "and make sure 'cargo' is on PATH"
fi
