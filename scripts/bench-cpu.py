#!/usr/bin/env python3
"""CPU benchmark of mmsb against peers on the same files, in the same run (issue: format core).

Usage: scripts/bench-cpu.sh [WORKDIR]   (builds mmsb --release, then runs this)

Measures, warm page cache, median of RUNS runs each:
  verify of a 1 GiB generated checkpoint, against cksum and sha256sum on the same file;
  verify of checkpoint + log; CPU replay of checkpoint + log;
  import and export of a 1 GiB safetensors file, against the Python safetensors package
  (load_file + save_file) and cp.
Prints a Markdown table for BENCHMARKS.md.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

RUNS = int(os.environ.get("RUNS", "5"))
MMSB = os.environ.get("MMSB", "target/release/mmsb")


def timed(cmd, **kw):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def median_time(cmd, runs=RUNS, **kw):
    timed(cmd, **kw)  # warm-up: page cache, binary
    return statistics.median(timed(cmd, **kw) for _ in range(runs))


def main():
    work = sys.argv[1] if len(sys.argv) > 1 else "bench-out"
    os.makedirs(work, exist_ok=True)
    mmsb = os.path.abspath(MMSB)
    ck, log = os.path.join(work, "big.ckpt"), os.path.join(work, "big.log")
    if not os.path.exists(ck):
        subprocess.run([mmsb, "gen", "-o", ck, "--log", log, "--total-size", "1GiB", "--pages", "256",
                        "--deltas", "100000", "--mix", "full=1,sparse=8,masked=2", "--full-max", "64KiB",
                        "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
    ck_bytes = os.path.getsize(ck)
    log_bytes = sum(os.path.getsize(os.path.join(log, f)) for f in os.listdir(log))
    rows = []

    def row(what, seconds, nbytes, cmd):
        rows.append((what, seconds, nbytes / seconds / 1e9, cmd))

    row("mmsb verify (checkpoint)", median_time([mmsb, "verify", ck]), ck_bytes, f"mmsb verify big.ckpt")
    row("cksum (peer)", median_time(["cksum", ck]), ck_bytes, "cksum big.ckpt")
    row("sha256sum (peer)", median_time(["sha256sum", ck], runs=3), ck_bytes, "sha256sum big.ckpt")
    row("mmsb verify (checkpoint + log)", median_time([mmsb, "verify", ck, log]), ck_bytes + log_bytes, "mmsb verify big.ckpt big.log")
    replays = []
    for _ in range(RUNS):
        out = subprocess.run([mmsb, "replay", ck, log, "--json"], check=True, capture_output=True).stdout
        replays.append(json.loads(out))
    r = sorted(replays, key=lambda x: x["timings_ms"]["total"])[len(replays) // 2]
    row("mmsb replay --device cpu (checkpoint + log, in-process total)", r["timings_ms"]["total"] / 1e3, ck_bytes + log_bytes,
        "mmsb replay big.ckpt big.log --json")
    apply_s = r["timings_ms"]["apply"] / 1e3
    rows.append(("  of which delta apply (%d records, %d payload bytes)" % (r["records"], r["bytes_written"]), apply_s,
                 r["bytes_written"] / apply_s / 1e9, "timings_ms.apply"))

    st = os.path.join(work, "big.safetensors")
    if not os.path.exists(st):
        subprocess.run([sys.executable, "-c", f"""
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(0)
save_file({{f"layer.{{i}}.weight": rng.integers(0, 2**31, size=(1024, 1024), dtype=np.int32).view(np.float32) for i in range(256)}}, {st!r})
"""], check=True)
    st_bytes = os.path.getsize(st)
    imp = os.path.join(work, "imp.ckpt")
    exp = os.path.join(work, "exp.safetensors")
    row("mmsb import (1 GiB safetensors -> checkpoint)", median_time([mmsb, "import", st, "-o", imp]), st_bytes, "mmsb import big.safetensors -o imp.ckpt")
    row("mmsb export (checkpoint -> safetensors)", median_time([mmsb, "export", imp, "-o", exp]), st_bytes, "mmsb export imp.ckpt -o exp.safetensors")
    peer = os.path.join(work, "peer.safetensors")
    row("python safetensors load_file + save_file (peer)", median_time([sys.executable, "-c",
        f"from safetensors.numpy import load_file, save_file; save_file(load_file({st!r}), {peer!r})"], runs=3), st_bytes,
        "python: save_file(load_file(big.safetensors))")
    row("cp (peer: copying the bytes)", median_time(["cp", st, os.path.join(work, "copy.safetensors")]), st_bytes, "cp big.safetensors copy.safetensors")

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"Machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}; {time.strftime('%Y-%m-%d')}; "
          f"median of {RUNS} runs (sha256sum and the Python peer: 3), warm page cache.")
    print(f"Files: big.ckpt {ck_bytes} bytes; big.log {log_bytes} bytes; big.safetensors {st_bytes} bytes.\n")
    print("| what | median time | throughput | command |")
    print("|---|---|---|---|")
    for what, s, gbs, cmd in rows:
        print(f"| {what} | {s * 1e3:.1f} ms | {gbs:.2f} GB/s | `{cmd}` |")


if __name__ == "__main__":
    main()
