#!/usr/bin/env python3
"""mmsb.torch.load onto cuda:0 against safetensors.torch.load_file(device="cuda:0"), in one
Python process after CUDA start, on the same model-shaped file (make_shaped_model.py, about
87 MiB of F32), warm (the file in the page cache), interleaved rounds, medians. Also prints the
Python call's overhead: its wall time minus the time the replay report gives for the same load.
Usage: bench-python-load.py WORKDIR [ROUNDS]"""
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

work = pathlib.Path(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 9
work.mkdir(parents=True, exist_ok=True)
here = pathlib.Path(__file__).resolve().parent
st = work / "model.safetensors"
ck = work / "model.ckpt"
if not st.exists():
    subprocess.run([sys.executable, str(here / "make_shaped_model.py"), str(st)], check=True)
subprocess.run([os.environ.get("MMSB_BIN", "mmsb"), "import", str(st), "--output", str(ck)], check=True,
               capture_output=True)
torch.cuda.init()
torch.empty(1, device="cuda:0")  # CUDA started before any timed call
for path in (st, ck):
    path.read_bytes()  # warm: in the page cache

def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3, out

times = {"mmsb.torch.load": [], "safetensors load_file": [], "overhead": []}
for r in range(rounds + 1):
    ms_st, ref = timed(lambda: load_file(str(st), device="cuda:0"))
    ms_mm, got = timed(lambda: mmsb.torch.load(ck, device="cuda:0"))
    # The native call alone, for the report's own total of the same load.
    t = time.perf_counter()
    report, _pages = _mmsb.load_cuda(str(ck), [], 0)
    wall = (time.perf_counter() - t) * 1e3
    total = json.loads(report)["timings_ms"]["total"]
    if r == 0:
        assert all(torch.equal(got[k], ref[k]) for k in ref), "mmsb and safetensors disagree"
        continue  # the first round warms allocators and kernels
    times["mmsb.torch.load"].append(ms_mm)
    times["safetensors load_file"].append(ms_st)
    times["overhead"].append(wall - total)
    del got, ref, _pages
mib = ck.stat().st_size / 2**20
print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {mib:.0f} MiB checkpoint, {rounds} rounds, medians")
for k, v in times.items():
    print(f"{k}: {statistics.median(v):.2f} ms (range {min(v):.2f}-{max(v):.2f})")
print(f"speedup: {statistics.median(times['safetensors load_file']) / statistics.median(times['mmsb.torch.load']):.2f}x")
