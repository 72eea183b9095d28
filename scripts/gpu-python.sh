#!/usr/bin/env bash
# The Python package on the GPU machine: installs the wheel scripts/build-device.sh --python put
# in .device/wheels (into a virtual environment that sees the machine's torch, numpy and
# safetensors), runs python/tests (test_gpu.py among them) against .device/mmsb, then
# scripts/bench-python-load.py. Output under $OUT when set. Usage: bash scripts/gpu-python.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
VENV=$(mktemp -d)/venv
python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install -q --no-deps --no-index .device/wheels/mmsb-*.whl
"$VENV/bin/python" -c 'import torch, mmsb; print("mmsb", mmsb.__version__, "torch", torch.__version__, torch.cuda.get_device_name(0))'
(cd "$(dirname "$VENV")" && MMSB_BIN=$OLDPWD/.device/mmsb "$VENV/bin/python" -m pytest -q -rs "$OLDPWD/python/tests") 2>&1 | tee "$OUT/python-tests.txt"
MMSB_BIN=.device/mmsb "$VENV/bin/python" scripts/bench-python-load.py "$OUT/py-bench" | tee "$OUT/python-bench.txt"
