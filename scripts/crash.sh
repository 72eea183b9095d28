#!/usr/bin/env bash
# The crash-consistency tests of tests/crash.rs with many trials (issue "Hardening"): SIGKILL of
# a log writer at random acknowledgement counts, and of `mmsb compact` at random points of
# writing its outputs. Usage: scripts/crash.sh [TRIALS] [SEED]   (default 1000 trials, seed from
# the clock; the seed is printed in any failure).
set -euo pipefail
cd "$(dirname "$0")/.."
export MMSB_CRASH_TRIALS=${1:-1000}
[ -n "${2:-}" ] && export MMSB_CRASH_SEED=$2
echo "trials: $MMSB_CRASH_TRIALS, seed: ${MMSB_CRASH_SEED:-from the clock}"
time cargo test --release --locked --test crash -- --test-threads=1
