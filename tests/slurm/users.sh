#!/usr/bin/env bash
# Create test users with a home and bash as shell, if absent. Idempotent.
#   usage: tests/slurm/users.sh NAME...
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "users: must run as root" >&2; exit 1; }
[ $# -ge 1 ] || { echo "usage: $0 NAME..." >&2; exit 1; }
for u in "$@"; do
    if ! id -u "$u" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$u"
    fi
    home=$(getent passwd "$u" | cut -d: -f6)
    if [ ! -d "$home" ]; then   # user existed without a home
        install -d -o "$u" -g "$(id -g "$u")" -m 0750 "$home"
    fi
done
