#!/usr/bin/env python3
"""Cold loads of one large file, interleaved round by round, for scripts/bench-gpu.sh. Virtual
disks need not hold one rate through a run (a benchmark that read the 4 GiB file seven times in
a row saw its later reads slow to two thirds of the first), so the ceiling and every
loader are measured one after another in each round, and each is reported by its median.
Usage:
    cold_rounds.py MMSB CHECKPOINT SAFETENSORS [--rounds N]
Each round measures two pairs, in turns: (the disk's O_DIRECT rate on CHECKPOINT, then
`MMSB bench load CHECKPOINT --cold --runs 1`, the in-process time after CUDA start) and (the
O_DIRECT rate on SAFETENSORS, then fastsafetensors (no GDS), the best cold peer of earlier runs,
on SAFETENSORS, in this process after CUDA start). Each file is dropped from the page cache
(posix_fadvise DONTNEED) before each read. Every loader reads its file right after the probe
read the same file, and the pairs swap places every round: a virtual
disk may have a cache of its own behind it (loads have run faster than the disk's O_DIRECT rate
measured just before), so neither loader may be the only one to read a file that was just
read, nor always go first. The O_DIRECT reader is scripts/odirect_rate.c, 16 threads, 8 MiB
reads (compiled here with cc; a reader in Python read slower than the disk allows).
Prints one JSON object."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_peers import drop, load_fastsafetensors  # noqa: E402

CHUNK = 8 << 20
THREADS = 16


def build_odirect_probe():
    """Compiles scripts/odirect_rate.c; returns the program's path."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "odirect_rate.c")
    exe = os.path.join(tempfile.mkdtemp(), "odirect_rate")
    subprocess.run(["cc", "-O2", "-pthread", src, "-o", exe], check=True)
    return exe


def odirect_gb_per_s(probe, path):
    """Reads the whole file with O_DIRECT, THREADS reads of CHUNK bytes in flight; GB/s."""
    out = subprocess.run([probe, path, str(THREADS), str(CHUNK >> 20)], check=True, capture_output=True, text=True)
    return float(out.stdout)


def mmsb_cold_ms(mmsb, path):
    out = subprocess.run([mmsb, "bench", "load", path, "--cold", "--runs", "1"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["median_ms"]


def fastsafetensors_cold_ms(path):
    drop(path)
    t = time.perf_counter()
    x = load_fastsafetensors(path)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t) * 1e3
    del x
    torch.cuda.empty_cache()
    return ms


def main():
    mmsb, ckpt, st = sys.argv[1:4]
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
    torch.zeros(1, device="cuda:0")
    torch.cuda.synchronize()
    # Imports and first-call costs out of the timed rounds: one warm load of a small slice is
    # not possible with fastsafetensors, so one untimed cold load of the whole file.
    fastsafetensors_cold_ms(st)
    probe = build_odirect_probe()
    runs = {"mmsb_ms": [], "mmsb_odirect_gb_per_s": [], "fastsafetensors_ms": [], "fastsafetensors_odirect_gb_per_s": [], "first": []}
    pairs = [("mmsb", ckpt, lambda: mmsb_cold_ms(mmsb, ckpt)), ("fastsafetensors", st, lambda: fastsafetensors_cold_ms(st))]
    for r in range(rounds):
        order = pairs if r % 2 == 0 else pairs[::-1]
        runs["first"].append(order[0][0])
        for name, path, load in order:
            drop(path)
            runs[f"{name}_odirect_gb_per_s"].append(odirect_gb_per_s(probe, path))
            runs[f"{name}_ms"].append(load())
    sizes = {"mmsb": os.path.getsize(ckpt), "fastsafetensors": os.path.getsize(st)}
    med = {k: statistics.median(v) for k, v in runs.items() if k != "first"}
    out = {"file_bytes": sizes, "rounds": rounds, "runs": runs, "median": med}
    for name, size in sizes.items():
        shares = [size / ms / 1e6 / rate for ms, rate in zip(runs[f"{name}_ms"], runs[f"{name}_odirect_gb_per_s"])]
        out[f"{name}_share_of_odirect_by_round"] = shares
        out[f"{name}_share_of_odirect_median"] = statistics.median(shares)
    out["mmsb_faster_in_rounds"] = sum(m < f for m, f in zip(runs["mmsb_ms"], runs["fastsafetensors_ms"]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
