#!/usr/bin/env python3
"""Wall-clock time of whole processes, run several times.

Usage: whole_process.py warm|cold FILE RUNS CMD [ARG...] [--- CMD [ARG...]]...

With one command, prints JSON {median_ms, runs_ms}. With several (separated by `---`), they run
interleaved, one run of each in turn (the order rotating from run to run), so that a machine's
drift during the measurement touches all of them alike; prints JSON {commands: [{median_ms,
runs_ms}, ...], paired: [{median_ms, runs_ms}, ...]}, where paired[i] holds each run's time of
command i+1 minus the same run's time of the first command.
With `cold`, FILE is dropped from the page cache (written back, then posix_fadvise DONTNEED)
before each process.
Each command's entry also holds the medians of its processes' CPU time (user, system) and page
faults (minor, major), from wait4; and, for a command that prints JSON with `timings_ms.total`
(`mmsb replay --json`), `outside_ms`: the wall time minus that in-process total (the process's
start, argument parsing, printing and exit)."""
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
    """Runs cmd once; returns its wall time (ms) and what else was measured of it."""
    if cold:
        drop(path)
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    out = p.stdout.read()
    p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    wall = (time.perf_counter() - t) * 1e3
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, cmd)
    extra = {"user_ms": ru.ru_utime * 1e3, "sys_ms": ru.ru_stime * 1e3, "minflt": ru.ru_minflt, "majflt": ru.ru_majflt}
    try:
        extra["outside_ms"] = wall - json.loads(out)["timings_ms"]["total"]
    except (ValueError, KeyError, TypeError):
        pass
    return wall, extra


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
    extras = [[None] * runs for _ in cmds]
    for r in range(runs):
        for k in range(len(cmds)):
            i = (r + k) % len(cmds)
            times[i][r], extras[i][r] = timed(cmds[i], cold, path)
    summary = []
    for ts, ex in zip(times, extras):
        entry = {"median_ms": statistics.median(ts), "runs_ms": ts}
        for key in ex[0]:
            entry[key] = statistics.median(e[key] for e in ex)
        summary.append(entry)
    if len(cmds) == 1:
        print(json.dumps(summary[0]))
        return
    paired = []
    for ts in times[1:]:
        d = [b - a for a, b in zip(times[0], ts)]
        paired.append({"median_ms": statistics.median(d), "runs_ms": d})
    print(json.dumps({"commands": summary, "paired": paired}))


main()
