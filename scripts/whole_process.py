#!/usr/bin/env python3
"""Wall-clock time of whole processes, run several times.

Usage: whole_process.py warm|cold FILE RUNS CMD [ARG...] [--- CMD [ARG...]]...

With one command, prints JSON {median_ms, runs_ms}. With several (separated by `---`), they run
interleaved, one run of each in turn (the order rotating from run to run), so that a machine's
drift during the measurement touches all of them alike; prints JSON {commands: [{median_ms,
runs_ms}, ...], paired: [{median_ms, runs_ms}, ...]}, where paired[i] holds each run's time of
command i+1 minus the same run's time of the first command.
With `cold`, FILE is dropped from the page cache (written back, then posix_fadvise DONTNEED)
before each process."""
import json
import os
import statistics
import subprocess
import sys
import time


def drop(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def timed(cmd, cold, path):
    if cold:
        drop(path)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1e3


def main():
    cold = sys.argv[1] == "cold"
    path, runs = sys.argv[2], int(sys.argv[3])
    cmds = [[]]
    for a in sys.argv[4:]:
        if a == "---":
            cmds.append([])
        else:
            cmds[-1].append(a)
    times = [[0.0] * runs for _ in cmds]
    for r in range(runs):
        for k in range(len(cmds)):
            i = (r + k) % len(cmds)
            times[i][r] = timed(cmds[i], cold, path)
    summary = [{"median_ms": statistics.median(ts), "runs_ms": ts} for ts in times]
    if len(cmds) == 1:
        print(json.dumps(summary[0]))
        return
    paired = []
    for ts in times[1:]:
        d = [b - a for a, b in zip(times[0], ts)]
        paired.append({"median_ms": statistics.median(d), "runs_ms": d})
    print(json.dumps({"commands": summary, "paired": paired}))


main()
