"""Reference LLaMA forward in numpy (float64) straight from a GGUF file.

Usage: llama_reference.py GGUF TOKEN_IDS OUT_FILE [LAYERS]

TOKEN_IDS is comma-separated; OUT_FILE (safetensors, float32) gets `logits` [seq, vocab]. With
LAYERS only the first LAYERS blocks run (the final norm and the output projection still do).

Independent of the Rust code: gguf-py (llama.cpp's own package) reads and dequantizes the
tensors, and the rotary embedding is applied the way llama.cpp does it on the file's permuted
q/k weights (rotating adjacent pairs x[2i], x[2i+1]), not by un-permuting them as the Rust
loader does. A match therefore also checks that un-permutation.
"""
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

path, ids_arg, out_file = sys.argv[1:4]
reader = GGUFReader(path)
meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
n_layers = int(meta["llama.block_count"])
if len(sys.argv) > 4:
    n_layers = min(n_layers, int(sys.argv[4]))
heads = int(meta["llama.attention.head_count"])
kv_heads = int(meta.get("llama.attention.head_count_kv", heads))
eps = float(meta["llama.attention.layer_norm_rms_epsilon"])
base = float(meta.get("llama.rope.freq_base", 10000.0))
tensors = {t.name: t for t in reader.tensors}


def weight(name):
    t = tensors[name]
    # gguf-py returns the data in numpy (row-major, slowest dimension first) order.
    return dequantize(t.data, t.tensor_type).astype(np.float64).reshape([int(d) for d in reversed(t.shape)])


def rms_norm(x, w):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope_pairs(x, positions):
    """llama.cpp's 'normal' rotary mode: rotate (x[2i], x[2i+1]) by position * base^(-2i/d)."""
    d = x.shape[-1]
    freqs = base ** (-np.arange(0, d, 2) / d)
    angles = positions[:, None] * freqs[None, :]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


ids = np.array([int(t) for t in ids_arg.split(",")])
seq = len(ids)
embed = weight("token_embd.weight")
x = embed[ids]
hidden = x.shape[-1]
d = hidden // heads
positions = np.arange(seq, dtype=np.float64)
causal = np.triu(np.full((seq, seq), -np.inf), 1)
for i in range(n_layers):
    p = f"blk.{i}."
    h = rms_norm(x, weight(p + "attn_norm.weight"))
    q = (h @ weight(p + "attn_q.weight").T).reshape(seq, heads, d)
    k = (h @ weight(p + "attn_k.weight").T).reshape(seq, kv_heads, d)
    v = (h @ weight(p + "attn_v.weight").T).reshape(seq, kv_heads, d)
    q, k = rope_pairs(q, positions), rope_pairs(k, positions)
    group = heads // kv_heads
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d) + causal
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = np.einsum("hqk,khd->qhd", probs, v).reshape(seq, hidden)
    x = x + context @ weight(p + "attn_output.weight").T
    h = rms_norm(x, weight(p + "ffn_norm.weight"))
    gate = h @ weight(p + "ffn_gate.weight").T
    up = h @ weight(p + "ffn_up.weight").T
    x = x + (gate / (1 + np.exp(-gate)) * up) @ weight(p + "ffn_down.weight").T
x = rms_norm(x, weight("output_norm.weight"))
head = weight("output.weight") if "output.weight" in tensors else embed
save_file({"logits": (x @ head.T).astype(np.float32)}, out_file)
