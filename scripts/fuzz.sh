#!/usr/bin/env bash
# Runs each cargo-fuzz target for SECONDS (default 60) with corpora seeded from testdata/.
# Needs the nightly toolchain; installs cargo-fuzz if missing. A crash stops the script with its
# input under fuzz/artifacts/TARGET/: turn it into a regression test in testdata/ (TESTING.md).
# FUZZ_SANITIZER (default address) is cargo-fuzz's --sanitizer: CI's smoke run uses none, to keep
# CI short (no AddressSanitizer build of the library); longer runs keep AddressSanitizer.
# FUZZ_DEV=1 builds the targets unoptimised (cargo-fuzz's --dev): a minute less to build, about
# a sixth of the runs a second; CI's smoke run uses it.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=${*:-checkpoint log_segment log_pieces delta safetensors_import}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in $targets; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus"
  case $t in
    checkpoint) cp testdata/*.ckpt "$corpus"/ ;;
    log_segment) for f in testdata/*.log/*.mmsblog; do cp "$f" "$corpus/$(echo "$f" | tr / _)"; done ;;
    # Two bytes of piece size, one of the order pieces are added in, then a segment.
    log_pieces) for f in testdata/*.log/*.mmsblog; do for n in 0 31 200 4095; do for o in 00 83; do
        { printf "\\x$(printf %02x $((n % 256)))\\x$(printf %02x $((n / 256)))\\x$o"; cat "$f"; } >"$corpus/$n-$o-$(echo "$f" | tr / _)"
      done; done; done ;;
    delta) python3 - "$corpus" <<'PY'
import pathlib, struct, sys
# One seed per record type: type byte, then the 25-byte prefix (page 1, epoch 1, ts, empty source).
prefix = struct.pack("<QQQB", 1, 1, 0, 0)
bodies = {2: b"", 3: struct.pack("<Q", 32), 4: bytes(64), 5: struct.pack("<IQQ", 1, 3, 4) + b"abcd",
          6: struct.pack("<QQ", 0, 9) + bytes([0b101, 1]) + b"xyz", 7: struct.pack("<QQB", 2, 8, 0xAB)}
for k, b in bodies.items():
    (pathlib.Path(sys.argv[1]) / f"type{k}").write_bytes(bytes([k]) + prefix + b)
PY
    ;;
    # A safetensors file written by hand (8-byte header length, JSON header, data), so the
    # seed needs no Python package.
    safetensors_import) python3 - "$corpus" <<'PY'
import json, struct, sys
data = struct.pack("<6f", *range(6)) + bytes(3)
header = json.dumps({"__metadata__": {"k": "v"},
                     "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                     "b": {"dtype": "I8", "shape": [3], "data_offsets": [24, 27]}}).encode()
header += b" " * (-len(header) % 8)
open(sys.argv[1] + "/seed.safetensors", "wb").write(struct.pack("<Q", len(header)) + header + data)
PY
    ;;
  esac
  echo "== fuzz $t for ${secs}s"
  cargo +nightly fuzz run ${FUZZ_DEV:+--dev} --sanitizer "${FUZZ_SANITIZER:-address}" "$t" "$corpus" -- -max_total_time="$secs" -rss_limit_mb=4096 2>&1 | grep -E "^#[0-9]+ *DONE|Done [0-9]+ runs|ERROR|panicked|SUMMARY" || true
  if ls fuzz/artifacts/"$t"/crash-* >/dev/null 2>&1; then echo "CRASH in $t: see fuzz/artifacts/$t"; exit 1; fi
done
