#!/usr/bin/env python3
"""Restore times on two GPUs, side by side in one run (called by scripts/bench-multi-gpu.sh).

For each checkpoint given, RUNS times each, warm page cache: `mmsb replay --device cuda:0` (one
device), `--device cuda:0,cuda:1 --placement shard`, `--placement replicate`, and two independent
single-device replays started at once (cuda:0 and cuda:1). The figure is the in-process
`open_to_resident` (from opening the files to every device holding its pages; CUDA start runs
beside the open and is not counted), and for the independent pair the later of the two. Prints
one JSON line per checkpoint with the medians and every run.

Usage: bench-multi-gpu.py MMSB RUNS CKPT...
"""
import json
import statistics
import subprocess
import sys


def replay(mmsb, ckpt, devices, placement=None):
    cmd = [mmsb, "replay", ckpt, "--device", devices, "--json"]
    if placement:
        cmd += ["--placement", placement]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE)


def resident_ms(proc):
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"mmsb failed with {proc.returncode}")
    return json.loads(out)["timings_ms"]["open_to_resident"]


def main():
    mmsb, runs, ckpts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    for ckpt in ckpts:
        subprocess.run(["cat", ckpt], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        times = {"one_device": [], "shard": [], "replicate": [], "two_independent": []}
        for _ in range(runs):
            times["one_device"].append(resident_ms(replay(mmsb, ckpt, "cuda:0")))
            times["shard"].append(resident_ms(replay(mmsb, ckpt, "cuda:0,cuda:1", "shard")))
            times["replicate"].append(resident_ms(replay(mmsb, ckpt, "cuda:0,cuda:1", "replicate")))
            pair = [replay(mmsb, ckpt, "cuda:0"), replay(mmsb, ckpt, "cuda:1")]
            times["two_independent"].append(max(resident_ms(p) for p in pair))
        medians = {k: round(statistics.median(v), 2) for k, v in times.items()}
        ratio = medians["two_independent"] / medians["replicate"] if medians["replicate"] else None
        print(json.dumps({
            "checkpoint": ckpt,
            "median_open_to_resident_ms": medians,
            "replicate_speedup_over_two_independent": round(ratio, 2) if ratio else None,
            "runs_ms": {k: [round(x, 2) for x in v] for k, v in times.items()},
        }))


if __name__ == "__main__":
    main()
