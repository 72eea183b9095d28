#!/usr/bin/env bash
# A/B of two mmsb builds on a CUDA machine, same machine, same files, alternating rounds:
# the build under test (.device/mmsb, from scripts/build-device.sh) against another one
# (BASE=path, default .device/mmsb-base: copy an older build there before the run); the deltas
# part also runs the builds in ALSO="path..." in each round (three or more builds in one call).
#   bash scripts/probes/gpu-ab.sh [startup] [loads] [sweep] [deltas] [whole] [cold] [suite]
#   (default: all; startup goes first because it needs the driver's compile cache empty)
# loads: `bench load` of an 87 MiB model-shaped checkpoint and a 4 GiB one, warm, with the
#   loader's phase timers; sweep: staging configurations of the build under test (warm);
# deltas: `bench deltas` of 1M sparse deltas with phase timers, and the CPU replay of the log;
# whole: whole-process `mmsb replay` against a minimal CUDA program (init_probe of gpu-limits),
#   the three programs interleaved process by process;
# cold: cold loads by read mode and staging; suite: the GPU tests and memcheck;
# startup: `mmsb replay model.ckpt --device cuda:0 --verify` (the verify needs the kernels;
#   STARTUP_ARGS= replaces it) as the machine's very first CUDA process (the driver's compile
#   cache empty), then alternating with CUDA_CACHE_DISABLE=1 and with the cache warm: CUDA start,
#   NVRTC compile, the wait for CUDA (which holds the kernels' load), whole.
set -u
D=.device; W=${W:-/tmp/bw}; BASE=${BASE:-$D/mmsb-base}
mkdir -p "$W"
parts=${*:-startup loads sweep deltas whole cold suite}
has() { [[ " $parts " == *" $1 "* ]]; }
echo "machine: $(uname -r) $(nvidia-smi --query-gpu=name --format=csv,noheader)"
[ -f "$W/model.ckpt" ] || { python3 scripts/make_shaped_model.py "$W/shaped.safetensors" >/dev/null && "$D/mmsb" import "$W/shaped.safetensors" -o "$W/model.ckpt" >/dev/null; }
if [ ! -f "$W/big.ckpt" ]; then
  python3 scripts/make_big_safetensors.py "$W/big.safetensors"
  "$D/mmsb" import "$W/big.safetensors" -o "$W/big.ckpt" >/dev/null && rm -f "$W/big.safetensors"
fi
# One line per `bench load`: median, first run, cache probe and loader phases (medians), mode.
sum() { python3 -c "
import json,sys,statistics as st; d=json.load(sys.stdin); r=d['runs']
ph=[x['load'].get('phases') or {} for x in r]
print('%-30s med %8.2f ms %6.2f GB/s first %8.2f ' % ('$1', d['median_ms'], d['median_gb_per_s'], r[0]['open_to_resident_ms']) + ' '.join('%s %.2f' % (k, st.median(p[k] for p in ph)) for k in sorted(ph[0])) + ' mode %s' % r[-1]['load'].get('read_mode'))"; }
if has startup; then
  cat "$W/model.ckpt" >/dev/null
  st() {
    local t0 t1 j
    t0=$(date +%s%N)
    j=$(env $1 "$2" replay "$W/model.ckpt" --device cuda:0 ${STARTUP_ARGS---verify} --json)
    t1=$(date +%s%N)
    echo "$j" | python3 -c "import json,sys; d=json.load(sys.stdin); t=d['timings_ms']; print('%-40s cuda_start %6.1f nvrtc %6.1f wait_for_cuda %6.1f total %6.1f whole %d ms  kernels %s' % ('$(basename "$2") $1', t['cuda_start'], t['nvrtc_compile'], t['wait_for_cuda'], t['total'], ($t1 - $t0) // 1000000, d['kernels']))"
  }
  [ -d "$HOME/.nv/ComputeCache" ] && echo "note: the driver's compile cache is not empty; the first line is not a first run"
  st FIRST_RUN=1 "$D/mmsb"
  for round in 1 2; do
    for b in "$BASE" "$D/mmsb"; do st CUDA_CACHE_DISABLE=1 "$b"; done
  done
  for round in 1 2; do
    for b in "$BASE" "$D/mmsb"; do st CACHE=warm "$b"; done
  done
fi
if has loads; then
  cat "$W/model.ckpt" "$W/big.ckpt" >/dev/null
  for round in 1 2; do
    for b in "$BASE" "$D/mmsb"; do
      "$b" bench load "$W/model.ckpt" --runs 11 | sum "$(basename "$b") model warm"
      "$b" bench load "$W/big.ckpt" --runs 7 | sum "$(basename "$b") big warm"
    done
  done
fi
if has sweep; then
  cat "$W/model.ckpt" "$W/big.ckpt" >/dev/null
  for c in "buffered 4 1MiB" "buffered 8 1MiB" "buffered 8 2MiB" "pin-mapping 1 16MiB" "pin-mapping 2 8MiB"; do
    set -- $c; "$D/mmsb" bench load "$W/model.ckpt" --runs 11 --read "$1" --threads "$2" --slot "$3" | sum "model $1 $2x$3"
  done
  for c in "8 2MiB" "16 2MiB" "8 4MiB" "12 4MiB" "16 4MiB"; do
    set -- $c; "$D/mmsb" bench load "$W/big.ckpt" --runs 5 --read buffered --threads "$1" --slot "$2" | sum "big buffered $1x$2"
  done
fi
if has deltas; then
  [ -d "$W/d.log" ] || "$D/mmsb" gen -o "$W/d.ckpt" --total-size 1GiB --pages 64 --page-sizes equal --deltas 1000000 --mix full=0,sparse=1,masked=0 --max-ranges 1 --delta-bytes 4..4096 --hot-fraction 1 --segment-size 256MiB >/dev/null
  dsum() { python3 -c "
import json,sys,statistics as st; d=json.load(sys.stdin); r=d['runs']; a=[x['apply'] for x in r]
print('%-22s med %7.1f ms %5.2f GB/s first %7.1f | ' % ('$1', d['median_ms'], d['median_payload_gb_per_s'], r[0]['log_open_to_applied_ms']) + ' '.join('%s %.1f' % (k.replace('_ms',''), st.median(x[k] for x in a)) for k in a[0] if k.endswith('_ms')))"; }
  for round in 1 2; do
    for b in "$BASE" "$D/mmsb" ${ALSO:-}; do "$b" bench deltas "$W/d.ckpt" "$W/d.log" --runs 7 | dsum "$(basename "$b") deltas"; done
  done
  "$D/mmsb" replay "$W/d.ckpt" "$W/d.log" --device cpu --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print("cpu replay", {k: round(v,1) for k,v in d["timings_ms"].items()})'
fi
if has whole; then
  # The minimal program and both builds run interleaved, one process of each in turn, so that
  # the machine's drift touches all three alike; "vs minimal" is the median of each run's
  # difference to the minimal program's run beside it.
  nvcc -O2 "$D/gpu-limits/init_probe.cu" -o /tmp/init_probe 2>/dev/null
  cat "$W/model.ckpt" >/dev/null
  for mode in warm warm warm cold cold; do
    python3 scripts/whole_process.py $mode "$W/model.ckpt" 11 /tmp/init_probe \
      --- "$D/mmsb" replay "$W/model.ckpt" --device cuda:0 \
      --- "$BASE" replay "$W/model.ckpt" --device cuda:0 |
      python3 -c "import json,sys; d=json.load(sys.stdin); c=d['commands']; p=d['paired']
print('$mode: minimal %.1f | $(basename "$D/mmsb") %.1f (vs minimal %+.1f) | $(basename "$BASE") %.1f (vs minimal %+.1f)' % (c[0]['median_ms'], c[1]['median_ms'], p[0]['median_ms'], c[2]['median_ms'], p[1]['median_ms']))"
  done
fi
if has cold; then
  cs() { python3 -c "import json,sys; d=json.load(sys.stdin); r=d['runs']; print('%-30s med %8.2f ms  %5.2f GB/s  %s runs %s' % ('$1', d['median_ms'], d['median_gb_per_s'], r[-1]['load']['read_mode'], ' '.join('%.0f' % x['open_to_resident_ms'] for x in r)))"; }
  for round in 1 2; do
    "$D/mmsb" bench load "$W/model.ckpt" --runs 5 --cold | cs "model cold default"
    for c in "direct 8 2MiB" "direct 16 1MiB" "buffered 8 2MiB" "buffered 16 1MiB"; do
      set -- $c; "$D/mmsb" bench load "$W/model.ckpt" --runs 5 --cold --read "$1" --threads "$2" --slot "$3" | cs "model cold $1 $2x$3"
    done
    "$D/mmsb" bench load "$W/big.ckpt" --runs 2 --cold | cs "big cold default"
    for c in "16 8MiB" "32 8MiB"; do
      set -- $c; "$D/mmsb" bench load "$W/big.ckpt" --runs 2 --cold --read direct --threads "$1" --slot "$2" | cs "big cold direct $1x$2"
    done
  done
fi
if has suite; then
  MMSB_SKIP_SANITIZER=1 bash scripts/gpu-test.sh 2>&1 | grep -vE "^(log-uniform|tiny|sparse|masked|pages up)"
fi
echo "== gpu-ab done"
