#!/usr/bin/env bash
# Install (as root, from Debian) everything the project's tests need.
# Idempotent and fast: no apt call at all when every package is already there.
# Quiet unless something fails.
#   usage: tests/slurm/install-deps.sh
set -euo pipefail

pkgs=(slurmctld slurmd slurm-client munge libslurm-dev libclang-dev openssl curl jq
      python3-venv ca-certificates procps openssh-server openssh-client rsync)
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
    # openssh-server's postinst would start a daemon on port 22: a policy-rc.d that exits 101
    # forbids starting services during the install (the ssh tests start their own sshd on a
    # free loopback port). Removed afterwards, unless one was there before.
    own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    rc=0
    { apt-get -o DPkg::Lock::Timeout=300 update -q >"$log" 2>&1 &&
      apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" \
          >>"$log" 2>&1; } || rc=$?
    [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
    if [ "$rc" -ne 0 ]; then
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
