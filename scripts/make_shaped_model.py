#!/usr/bin/env python3
"""Writes a safetensors file with the tensor names, dtypes and shapes of all-MiniLM-L6-v2
(about 87 MiB of F32), filled with random values: a stand-in with the real model's layout, for
machines where the real file cannot be brought. Usage: make_shaped_model.py OUT"""
import sys

import numpy as np
from safetensors.numpy import save_file

H, I, L, V, P = 384, 1536, 6, 30522, 512
rng = np.random.default_rng(0)
t = {}
def add(name, *shape):
    t[name] = rng.standard_normal(shape).astype(np.float32)
add("embeddings.word_embeddings.weight", V, H)
add("embeddings.position_embeddings.weight", P, H)
add("embeddings.token_type_embeddings.weight", 2, H)
add("embeddings.LayerNorm.weight", H); add("embeddings.LayerNorm.bias", H)
for l in range(L):
    p = f"encoder.layer.{l}."
    for m in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]:
        add(p + m + ".weight", H, H); add(p + m + ".bias", H)
    add(p + "attention.output.LayerNorm.weight", H); add(p + "attention.output.LayerNorm.bias", H)
    add(p + "intermediate.dense.weight", I, H); add(p + "intermediate.dense.bias", I)
    add(p + "output.dense.weight", H, I); add(p + "output.dense.bias", H)
    add(p + "output.LayerNorm.weight", H); add(p + "output.LayerNorm.bias", H)
add("pooler.dense.weight", H, H); add("pooler.dense.bias", H)
save_file(t, sys.argv[1], metadata={"format": "pt"})
