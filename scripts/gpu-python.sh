#!/usr/bin/env bash
# The Python package on a CUDA machine: installs the wheel scripts/build-device.sh --python put
# in .device/wheels, runs python/tests (test_gpu.py among them) against .device/mmsb, then
# scripts/bench-python-load.py and examples/rl_weight_sync.py. Output under $OUT when set. Usage: bash scripts/gpu-python.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
# Beside the packages already installed (torch, numpy, safetensors), as scripts/bench-gpu.sh does;
# pytest and its dependencies come as wheels from .device/pywheels where pytest is missing.
SITE=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .device/wheels/mmsb-*.whl
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target "$SITE" .device/pywheels/*.whl
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
python3 -c 'import torch, mmsb; print("mmsb", mmsb.__version__, "torch", torch.__version__, torch.cuda.get_device_name(0))'
(cd "$SITE" && MMSB_BIN=$OLDPWD/.device/mmsb python3 -m pytest -q -rs -p no:cacheprovider "$OLDPWD/python/tests") 2>&1 | tee "$OUT/python-tests.txt"
MMSB_BIN=.device/mmsb python3 scripts/bench-python-load.py "$OUT/py-bench" | tee "$OUT/python-bench.txt"
# The RL weight-sync loop (delta on the trainer's side, apply on the inference side), with its
# peers measured in the same run.
python3 examples/rl_weight_sync.py --dir "$(mktemp -d)" --json "$OUT/rl-sync.json" | tee "$OUT/rl-sync.txt"
