#!/usr/bin/env python3
"""mmsb.torch.load against safetensors.torch.load_file (and, on cuda:0 where they are installed,
fastsafetensors and the Run:ai streamer, as scripts/bench_peers.py loads them), onto the same
device, in one Python process (after CUDA start, on a GPU), on the same model-shaped file (make_shaped_model.py, about
87 MiB of F32), warm (the file in the page cache), interleaved rounds, medians. On a GPU it also
prints the Python call's overhead: its wall time minus the time the replay report gives for the
same load. On the CPU each round also reads every loaded tensor once (a sum), so that a load
that maps rather than copies pays for its page faults inside the round.
Usage: bench-python-load.py WORKDIR [ROUNDS] [DEVICE]   (DEVICE cuda:0, the default, or cpu)"""
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

import mmsb
import mmsb.torch
from mmsb import _mmsb

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_peers  # noqa: E402  (the GPU peers' loaders, shared with bench-gpu.sh)

work = pathlib.Path(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 9
device = sys.argv[3] if len(sys.argv) > 3 else "cuda:0"
on_gpu = device != "cpu"
work.mkdir(parents=True, exist_ok=True)
here = pathlib.Path(__file__).resolve().parent
st = work / "model.safetensors"
ck = work / "model.ckpt"
if not st.exists():
    subprocess.run([sys.executable, str(here / "make_shaped_model.py"), str(st)], check=True)
subprocess.run([os.environ.get("MMSB_BIN", "mmsb"), "import", str(st), "--output", str(ck)], check=True,
               capture_output=True)
if on_gpu:
    torch.cuda.init()
    torch.empty(1, device=device)  # CUDA started before any timed call
for path in (st, ck):
    path.read_bytes()  # warm: in the page cache

def read_all(tensors):
    for t in tensors.values():
        t.sum()
    return tensors


def timed(fn):
    if on_gpu:
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn() if on_gpu else read_all(fn())
    if on_gpu:
        torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3, out

# Peers on the same device: safetensors always; on a GPU also fastsafetensors and the Run:ai
# streamer where they are installed (each loads cuda:0, as bench_peers.py does).
peers = {"safetensors load_file": lambda: load_file(str(st), device=device)}
if on_gpu and device in ("cuda", "cuda:0"):
    for name, module, fn in [("fastsafetensors", "fastsafetensors", bench_peers.load_fastsafetensors),
                             ("Run:ai streamer", "runai_model_streamer", bench_peers.load_runai)]:
        try:
            __import__(module)
            fn(str(st))
            peers[name] = lambda fn=fn: fn(str(st))
        except Exception as e:  # a peer that cannot run here is reported, not fatal
            print(f"{name}: not measured ({type(e).__name__}: {e})")
times = {"mmsb.torch.load": [], **{name: [] for name in peers}}
phases = {}  # the native report's own timings, by phase
if on_gpu:
    times["overhead"] = []
for r in range(rounds + 1):
    peer_ms = {}
    for name, load in peers.items():
        peer_ms[name], out = timed(load)
        if name == "safetensors load_file":
            ref = out
        del out
    ms_mm, got = timed(lambda: mmsb.torch.load(ck, device=device))
    if on_gpu:
        # The native call alone, for the report's own total of the same load.
        t = time.perf_counter()
        report, _pages = _mmsb.load_cuda(str(ck), [], torch.device(device).index or 0)
        wall = (time.perf_counter() - t) * 1e3
        timings = json.loads(report)["timings_ms"]
        total = timings["total"]
        del _pages
    if r == 0:
        assert all(torch.equal(got[k], ref[k]) for k in ref), "mmsb and safetensors disagree"
        continue  # the first round warms allocators and kernels
    times["mmsb.torch.load"].append(ms_mm)
    for name, ms in peer_ms.items():
        times[name].append(ms)
    if on_gpu:
        times["overhead"].append(wall - total)
        for k, v in timings.items():
            phases.setdefault(k, []).append(v)
    del got, ref
mib = ck.stat().st_size / 2**20
name = torch.cuda.get_device_name(torch.device(device)) if on_gpu else f"CPU ({os.cpu_count()} cores)"
print(f"{name}, torch {torch.__version__}, {mib:.0f} MiB checkpoint, {rounds} rounds, medians")
for k, v in times.items():
    print(f"{k}: {statistics.median(v):.2f} ms (range {min(v):.2f}-{max(v):.2f})")
if phases:
    print("native report, medians (ms): " + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in phases.items() if max(v) > 0))
best = min(peers, key=lambda name: statistics.median(times[name]))
print(f"speedup: {statistics.median(times[best]) / statistics.median(times['mmsb.torch.load']):.2f}x over the best peer, {best}")
