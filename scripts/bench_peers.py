#!/usr/bin/env python3
"""Peers for scripts/bench-gpu.sh: loads a safetensors file into GPU memory with the Python
safetensors package, fastsafetensors (no GDS) and the Run:ai Model Streamer, in one process after
CUDA has started, and prints the median time of each (JSON). Usage:
    bench_peers.py FILE [--runs N] [--cold]
--cold drops the file from the page cache (posix_fadvise DONTNEED, after writing back) first."""
import json
import os
import statistics
import sys
import time

import torch


def drop(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def load_safetensors(path):
    from safetensors.torch import load_file
    return load_file(path, device="cuda:0")


def load_fastsafetensors(path):
    from fastsafetensors import SafeTensorsFileLoader
    loader = SafeTensorsFileLoader(None, "cuda:0", nogds=True)
    loader.add_filenames({0: [path]})
    fb = loader.copy_files_to_device()
    out = {k: fb.get_tensor(k) for k in loader.get_keys()}
    torch.cuda.synchronize()
    fb.close()
    loader.close()
    return out


def load_runai(path):
    from runai_model_streamer import SafetensorsStreamer
    out = {}
    with SafetensorsStreamer() as s:
        s.stream_file(path)
        for name, t in s.get_tensors():
            out[name] = t.to("cuda:0", non_blocking=True)
    return out


def main():
    path = sys.argv[1]
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 5
    cold = "--cold" in sys.argv
    torch.zeros(1, device="cuda:0")
    torch.cuda.synchronize()
    result = {"file": path, "bytes": os.path.getsize(path), "cold": cold}
    for name, fn in [("safetensors", load_safetensors), ("fastsafetensors", load_fastsafetensors), ("runai_streamer", load_runai)]:
        try:
            if not cold:
                fn(path)  # warm-up: page cache, imports, allocator
            times = []
            for _ in range(runs):
                if cold:
                    drop(path)
                t = time.perf_counter()
                x = fn(path)
                torch.cuda.synchronize()
                times.append((time.perf_counter() - t) * 1e3)
                del x
                torch.cuda.empty_cache()
            result[name] = {"median_ms": statistics.median(times), "runs_ms": times}
        except Exception as e:  # a peer that fails is reported, not fatal
            result[name] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
