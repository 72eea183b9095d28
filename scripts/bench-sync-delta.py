"""The CPU side of one weight-sync step (`mmsb.torch.delta` after the device compare): windows of
changed BF16-like rows with the shapes of examples/rl_weight_sync.py (1% of each matrix's rows,
new random bytes whose high byte often stays) through the native `sync_delta`, printing the
Rust phases of each step. Runs without a GPU.

    python3 scripts/bench-sync-delta.py [--not-durable]   # with the package built (maturin develop --release)

--not-durable writes the steps as `delta(..., durable=False)` does (no sync). The log goes to
TMPDIR (tmpfs such as /dev/shm makes syncs free).
"""
import json, os, sys, tempfile, time
import numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from mmsb import _mmsb
d = tempfile.mkdtemp(); log = d + "/s.log"
rng = np.random.default_rng(0)
shapes = [(151936, 896)] + [(896, 896), (128, 896), (128, 896), (896, 896), (4864, 896), (4864, 896), (896, 4864)] * 24
names = [f"t{i}" for i in range(len(shapes))]
_mmsb.sync_create(log, [(n, "BF16", list(s), s[0] * s[1] * 2, 0) for n, s in zip(names, shapes)])
W = 4096
durable = "--not-durable" not in sys.argv[1:]
for step in range(4):
    tensors, keep = [], []
    for n, (r, c) in zip(names, shapes):
        rowb = c * 2
        rows = np.sort(rng.choice(r, max(1, r // 100), replace=False))
        wins = sorted({w for row in rows for w in range(row * rowb // W, ((row + 1) * rowb - 1) // W + 1)})
        offs = [w * W for w in wins]; lens = [min(W, r * rowb - o) for o in offs]
        old = rng.integers(0, 255, sum(lens), dtype=np.uint8); new = old.copy()
        at = 0
        for o, l in zip(offs, lens):
            for row in rows:
                s, e = max(o, row * rowb), min(o + l, (row + 1) * rowb)
                if s < e:
                    seg = new[at + s - o: at + e - o]
                    fresh = rng.integers(0, 255, e - s, dtype=np.uint8)
                    fresh[1::2] = np.where(rng.random((e - s + 1) // 2) < 0.3, seg[1::2], fresh[1::2])  # high bytes often unchanged
                    new[at + s - o: at + e - o] = fresh
            at += l
        keep.append((old, new))
        tensors.append((n, offs, lens, (old.ctypes.data, old.nbytes), (new.ctypes.data, new.nbytes)))
    t = time.perf_counter()
    r = json.loads(_mmsb.sync_delta(log, tensors, False, durable))
    print(f"step {step}: {1e3*(time.perf_counter()-t):.1f} ms", {k: round(v, 1) for k, v in r["timings_ms"].items()}, r["records"], r["bytes_changed"] >> 10, "KiB", r["payload_bytes"] >> 10, "KiB")
