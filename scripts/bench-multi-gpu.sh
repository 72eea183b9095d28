#!/usr/bin/env bash
# Several GPUs, on a machine with two CUDA devices, from binaries built by
# scripts/build-device.sh (carry .device):
#   1. correctness: tests/gpu.rs's several-device test on the two physical devices, and the
#      binary's shard and replicate state hashes against the CPU replay's;
#   2. ceilings: pinned host-to-device copies to each device and to both at once, and the peer
#      copy rate (scripts/h2d_ceiling.cu, built here with nvcc);
#   3. restore times, side by side (scripts/bench-multi-gpu.py): one device, shard, replicate and
#      two independent single-device replays, on an 87 MiB model-shaped checkpoint (MODEL=path
#      to a .safetensors for the real one) and a 4 GiB generated checkpoint.
# Output on stdout; RUNS (default 5) runs of each.
set -u
D=${MMSB_DEVICE_DIR:-.device}
W=${W:-/tmp/bmulti}
RUNS=${RUNS:-5}
mkdir -p "$W"
echo "== machine: $(uname -r)"
nvidia-smi -L
nvidia-smi topo -m 2>&1 | head -4
[ "$(nvidia-smi -L | wc -l)" -ge 2 ] || { echo "needs two GPUs"; exit 2; }

echo "== tests on two devices"
MMSB_REQUIRE_GPU=1 "$D/gpu-tests" --include-ignored --test-threads=1 --nocapture gpu_sharded 2>&1 | grep -E "equal|test result|panicked|skipped"

echo "== binary: shard and replicate hashes against the CPU replay"
"$D/mmsb" gen -o "$W/g.ckpt" --total-size 256MiB --pages 300 --deltas 50000 --mix full=1,sparse=6,masked=3,create=1,resize=1,delete=1,fill=1 --compress auto >/dev/null
hash() { python3 -c 'import json,sys; print(json.load(sys.stdin)["state_hash"])'; }
cpu=$("$D/mmsb" replay "$W/g.ckpt" "$W/g.log" --device cpu --json | hash)
echo "cpu $cpu"
for p in shard replicate; do
  h=$("$D/mmsb" replay "$W/g.ckpt" "$W/g.log" --device cuda:0,cuda:1 --placement $p --verify --json | hash)
  echo "$p $h $([ "$h" = "$cpu" ] && echo equal || echo MISMATCH)"
done

echo "== ceilings"
nvcc -O2 scripts/h2d_ceiling.cu -o "$W/h2d_ceiling" && "$W/h2d_ceiling"

echo "== restore times (open to resident, ms)"
MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
  MODEL="$W/model.safetensors"
  python3 scripts/make_shaped_model.py "$MODEL"
fi
"$D/mmsb" import "$MODEL" -o "$W/model.ckpt" >/dev/null
"$D/mmsb" gen -o "$W/big.ckpt" --total-size 4GiB --pages 256 --page-sizes equal --deltas 0 >/dev/null
python3 scripts/bench-multi-gpu.py "$D/mmsb" "$RUNS" "$W/model.ckpt" "$W/big.ckpt"
echo "== done"
