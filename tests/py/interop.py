"""Peer side of tests/safetensors_interop.rs: writes safetensors files with the real Python
safetensors package and checks files that mmsb exported."""
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

DTYPES = ["float64", "float32", "float16", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool"]


def write(path):
    rng = np.random.default_rng(7)
    tensors = {}
    for i, dt in enumerate(DTYPES):
        shape = [(2, 3), (7,), (1, 1, 5), (4, 4)][i % 4]
        if dt == "bool":
            tensors[f"t.{dt}"] = rng.integers(0, 2, size=shape).astype(bool)
        elif dt.startswith("float"):
            a = rng.standard_normal(shape).astype(dt)
            a.flat[0] = np.nan  # NaN payloads must survive bit for bit
            tensors[f"t.{dt}"] = a
        else:
            info = np.iinfo(dt)
            tensors[f"t.{dt}"] = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    tensors["scalar"] = np.array(3.5, dtype=np.float32)
    tensors["empty"] = np.zeros((0, 4), dtype=np.float32)
    tensors["model.layers.0.attn.q_proj.weight"] = rng.standard_normal((64, 32)).astype(np.float32)
    save_file(tensors, path, metadata={"format": "np", "step": "42"})


def same(a_path, b_path, edit=None):
    """Asserts that b holds a's tensors bit for bit (after an optional edit: name, offset, hex)."""
    a, b = load_file(a_path), load_file(b_path)
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    for name in a:
        x, y = a[name], b[name]
        assert x.dtype == y.dtype and x.shape == y.shape, (name, x.dtype, y.dtype, x.shape, y.shape)
        raw = bytearray(x.tobytes())
        if edit and edit[0] == name:
            off, new = int(edit[1]), bytes.fromhex(edit[2])
            raw[off:off + len(new)] = new
        assert bytes(raw) == y.tobytes(), f"{name} differs"
    with safe_open(a_path, "np") as fa, safe_open(b_path, "np") as fb:
        assert fa.metadata() == fb.metadata(), (fa.metadata(), fb.metadata())
    print(json.dumps({"tensors": len(a), "ok": True}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "write":
        write(sys.argv[2])
    elif cmd == "same":
        same(sys.argv[2], sys.argv[3], sys.argv[4:7] if len(sys.argv) > 4 else None)
    else:
        sys.exit(f"unknown command {cmd}")
