#!/usr/bin/env bash
# GPU benchmark on a CUDA machine (binaries from scripts/build-device.sh in .device/; peers'
# wheels in .whl/; the gpu-limits probes in .device/gpu-limits). Side by side, same files, same run:
#   mmsb bench load (in-process, after CUDA start) warm and cold; whole-process `mmsb replay`;
#   safetensors, fastsafetensors, Run:ai streamer (scripts/bench_peers.py); the cold 4 GiB case
#   again round by round, O_DIRECT rate, mmsb and fastsafetensors in turn (scripts/cold_rounds.py);
#   ceilings: pinned H2D copy, O_DIRECT with 16 reads in flight, a minimal CUDA process;
#   deltas: 1M sparse deltas (4 B - 4 KiB) on the GPU vs the CPU replay of the same log.
# Cases: a real ~87 MiB model (MODEL=path to a .safetensors; a model-shaped file otherwise) and
# a 4 GiB checkpoint. Results: JSON lines in $OUT/bench.jsonl, a summary at the end.
set -u
D=.device
OUT=${OUT:-/tmp/bench-gpu}
W=${W:-/tmp/bw}
RUNS=${RUNS:-7}
mkdir -p "$OUT" "$W"
J="$OUT/bench.jsonl"
: >"$J"
note() { echo "$*" | tee -a "$OUT/log.txt"; }
emit() { echo "{\"case\": \"$1\", \"data\": $2}" >>"$J"; echo "$1: $2" | cut -c1-400; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
note "machine: $(uname -r) $(nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv,noheader)"

# --- the files
MODEL=${MODEL:-}
if [ -z "$MODEL" ] || [ ! -f "$MODEL" ]; then
  note "no real model given: writing an all-MiniLM-L6-v2-shaped file"
  MODEL="$W/model.safetensors"
  python3 scripts/make_shaped_model.py "$MODEL"
fi
"$D/mmsb" import "$MODEL" -o "$W/model.ckpt" >/dev/null
python3 scripts/make_big_safetensors.py "$W/big.safetensors"
"$D/mmsb" import "$W/big.safetensors" -o "$W/big.ckpt" >/dev/null
ls -la "$MODEL" "$W"/*.ckpt "$W/big.safetensors" | tee -a "$OUT/log.txt"

# --- ceilings (probes of ../shared/gpu-limits)
if [ -d "$D/gpu-limits" ]; then
  (cd "$W" && timeout 300 bash "$OLDPWD/$D/gpu-limits/run.sh" >"$OUT/limits.txt" 2>&1)
  grep -E "minimal_cuda_process_ms|h2d_pinned|odirect_T16|H100|H200" "$OUT/limits.txt" | cut -c1-300
fi

# --- in-process loads, warm and cold
for c in model big; do
  # first_ms: the process's first load, which also pins the staging memory later loads reuse.
  # The probes above dropped the page cache: read the file once so that "warm" is warm.
  cat "$W/$c.ckpt" >/dev/null
  emit "mmsb_load_${c}_warm" "$("$D/mmsb" bench load "$W/$c.ckpt" --runs "$RUNS" | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d.pop("runs"); d["first_ms"]=r[0]["open_to_resident_ms"]; d["read_mode"]=r[-1]["load"]["read_mode"]; print(json.dumps(d))')"
  emit "mmsb_load_${c}_cold" "$("$D/mmsb" bench load "$W/$c.ckpt" --runs 5 --cold | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d.pop("runs"); d["first_ms"]=r[0]["open_to_resident_ms"]; d["read_mode"]=r[-1]["load"]["read_mode"]; print(json.dumps(d))')"
done
for c in model big; do
  f=$([ $c = model ] && echo "$MODEL" || echo "$W/big.safetensors")
  emit "peers_${c}_warm" "$(timeout 600 python3 scripts/bench_peers.py "$f" --runs 5 2>>"$OUT/peers.err")"
  emit "peers_${c}_cold" "$(timeout 600 python3 scripts/bench_peers.py "$f" --runs 3 --cold 2>>"$OUT/peers.err")"
done
# The cold 4 GiB case again, round by round (the disk's rate drifts within a run): mmsb and
# fastsafetensors, each right after the disk's O_DIRECT rate on its own file, taking turns to go
# first (COLD_ROUNDS, default 6).
emit "cold_big_interleaved" "$(timeout 420 python3 scripts/cold_rounds.py "$D/mmsb" "$W/big.ckpt" "$W/big.safetensors" --rounds "${COLD_ROUNDS:-6}" 2>>"$OUT/peers.err")"

# --- whole process: mmsb replay vs a minimal CUDA program (init_probe from gpu-limits)
nvcc -O2 "$D/gpu-limits/init_probe.cu" -o /tmp/init_probe 2>/dev/null
# The two run interleaved, a process of each in turn; the difference is the median of each
# mmsb run's time minus the minimal program's run beside it. WHOLE_PAIRS pairs (default 21): the
# driver's start varies by more than the target's 15 ms margin from process to process.
for mode in warm cold; do
  python3 scripts/whole_process.py $mode "$W/model.ckpt" "${WHOLE_PAIRS:-21}" /tmp/init_probe --- "$D/mmsb" replay "$W/model.ckpt" --device cuda:0 >"$OUT/whole-$mode.json"
  emit "minimal_cuda_process_$mode" "$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["commands"][0]))' "$OUT/whole-$mode.json")"
  emit "mmsb_replay_process_model_$mode" "$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["commands"][1]))' "$OUT/whole-$mode.json")"
  emit "mmsb_replay_minus_minimal_$mode" "$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["paired"][0]))' "$OUT/whole-$mode.json")"
done
"$D/mmsb" replay "$W/model.ckpt" --device cuda:0 --json >"$OUT/replay-model.json"

# --- deltas: 1M sparse deltas, 4 B - 4 KiB, against a resident checkpoint
"$D/mmsb" gen -o "$W/d.ckpt" --total-size 1GiB --pages 64 --page-sizes equal --deltas 1000000 --mix full=0,sparse=1,masked=0 --max-ranges 1 --delta-bytes 4..4096 --hot-fraction 1 --segment-size 256MiB >/dev/null
emit "mmsb_deltas_gpu" "$("$D/mmsb" bench deltas "$W/d.ckpt" "$W/d.log" --runs "$RUNS" | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d.pop("runs"); d["apply"]=sorted(r, key=lambda x: x["log_open_to_applied_ms"])[len(r)//2]["apply"]; d["records"]=r[0]["records"]; d["payload_bytes"]=r[0]["payload_bytes"]; print(json.dumps(d))')"
for i in 1 2 3; do "$D/mmsb" replay "$W/d.ckpt" "$W/d.log" --device cpu --json; done | python3 -c '
import json, sys, statistics
docs = [json.loads(x) for x in sys.stdin.read().replace("}\n{", "}\n\x00{").split("\x00")]
print(json.dumps({"apply_ms_median": statistics.median(d["timings_ms"]["apply"] for d in docs), "open_ms_median": statistics.median(d["timings_ms"]["open"] for d in docs), "records": docs[0]["records"], "bytes_written": docs[0]["bytes_written"]}))' >"$OUT/cpu-deltas.json"
emit "cpu_deltas" "$(cat "$OUT/cpu-deltas.json")"
echo "== done"
