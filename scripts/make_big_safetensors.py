#!/usr/bin/env python3
"""Writes the 4 GiB case of the GPU benchmarks: 256 F32 tensors of 2048 x 2048 random bit
patterns (seed 0), so that every loader reads the same bytes. Usage: make_big_safetensors.py OUT"""
import sys

import numpy as np
from safetensors.numpy import save_file

rng = np.random.default_rng(0)
save_file({f"layer.{i}.weight": rng.integers(0, 2**31, size=(2048, 2048), dtype=np.int32).view(np.float32) for i in range(256)}, sys.argv[1])
