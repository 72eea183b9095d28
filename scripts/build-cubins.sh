#!/usr/bin/env bash
# Rebuilds the built-in CUBINs (src/gpu/cubin/) from the kernel source (SOURCE in
# src/gpu/kernels.rs): run it after every change to that source, and commit the result. NVRTC
# 12.9 from PyPI (nvidia-cuda-nvrtc-cu12) compiles them, with the options the crate uses when it
# compiles at run time; no GPU is needed. The unit test
# `built_in_cubins_were_built_from_this_kernel_source` fails until this has been run.
set -euo pipefail
cd "$(dirname "$0")/.."
NVRTC=${NVRTC_DIR:-/tmp/mmsb-nvrtc}
lib="$NVRTC/nvidia/cuda_nvrtc/lib"
if [ ! -e "$lib/libnvrtc.so.12" ]; then
  python3 -m pip install -q --no-deps --target "$NVRTC" nvidia-cuda-nvrtc-cu12==12.9.86
fi
# cudarc opens libnvrtc.so; the wheel names it by its major version only.
[ -e "$lib/libnvrtc.so" ] || ln -s libnvrtc.so.12 "$lib/libnvrtc.so"
# The crate includes every CUBIN: a missing one (a new architecture) starts empty.
for f in $(sed -n 's/.*include_bytes!("cubin\/\(sm_[0-9]*\.cubin\)").*/\1/p' src/gpu/kernels.rs); do
  [ -e "src/gpu/cubin/$f" ] || : >"src/gpu/cubin/$f"
done
[ -e src/gpu/cubin/source.crc32c ] || echo none >src/gpu/cubin/source.crc32c
LD_LIBRARY_PATH="$lib" cargo run --release --locked -q --example build_cubins
