#!/usr/bin/env bash
# Builds what a CUDA machine without a Rust toolchain runs: the release mmsb binary and
# the GPU test binary, copied into .device/ (git-ignored; copy it to the CUDA machine).
# With --probes, also copies ../shared/gpu-limits there and builds its Rust probes; with --python,
# also builds the Python package's wheel (abi3, release) into .device/wheels and the C ABI's
# library into .device/capi.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device
cargo build --release --locked -q
cp target/release/mmsb .device/mmsb
exe=$(cargo test --release --locked --no-run --test gpu --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable") and m.get("target", {}).get("name") == "gpu": print(m["executable"])')
cp "$exe" .device/gpu-tests
if [ "${1:-}" = "--python" ]; then
  VENV=target/py-venv
  [ -x "$VENV/bin/maturin" ] || { python3 -m venv "$VENV"; "$VENV/bin/python" -m pip install -q -r python/tests/requirements.txt; }
  rm -rf .device/wheels
  "$VENV/bin/maturin" build -q --release --locked --compatibility linux -m python/Cargo.toml -o .device/wheels
  # pytest as wheels, for a CUDA machine without it (pure Python).
  rm -rf .device/pywheels
  grep -v -E '^(maturin|numpy|safetensors)' python/tests/requirements.txt | "$VENV/bin/python" -m pip download -q -d .device/pywheels -r /dev/stdin
  # The C ABI's shared library, for scripts/gpu-capi.sh.
  cargo build --release --locked -q -p mmsb-capi
  mkdir -p .device/capi && cp target/release/libmmsb_c.so .device/capi/ && strip .device/capi/libmmsb_c.so
fi
if [ "${1:-}" = "--probes" ]; then
  rm -rf .device/gpu-limits && cp -r ../shared/gpu-limits .device/gpu-limits && chmod -R u+w .device/gpu-limits
  (cd .device/gpu-limits/rust && cargo build --release -q && mkdir -p ../bin && cp target/release/{start,alloc,paths,preg} ../bin/ && rm -rf target)
fi
strip .device/mmsb .device/gpu-tests
ls -la .device
