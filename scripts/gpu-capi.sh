#!/usr/bin/env bash
# The C ABI on a CUDA machine: builds capi/tests/abi_cuda_test.cu with nvcc against
# .device/capi/libmmsb_c.so (scripts/build-device.sh --python copies it there), makes a
# checkpoint and a sync log with the Python package (.device/wheels), and runs the test: a
# replay into device buffers and a sync apply onto them, each equal to the same calls on the host.
# Usage: bash scripts/gpu-capi.sh
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(mktemp -d)
SITE=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .device/wheels/mmsb-*.whl
PYTHONPATH=$SITE python3 - "$W" <<'PY'
import sys, numpy as np, mmsb.numpy
w = sys.argv[1]
rng = np.random.default_rng(1)
old = {"emb": rng.standard_normal((4096, 256), dtype=np.float32), "b": rng.standard_normal(3).astype(np.float16),
       "codes": rng.integers(0, 255, 1001, dtype=np.uint8)}
mmsb.numpy.save(old, f"{w}/base.ckpt")
for step in range(3):
    new = {k: v.copy() for k, v in old.items()}
    new["emb"][rng.choice(4096, 40, replace=False)] = step
    new["codes"][step] ^= 1
    mmsb.numpy.delta(old, new, f"{w}/sync.log")
    old = new
PY
nvcc -O1 -I capi/include capi/tests/abi_cuda_test.cu -L .device/capi -lmmsb_c -Xlinker -rpath -Xlinker "$PWD/.device/capi" -o "$W/abi_cuda_test"
"$W/abi_cuda_test" "$W/base.ckpt" "$W/sync.log"
