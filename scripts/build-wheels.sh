#!/usr/bin/env bash
# The Python package's release wheels: abi3 (one wheel per platform for every Python from 3.9),
# manylinux2014 (glibc 2.17 and later), for Linux x86-64 and aarch64, built by maturin with zig
# as the cross linker, into target/wheels. Installs maturin and ziglang into target/py-venv
# where missing, and the aarch64 Rust target with rustup where it is missing.
# Usage: scripts/build-wheels.sh [TARGET...]   (default: x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/py-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.9,<2" ziglang
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
installed=$(rustup target list --installed)
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
  # maturin finds zig as the ziglang package's `python -m ziglang`, from the venv on PATH.
  PATH=$PWD/$VENV/bin:$PATH maturin build -q --release --locked --zig --target "$t" \
    --compatibility manylinux2014 -m python/Cargo.toml -o target/wheels
done
ls -l target/wheels
