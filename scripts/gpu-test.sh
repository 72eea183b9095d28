#!/usr/bin/env bash
# The GPU suite, on a CUDA machine, from binaries built by scripts/build-device.sh:
#   1. tests/gpu.rs (GPU replay == CPU replay byte for byte, poisoned memory; every memory kind
#      and read mode; page selection; evict/restore; write-back), with pages up to 900 MiB;
#   2. the mmsb binary: `replay --device cuda:0 --verify` prints the CPU replay's state hash
#      (whole log and cut by --to-seq; the log planned while CUDA starts);
#   3. the same tests under compute-sanitizer memcheck (whole suite) and racecheck (each test
#      alone, with its own time limit), on smaller workloads.
# Prints a summary; logs go to $OUT (or /tmp/gpu-test). Exit status: 0 when all passed.
set -u
D=${MMSB_DEVICE_DIR:-.device}
OUT=${OUT:-/tmp/gpu-test}
mkdir -p "$OUT"
fail=0
step() { echo "== $*"; }
step "machine: $(uname -r); $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"

step "GPU tests (big workloads)"
MMSB_GPU_BIG=1 MMSB_REQUIRE_GPU=1 "$D/gpu-tests" --include-ignored --test-threads=1 --nocapture >"$OUT/gpu-tests.log" 2>&1 || fail=1
grep -E "equal;|^test |test result|panicked|skipped" "$OUT/gpu-tests.log" | tail -30

step "binary: GPU state hash equals CPU state hash"
# A fresh folder each run: `gen` refuses to add segments to a log a previous run left.
G=$(mktemp -d /tmp/gpu-test-files.XXXXXX)
"$D/mmsb" gen -o "$G/g.ckpt" --total-size 256MiB --pages 300 --deltas 50000 --mix full=1,sparse=6,masked=3,create=1,resize=1,delete=1 --compress auto >/dev/null || fail=1
hash() { python3 -c 'import json,sys; print(json.load(sys.stdin)["state_hash"])'; }
cpu=$("$D/mmsb" replay "$G/g.ckpt" "$G/g.log" --device cpu --json | hash)
gpu=$("$D/mmsb" replay "$G/g.ckpt" "$G/g.log" --device cuda:0 --verify --json | tee "$OUT/replay.json" | hash)
"$D/mmsb" replay "$G/g.ckpt" "$G/g.log" --device cuda:0 --verify -o "$G/g-out.ckpt" >/dev/null || fail=1
out=$("$D/mmsb" verify --json "$G/g-out.ckpt" | hash)
echo "cpu $cpu"; echo "gpu $gpu"; echo "out $out"
echo "kernels: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kernels"])' "$OUT/replay.json")"
if [ -n "$cpu" ] && [ "$cpu" = "$gpu" ] && [ "$cpu" = "$out" ]; then echo "binary: equal"; else echo "binary: MISMATCH"; fail=1; fi
# The log was planned while CUDA started; cut by --to-seq it must still equal the CPU replay.
pb=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["apply"]["planned_before"])' "$OUT/replay.json")
echo "planned before the load: $pb"
[ "$pb" = True ] || { echo "the log was not planned while CUDA started"; fail=1; }
cpu_cut=$("$D/mmsb" replay "$G/g.ckpt" "$G/g.log" --device cpu --to-seq 20000 --json | hash)
gpu_cut=$("$D/mmsb" replay "$G/g.ckpt" "$G/g.log" --device cuda:0 --to-seq 20000 --verify --json | hash)
if [ -n "$cpu_cut" ] && [ "$cpu_cut" = "$gpu_cut" ]; then echo "binary --to-seq 20000: equal"; else echo "binary --to-seq: MISMATCH ($cpu_cut vs $gpu_cut)"; fail=1; fi
# --pages: the CPU replays everything and keeps the selection; the GPU loads only it.
cpu_sel=$("$D/mmsb" replay "$G/g.ckpt" "$G/g.log" --device cpu --pages 0-99 --pages 250-299 --json | hash)
gpu_sel=$("$D/mmsb" replay "$G/g.ckpt" "$G/g.log" --device cuda:0 --pages 0-99 --pages 250-299 --verify --json | hash)
if [ -n "$cpu_sel" ] && [ "$cpu_sel" = "$gpu_sel" ]; then echo "binary --pages: equal"; else echo "binary --pages: MISMATCH ($cpu_sel vs $gpu_sel)"; fail=1; fi
# No log and no --verify: no kernel is needed, so none is compiled (kernels: null).
auto=$("$D/mmsb" replay "$G/g.ckpt" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["device"], "kernels", d["kernels"])')
echo "--device auto used: $auto"
case $auto in *"kernels None") ;; *) echo "a load-only replay compiled kernels"; fail=1 ;; esac

step "binary: several devices (two contexts of cuda:0 when there is one GPU)"
n=$(nvidia-smi -L | wc -l)
devs=$([ "$n" -ge 2 ] && echo cuda:0,cuda:1 || echo cuda:0,cuda:0)
for p in shard replicate; do
  h=$("$D/mmsb" replay "$G/g.ckpt" "$G/g.log" --device "$devs" --placement $p --verify --json | tee "$OUT/multi-$p.json" | hash)
  echo "$p on $devs: $h"
  [ "$h" = "$cpu" ] || { echo "multi $p: MISMATCH"; fail=1; }
done

# MMSB_SANITIZERS: which to run (default "memcheck racecheck"; MMSB_SKIP_SANITIZER=1 runs none).
# All of racecheck takes longer than one device call allows: run it over several calls, with
# MMSB_SANITIZERS=racecheck and a different MMSB_RACECHECK_FILTER each time.
sanitizers=${MMSB_SANITIZERS-memcheck racecheck}
[ -n "${MMSB_SKIP_SANITIZER:-}" ] && sanitizers=""
if [[ " $sanitizers " == *" memcheck "* ]]; then
  step "compute-sanitizer --tool memcheck (whole suite)"
  MMSB_GPU_SMALL=1 MMSB_REQUIRE_GPU=1 timeout 400 compute-sanitizer --tool memcheck --error-exitcode 9 "$D/gpu-tests" --include-ignored --test-threads=1 >"$OUT/memcheck.log" 2>&1
  rc=$?
  grep -E "ERROR SUMMARY|test result|not supported|Error" "$OUT/memcheck.log" | tail -5
  echo "memcheck exit status: $rc"
  [ $rc -eq 0 ] || fail=1
fi
if [[ " $sanitizers " == *" racecheck "* ]]; then
  # racecheck is far slower: each test runs alone under its own limit (RACECHECK_TEST_LIMIT
  # seconds, default 240), so that one slow test cannot starve the rest of the time;
  # MMSB_RACECHECK_FILTER keeps only the tests whose names contain it.
  step "compute-sanitizer --tool racecheck (each test alone, ${RACECHECK_TEST_LIMIT:-240} s limit each)"
  for t in $("$D/gpu-tests" --list 2>/dev/null | sed -n 's/: test$//p' | grep -F -- "${MMSB_RACECHECK_FILTER:-}"); do
    MMSB_GPU_SMALL=1 MMSB_REQUIRE_GPU=1 timeout "${RACECHECK_TEST_LIMIT:-240}" compute-sanitizer --tool racecheck --error-exitcode 9 "$D/gpu-tests" --include-ignored --test-threads=1 --exact "$t" >"$OUT/racecheck-$t.log" 2>&1
    rc=$?
    summary=$(grep -E "RACECHECK SUMMARY|not supported" "$OUT/racecheck-$t.log" | tail -1)
    case $rc in
      0) echo "racecheck $t: ok; $summary" ;;
      124) echo "racecheck $t: cut off at the limit (no verdict)"; fail=1 ;;
      *) echo "racecheck $t: FAILED (exit status $rc); $summary"; fail=1 ;;
    esac
  done
fi
rm -rf "$G"
echo "== overall: $([ $fail -eq 0 ] && echo PASS || echo FAIL)"
exit $fail
