"""Reference BERT encoder forward in numpy (float64), with the safetensors package only.

Usage: bert_reference.py MODEL_DIR BATCHES_JSON OUT_FILE

MODEL_DIR holds a Hugging Face BERT checkpoint (config.json, model.safetensors; tensor names
with or without a `bert.` prefix, LayerNorm weight/bias or gamma/beta). BATCHES_JSON is
`{"batches": [{"input_ids": [[...]], "token_type_ids": [[...]], "attention_mask": [[...]]}]}`.
OUT_FILE (safetensors, float32) gets, per batch i: `hidden.{i}` (last hidden state
[batch, seq, hidden]), `mean.{i}` (masked mean pooling [batch, hidden]) and, if the
checkpoint has a pooler, `pooler.{i}` (tanh(dense(h_CLS))).

This is written from the BERT paper / transformers' BertModel semantics, independently of the
Rust code: post-LayerNorm blocks, exact erf GELU, additive mask of finfo(float32).min on padded
keys.
"""
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

model_dir, batches_file, out_file = sys.argv[1:4]
config = json.load(open(f"{model_dir}/config.json"))
assert config.get("hidden_act", "gelu") == "gelu", config.get("hidden_act")
weights = {k: v.astype(np.float64) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
eps = config.get("layer_norm_eps", 1e-12)
heads = config["num_attention_heads"]
erf = np.vectorize(math.erf)


def w(name):
    return weights[prefix + name]


def layer_norm(x, name):
    scale = weights.get(f"{prefix}{name}.weight", weights.get(f"{prefix}{name}.gamma"))
    shift = weights.get(f"{prefix}{name}.bias", weights.get(f"{prefix}{name}.beta"))
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + shift


def dense(x, name):
    # PyTorch layout: weight is [out, in].
    return x @ w(f"{name}.weight").T + w(f"{name}.bias")


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def encoder(ids, types, mask):
    b, t = ids.shape
    x = w("embeddings.word_embeddings.weight")[ids]
    x = x + w("embeddings.token_type_embeddings.weight")[types]
    x = x + w("embeddings.position_embeddings.weight")[:t][None]
    x = layer_norm(x, "embeddings.LayerNorm")
    hidden = x.shape[-1]
    d = hidden // heads
    bias = (1.0 - mask)[:, None, None, :] * np.finfo(np.float32).min
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def split(y):
            return y.reshape(b, t, heads, d).transpose(0, 2, 1, 3)

        q = split(dense(x, p + "attention.self.query"))
        k = split(dense(x, p + "attention.self.key"))
        v = split(dense(x, p + "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias
        context = (softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, t, hidden)
        x = layer_norm(dense(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = gelu(dense(x, p + "intermediate.dense"))
        x = layer_norm(dense(h, p + "output.dense") + x, p + "output.LayerNorm")
    return x


out = {}
for i, batch in enumerate(json.load(open(batches_file))["batches"]):
    ids = np.array(batch["input_ids"], dtype=np.int64)
    types = np.array(batch["token_type_ids"], dtype=np.int64)
    mask = np.array(batch["attention_mask"], dtype=np.float64)
    x = encoder(ids, types, mask)
    mean = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    out[f"hidden.{i}"] = x.astype(np.float32)
    out[f"mean.{i}"] = mean.astype(np.float32)
    if prefix + "pooler.dense.weight" in weights:
        out[f"pooler.{i}"] = np.tanh(dense(x[:, 0], "pooler.dense")).astype(np.float32)
save_file(out, out_file)
print(f"reference: {len(out)} tensors, prefix {prefix!r}, {config['num_hidden_layers']} layers")
