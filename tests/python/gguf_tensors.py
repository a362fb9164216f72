"""Dequantizes named tensors of a GGUF file with gguf-py (llama.cpp's own reader).

Usage: gguf_tensors.py GGUF NAMES OUT_FILE — NAMES comma-separated; OUT_FILE (safetensors,
float32) holds each tensor under its GGUF name, shaped slowest dimension first.
"""
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

path, names, out_file = sys.argv[1:4]
tensors = {t.name: t for t in GGUFReader(path).tensors}
out = {}
for name in names.split(","):
    t = tensors[name]
    out[name] = dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(d) for d in reversed(t.shape)])
save_file(out, out_file)
