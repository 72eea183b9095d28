#!/usr/bin/env bash
# Checks the build with the oldest toolchain Cargo.toml's rust-version states (the MSRV).
# When the toolchain in use is that version, the build CI just made is the check; otherwise the
# workspace is checked with `cargo +VERSION` where rustup has that toolchain, and the script says
# plainly when it has not. Usage: scripts/check-msrv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
msrv=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json,sys; print(next(p["rust_version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "mmsb"))')
current=$(rustc --version | awk '{print $2}')
if [ "${current%.*}" = "$msrv" ] || [ "$current" = "$msrv" ]; then
  echo "MSRV $msrv: checked by this build (rustc $current)"
elif rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  cargo +"$msrv" check --locked --workspace --all-targets
  echo "MSRV $msrv: checked with cargo +$msrv"
elif rustup run "$msrv.0" rustc --version >/dev/null 2>&1; then
  cargo +"$msrv.0" check --locked --workspace --all-targets
  echo "MSRV $msrv: checked with cargo +$msrv.0"
else
  echo "MSRV $msrv: NOT checked: rustc here is $current and rustup has no $msrv toolchain (rustup toolchain install $msrv)"
fi
