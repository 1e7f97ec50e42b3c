#!/usr/bin/env bash
# Runs the parser property tests (token-core/tests/proptest_parsers.rs and
# spank-plugin/tests/proptest_args.rs) much longer than CI does.
# Run by hand, not in CI:
#
#   bench/fuzz.sh              # 100000 cases per property (about 15 s on 2 cores, release build)
#   bench/fuzz.sh 1000000      # a million (about 3 minutes)
#
# A failure prints the minimal failing input, and proptest records its seed in
# token-core/tests/proptest_parsers.proptest-regressions (commit that file: CI then replays the case first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CASES="${1:-100000}"
cd "$ROOT"
PROPTEST_CASES="$CASES" PROPTEST_MAX_SHRINK_ITERS=100000 \
  cargo test --release -p token-core --test proptest_parsers -- --test-threads=2
PROPTEST_CASES="$CASES" PROPTEST_MAX_SHRINK_ITERS=100000 \
  cargo test --release -p qlam-spank --test proptest_args -- --test-threads=2
