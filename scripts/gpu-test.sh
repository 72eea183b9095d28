#!/usr/bin/env bash
# The GPU suite, on the lent GPU machine, from binaries built by scripts/build-device.sh:
#   1. tests/gpu.rs (GPU replay == CPU replay byte for byte, poisoned memory; every memory kind
#      and read mode; page selection; evict/restore; write-back), with pages up to 900 MiB;
#   2. the mmsb binary: `replay --device cuda:0 --verify` prints the CPU replay's state hash;
#   3. the same tests under compute-sanitizer memcheck and racecheck (smaller workloads).
# Prints a summary; logs go to $OUT (or /tmp/gpu-test). Exit status: 0 when all passed.
set -u
D=${MMSB_DEVICE_DIR:-.device}
OUT=${OUT:-/tmp/gpu-test}
mkdir -p "$OUT"
fail=0
step() { echo "== $*"; }
step "machine: $(uname -r); $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"

step "GPU tests (big workloads)"
MMSB_GPU_BIG=1 "$D/gpu-tests" --test-threads=1 --nocapture >"$OUT/gpu-tests.log" 2>&1 || fail=1
grep -E "equal;|^test |test result|panicked|skipped" "$OUT/gpu-tests.log" | tail -30

step "binary: GPU state hash equals CPU state hash"
"$D/mmsb" gen -o /tmp/g.ckpt --total-size 256MiB --pages 300 --deltas 50000 --mix full=1,sparse=6,masked=3,create=1,resize=1,delete=1 --compress auto >/dev/null || fail=1
hash() { python3 -c 'import json,sys; print(json.load(sys.stdin)["state_hash"])'; }
cpu=$("$D/mmsb" replay /tmp/g.ckpt /tmp/g.log --device cpu --json | hash)
gpu=$("$D/mmsb" replay /tmp/g.ckpt /tmp/g.log --device cuda:0 --verify --json | tee "$OUT/replay.json" | hash)
"$D/mmsb" replay /tmp/g.ckpt /tmp/g.log --device cuda:0 --verify -o /tmp/g-out.ckpt >/dev/null || fail=1
out=$("$D/mmsb" verify --json /tmp/g-out.ckpt | hash)
echo "cpu $cpu"; echo "gpu $gpu"; echo "out $out"
if [ -n "$cpu" ] && [ "$cpu" = "$gpu" ] && [ "$cpu" = "$out" ]; then echo "binary: equal"; else echo "binary: MISMATCH"; fail=1; fi
auto=$("$D/mmsb" replay /tmp/g.ckpt --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["device"])')
echo "--device auto used: $auto"

step "binary: several devices (two contexts of cuda:0 when there is one GPU)"
n=$(nvidia-smi -L | wc -l)
devs=$([ "$n" -ge 2 ] && echo cuda:0,cuda:1 || echo cuda:0,cuda:0)
for p in shard replicate; do
  h=$("$D/mmsb" replay /tmp/g.ckpt /tmp/g.log --device "$devs" --placement $p --verify --json | tee "$OUT/multi-$p.json" | hash)
  echo "$p on $devs: $h"
  [ "$h" = "$cpu" ] || { echo "multi $p: MISMATCH"; fail=1; }
done

if [ "${MMSB_SKIP_SANITIZER:-}" = "" ]; then
  for tool in memcheck racecheck; do
    step "compute-sanitizer --tool $tool"
    # MMSB_RACECHECK_FILTER: a test-name filter for racecheck alone (the whole suite takes about
    # 7 minutes under it); memcheck always runs the whole suite.
    filter=$([ "$tool" = racecheck ] && echo "${MMSB_RACECHECK_FILTER:-}")
    MMSB_GPU_SMALL=1 timeout 400 compute-sanitizer --tool "$tool" --error-exitcode 9 "$D/gpu-tests" --test-threads=1 $filter >"$OUT/$tool.log" 2>&1
    rc=$?
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|test result|not supported|Error" "$OUT/$tool.log" | tail -5
    echo "$tool exit status: $rc"
    [ $rc -eq 0 ] || fail=1
  done
fi
echo "== overall: $([ $fail -eq 0 ] && echo PASS || echo FAIL)"
exit $fail
