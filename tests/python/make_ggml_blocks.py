"""Writes tests/fixtures/ggml-blocks.gguf: random valid blocks of ggml's Q5_0, Q4_K and Q6_K,
each beside its values as llama.cpp's gguf-py dequantizes them (`gguf.quants.dequantize`,
gguf 0.19.0), so that tests/ggml_blocks.rs checks replora's reading against them with no
Python.

Every byte of a block is random except its f16 scales (`d`, Q4_K's `dmin`), which are random
finite halves: any sign and exponent, subnormals and zeros included.

Usage: .venv-bench/bin/python tests/python/make_ggml_blocks.py [OUT]
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/ggml-blocks.gguf"
rng = np.random.default_rng(20250131)


def finite_halves(n):
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
    while True:
        bad = (bits >> 10) & 0x1F == 0x1F  # exponent all ones: Inf or NaN
        if not bad.any():
            return bits
        bits[bad] = rng.integers(0, 1 << 16, size=int(bad.sum()), dtype=np.uint16)


# (type, rows, cols, byte offsets of the block's f16 scales)
cases = [
    (GGMLQuantizationType.Q5_0, 3, 96, [0]),
    (GGMLQuantizationType.Q4_K, 3, 512, [0, 2]),
    (GGMLQuantizationType.Q6_K, 3, 512, [208]),
]
writer = GGUFWriter(out, "replora-fixture")
for qtype, rows, cols, scale_at in cases:
    per_block, block_bytes = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // per_block, block_bytes), dtype=np.uint8)
    for at in scale_at:
        blocks[:, at:at + 2] = finite_halves(len(blocks)).view(np.uint8).reshape(-1, 2)
    stored = blocks.reshape(rows, -1)
    values = dequantize(stored, qtype).astype(np.float32).reshape(rows, cols)
    assert np.isfinite(values).all()
    name = qtype.name.lower()
    writer.add_tensor(name, stored, raw_dtype=qtype)
    writer.add_tensor(f"{name}.dequantized", values)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
