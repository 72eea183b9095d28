"""RL weight sync with mmsb, both sides in one process on one GPU.

A trainer holds a BF16 model with Qwen2.5-0.5B's layer shapes (random values, about 1 GB) on
the GPU; each step changes 1% of the rows of every weight matrix. `mmsb.torch.delta` appends
what changed to a log; an inference copy of the weights, also on the GPU, follows with
`mmsb.torch.apply`. After the steps the two copies are compared bit for bit.

Measured per step, in the same run (medians, the first step apart: it creates the log and
checks the base):
- `delta()` and `apply()` times, against reloading the whole model with
  `safetensors.torch.load_file(device="cuda:0")` from a warm page cache;
- `apply()` against a pinned host-to-device copy of the changed bytes alone;
- the log's bytes per step against the changed bytes.

    python3 examples/rl_weight_sync.py [--steps 10] [--dir DIR] [--not-durable] [--json OUT.json]

`--not-durable` has `delta` leave each step to the OS (`durable=False`: no sync to disk); with
`--dir /dev/shm/...` the log lives in memory, where syncs cost nothing.

A log segment per step can travel as a file (rsync, a shared filesystem) or be streamed: a
segment is a plain file that only grows, and a reader applies the steps whose group is whole
(an open group at the end of the last segment is a torn tail, left for the next call).
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

import mmsb
import mmsb.torch

VOCAB, HIDDEN, LAYERS, FFN, KV = 151936, 896, 24, 4864, 128


def qwen_shapes():
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
                p + "self_attn.q_proj.bias": (HIDDEN,),
                p + "self_attn.k_proj.weight": (KV, HIDDEN),
                p + "self_attn.k_proj.bias": (KV,),
                p + "self_attn.v_proj.weight": (KV, HIDDEN),
                p + "self_attn.v_proj.bias": (KV,),
                p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
                p + "mlp.gate_proj.weight": (FFN, HIDDEN),
                p + "mlp.up_proj.weight": (FFN, HIDDEN),
                p + "mlp.down_proj.weight": (HIDDEN, FFN),
                p + "input_layernorm.weight": (HIDDEN,),
                p + "post_attention_layernorm.weight": (HIDDEN,),
            }
        )
    shapes["model.norm.weight"] = (HIDDEN,)
    return shapes


def make_model(device):
    g = torch.Generator(device=device).manual_seed(0)
    return {k: torch.randn(s, generator=g, device=device, dtype=torch.bfloat16) for k, s in qwen_shapes().items()}


def train_step(weights, step):
    """1% of the rows of every matrix get new values (at least one row); returns the bytes of
    the rows changed."""
    g = torch.Generator(device="cuda").manual_seed(1000 + step)
    changed = 0
    for t in weights.values():
        if t.dim() != 2:
            continue
        n = max(1, t.shape[0] // 100)
        rows = torch.randperm(t.shape[0], generator=g, device="cuda")[:n]
        t[rows] = torch.randn((n, t.shape[1]), generator=g, device="cuda", dtype=t.dtype)
        changed += n * t.shape[1] * t.element_size()
    return changed


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - t) * 1e3


def log_bytes(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dir", default=None, help="where the log and the model file go (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--not-durable", action="store_true", help="delta(..., durable=False): steps not synced to disk")
    args = ap.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="mmsb-rl-")
    log = os.path.join(work, "sync.log")
    trainer = make_model("cuda")
    model_bytes = sum(t.numel() * t.element_size() for t in trainer.values())
    old = {k: v.clone() for k, v in trainer.items()}
    server = {k: v.clone() for k, v in trainer.items()}
    print(f"model: {len(trainer)} tensors, {model_bytes / 2**30:.2f} GiB BF16 on {torch.cuda.get_device_name(0)}")

    rows = []
    seq = None
    for step in range(args.steps):
        changed = train_step(trainer, step)
        size_before = log_bytes(log) if os.path.exists(log) else 0
        d, delta_ms = timed(lambda: mmsb.torch.delta(old, trainer, log, durable=not args.not_durable))
        a, apply_ms = timed(lambda: mmsb.torch.apply(log, server, from_seq=seq))
        seq = a.last_seq + 1
        for k in trainer:
            old[k].copy_(trainer[k])
        # The step's bytes in the log: its segment (the first step's also holds the base's).
        step_bytes = log_bytes(log) - size_before
        # Pinned host-to-device copy of the changed bytes alone: the floor for any apply.
        host = torch.empty(changed, dtype=torch.uint8, pin_memory=True)
        dev = torch.empty(changed, dtype=torch.uint8, device="cuda")
        _, h2d_ms = timed(lambda: dev.copy_(host, non_blocking=True))
        rows.append(
            {
                "step": step,
                "delta_ms": delta_ms,
                "apply_ms": apply_ms,
                "h2d_changed_ms": h2d_ms,
                "changed_bytes": changed,
                "log_step_bytes": step_bytes,
                "records": d.records,
                "delta_phases_ms": d.timings_ms,
                "apply_phases_ms": a.timings_ms,
                "apply_device": a.device,
            }
        )
        print(
            f"step {step}: delta {delta_ms:7.2f} ms  apply {apply_ms:7.2f} ms  (H2D of the changed bytes "
            f"{h2d_ms:5.2f} ms)  changed {changed / 2**20:6.2f} MiB  log +{step_bytes / 2**20:6.2f} MiB"
        )
        phases = lambda t: " ".join(f"{k} {v:.1f}" for k, v in t.items())  # noqa: E731
        print(f"    delta phases: {phases(d.timings_ms)}\n    apply phases: {phases(a.timings_ms)}")
        if a.device:
            print(f"    apply on the device: {phases(a.device)}")
    same = all(torch.equal(server[k], trainer[k]) for k in trainer)
    print("inference copy equals the trainer's, bit for bit:", same)

    # The peer: the whole model reloaded from a safetensors file (page cache warm).
    from safetensors.torch import load_file, save_file

    st = os.path.join(work, "model.safetensors")
    save_file({k: v.cpu() for k, v in trainer.items()}, st)
    load_file(st, device="cuda:0")
    reload_ms = statistics.median(timed(lambda: load_file(st, device="cuda:0"))[1] for _ in range(5))

    later = rows[1:] or rows
    med = lambda key: statistics.median(r[key] for r in later)  # noqa: E731
    summary = {
        "device": torch.cuda.get_device_name(0),
        "model_bytes": model_bytes,
        "steps": args.steps,
        "durable": not args.not_durable,
        "log_dir": work,
        "bit_exact": same,
        "first_step": rows[0],
        "median_delta_ms": med("delta_ms"),
        "median_apply_ms": med("apply_ms"),
        "median_h2d_changed_ms": med("h2d_changed_ms"),
        "median_changed_bytes": med("changed_bytes"),
        "median_log_step_bytes": med("log_step_bytes"),
        "safetensors_reload_ms": reload_ms,
    }
    summary["sync_vs_reload"] = reload_ms / (summary["median_delta_ms"] + summary["median_apply_ms"])
    summary["apply_vs_h2d"] = summary["median_apply_ms"] / summary["median_h2d_changed_ms"]
    summary["log_vs_changed"] = summary["median_log_step_bytes"] / summary["median_changed_bytes"]
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "steps": rows}, f, indent=1)
    if not same:
        raise SystemExit("the inference copy differs from the trainer's")


if __name__ == "__main__":
    main()
