#!/usr/bin/env bash
# The test suite under AddressSanitizer (nightly, -Zsanitizer=address) and the library's unit
# tests, which exercise the unsafe code (mmap, the atomic writer, the log reader), under valgrind.
# Full logs in $OUT (default /tmp/sanitize); exit status non-zero on any finding or failure.
# Usage: scripts/sanitize.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sanitize}
mkdir -p "$OUT"
target=x86_64-unknown-linux-gnu
fail=0
echo "== AddressSanitizer: library, golden/flip, property and crash tests"
RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" ASAN_OPTIONS=detect_leaks=1 \
  cargo +nightly test --target "$target" --lib --test golden --test replay_model --test crash -- --skip gpu_ >"$OUT/asan.log" 2>&1 || fail=1
grep -E "test result|ERROR: AddressSanitizer|SUMMARY: AddressSanitizer" "$OUT/asan.log"
echo "== valgrind: the library's unit tests"
exe=$(cargo test --lib --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable") and m.get("target", {}).get("kind") == ["lib"]: print(m["executable"])')
valgrind --error-exitcode=9 --leak-check=no "$exe" --test-threads=1 -- format replay >"$OUT/valgrind.log" 2>&1 || fail=1
grep -E "test result|ERROR SUMMARY" "$OUT/valgrind.log"
echo "== overall: $([ $fail -eq 0 ] && echo PASS || echo FAIL)"
exit $fail
