#!/usr/bin/env bash
# Runs every test of qlam-auth: formatting and lints, unit tests, integration tests against the
# real test IdP and the real qlam-core, SSH certificates against a real sshd, and end-to-end
# tests on a real Slurm: the whole suite on one node twice, with proctrack/linuxproc and with the
# production-like proctrack/cgroup, task/cgroup and PrologFlags=Contain, then the multi-node
# cases on three nodes in the production-like configuration (docs/development.md).
#
#   bash tests/run-all.sh       (as root; sudo is not needed)
#
# On a fresh Debian 12 machine (as root) it installs what it needs first (apt: Slurm, munge,
# libslurm-dev, libclang-dev, node/npm if missing, python3-venv, openssh-server (not started)
# and rsync; npm: oidc-provider; PyPI: qlam-core into a venv under target/). Everything it
# starts, it stops. Safe to run twice.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing what the tests need (tests/slurm/install-deps.sh)"
bash tests/slurm/install-deps.sh

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and integration tests (real test IdP over https, real qlam-core 0.10.0)"
# Two test binaries at a time: each starts its own IdP, and this machine may have two cores.
# --include-ignored: the tests that need node (the test IdP), PyPI (qlam-core) or Slurm's headers
# are ignored by a plain `cargo test` (a machine with only Rust); CI runs every one of them.
cargo test --workspace --locked -- --include-ignored --test-threads=4

step "SSH certificates against a real sshd and the test signing service (tests/ssh/run.sh)"
# CI must run every test: a missing sshd or root is a failure there, not a skip.
QLAM_TEST_REQUIRE_ALL=1 bash tests/ssh/run.sh

step "end-to-end tests on a real Slurm (tests/e2e/run.sh): proctrack/linuxproc, task/none"
bash tests/e2e/run.sh

step "the same end-to-end tests, production-like: proctrack/cgroup, task/cgroup, PrologFlags=Contain"
TEST_SLURM_PROFILE=cgroup bash tests/e2e/run.sh

step "multi-node end-to-end tests: 3 nodes, proctrack/cgroup, PrologFlags=Contain (tests/e2e/run-multinode.sh)"
bash tests/e2e/run-multinode.sh

step "all tests passed"
