#!/usr/bin/env bash
# Staging-pipeline sweep on a CUDA machine (binaries from scripts/build-device.sh in
# .device/): `mmsb bench load` of an 87 MiB model-shaped checkpoint and a 4 GiB one, warm and
# cold, for each read mode and several (threads, slot) choices, so that the defaults in
# src/gpu/loader.rs (Pipeline::for_load) rest on measurements of the machine they run on.
# Prints one line per configuration: median ms and GB/s.
set -u
D=.device
W=${W:-/tmp/bw}
mkdir -p "$W"
echo "machine: $(uname -r) $(nvidia-smi --query-gpu=name --format=csv,noheader)"
[ -f "$W/model.ckpt" ] || { python3 scripts/make_shaped_model.py "$W/shaped.safetensors" && "$D/mmsb" import "$W/shaped.safetensors" -o "$W/model.ckpt" >/dev/null; }
if [ ! -f "$W/big.ckpt" ]; then
  python3 scripts/make_big_safetensors.py "$W/big.safetensors"
  "$D/mmsb" import "$W/big.safetensors" -o "$W/big.ckpt" >/dev/null
fi
run() { # label file runs [args...]
  local label=$1 f=$2 n=$3; shift 3
  "$D/mmsb" bench load "$W/$f" --runs "$n" "$@" | python3 -c "import json,sys; d=json.load(sys.stdin); print('%-34s %9.2f ms %7.2f GB/s  %s' % ('$label', d['median_ms'], d['median_gb_per_s'], d['runs'][0]['load'].get('read_mode')))"
}
cat "$W/model.ckpt" "$W/big.ckpt" >/dev/null
run "model warm default" model.ckpt 9
run "model warm pin-mapping" model.ckpt 9 --read pin-mapping
for c in "2 1MiB" "4 1MiB" "8 1MiB" "4 2MiB" "8 2MiB" "16 1MiB" "8 512KiB"; do
  set -- $c; run "model warm buffered $1x$2" model.ckpt 9 --read buffered --threads "$1" --slot "$2"
done
run "big warm default" big.ckpt 5
for c in "8 1MiB" "8 2MiB" "12 2MiB" "16 1MiB" "16 2MiB" "16 4MiB" "24 2MiB"; do
  set -- $c; run "big warm buffered $1x$2" big.ckpt 5 --read buffered --threads "$1" --slot "$2"
done
run "big warm pin-mapping" big.ckpt 3 --read pin-mapping
run "model cold default" model.ckpt 5 --cold
for c in "8 1MiB" "16 1MiB" "32 1MiB" "16 2MiB" "8 4MiB"; do
  set -- $c; run "model cold direct $1x$2" model.ckpt 5 --cold --read direct --threads "$1" --slot "$2"
done
for c in "8 1MiB" "16 1MiB" "4 4MiB" "16 512KiB" "32 256KiB"; do
  set -- $c; run "model cold buffered $1x$2" model.ckpt 5 --cold --read buffered --threads "$1" --slot "$2"
done
run "big cold default" big.ckpt 2 --cold
for c in "16 8MiB" "32 4MiB" "64 4MiB" "48 8MiB"; do
  set -- $c; run "big cold direct $1x$2" big.ckpt 2 --cold --read direct --threads "$1" --slot "$2"
done
run "big cold buffered 16x2MiB" big.ckpt 2 --cold --read buffered --threads 16 --slot 2MiB
echo "== sweep done"
