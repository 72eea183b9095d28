#!/usr/bin/env bash
# CPU benchmarks (verify, replay, import/export) against cksum, sha256sum, cp and the Python
# safetensors package, on the same files in the same run. Prints a Markdown table.
# Usage: scripts/bench-cpu.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
# Python packages go into a virtual environment under target/, not the user's Python.
VENV=target/py-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tests/py/requirements.txt
PATH=$PWD/$VENV/bin:$PATH
exec python3 scripts/bench-cpu.py "${1:-bench-out}"
