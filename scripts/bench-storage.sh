#!/usr/bin/env bash
# Issue "compact and diff": diff speed against cmp on two 1 GiB checkpoints, and the storage
# benchmark (a real model's 10-step sparse and dense update series: bytes on disk and restore
# time for full safetensors copies, diff --emit-log logs, compact --log-only, zstd or not).
# Prints Markdown for BENCHMARKS.md. Usage: scripts/bench-storage.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
# Python packages go into a virtual environment under target/, not the user's Python.
VENV=target/py-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tests/py/requirements.txt zstandard==0.25.0
PATH=$PWD/$VENV/bin:$PATH
exec python3 scripts/bench-storage.py "${1:-bench-out}"
