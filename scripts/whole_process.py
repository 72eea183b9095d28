#!/usr/bin/env python3
"""Wall-clock time of a whole process, run several times: prints JSON {median_ms, runs_ms}.
With `cold`, FILE is dropped from the page cache (written back, then posix_fadvise DONTNEED)
before each run. Usage: whole_process.py warm|cold FILE RUNS CMD [ARG...]"""
import json
import os
import statistics
import subprocess
import sys
import time

cold = sys.argv[1] == "cold"
path, runs, cmd = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
ts = []
for _ in range(runs):
    if cold:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    ts.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"median_ms": statistics.median(ts), "runs_ms": ts}))
