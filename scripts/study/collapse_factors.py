"""Issue 27: what RepLoRA's generated update looks like in a run's checkpoint (or best/).

For every adapted linear: the share of ||dW||_F^2 in dW's top singular value (1.0: a rank-1
update), the share of the generated B (and A) that is the row-common part the generators'
output biases add to every row, and the largest |pre-activation| of the generators' tanh.
Both methods: the update `(alpha/r) A B` against the frozen weight, in Frobenius norm
(`rel_fro`, what metrics.jsonl logs as update_norm, per target) and in spectral norm
(`rel_spec`: its top singular value over W0's). LoRA runs get no generator columns.
Usage: python collapse_factors.py RUN_DIR [best|checkpoint]
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def generated(d, i, half, width):
    """Generated rows [r, 2*width] of generator i's half ('a' or 'b') from its block's seed."""
    p = f"encoder.adapters.generators.{i}.{half}."
    seed = d[f"encoder.adapters.blocks.{i}.seed_{half}"][0]
    zero = lambda n: np.zeros(n, dtype=np.float32)
    hidden_bias = d.get(p + "hidden_bias", zero(d[p + "hidden_weight"].shape[1]))
    out_bias = d.get(p + "out_bias", zero(d[p + "out_weight"].shape[1]))
    pre = np.diag(seed) @ d[p + "hidden_weight"] + hidden_bias
    rows = (np.tanh(pre) @ d[p + "out_weight"] + out_bias) / np.sqrt(len(seed))
    common = np.broadcast_to(out_bias / np.sqrt(len(seed)), rows.shape)
    return rows, np.abs(pre).max(), (common ** 2).sum() / (rows ** 2).sum()


def top_share(m):
    s = np.linalg.svd(m, compute_uv=False)
    return float((s[0] ** 2) / (s ** 2).sum())


def against_w0(row, update, w0):
    row["rel_fro"] = float(np.linalg.norm(update) / np.linalg.norm(w0))
    row["rel_spec"] = float(np.linalg.svd(update, compute_uv=False)[0] / np.linalg.svd(w0, compute_uv=False)[0])
    return row


def main(run, which="checkpoint"):
    d = load_file(str(Path(run) / which / "trainable.safetensors"))
    spec = json.load(open(Path(run) / "run.json"))
    scale = spec["adapter"]["lora_alpha"] / spec["adapter"]["r"]
    model = Path(os.environ.get("REPLORA_CACHE", Path.home() / ".cache/replora")) / "models/all-minilm-l6-v2/model.safetensors"
    base = load_file(str(model))
    w0 = lambda layer, name: base[f"encoder.layer.{layer}.attention.self.{name}.weight"].T
    out = []
    if any(".generators." in k for k in d):
        layers = sorted({int(k.split(".")[3]) for k in d if ".blocks." in k})
        for i in layers:
            a_rows, a_pre, a_common = generated(d, i, "a", None)
            b_rows, b_pre, b_common = generated(d, i, "b", None)
            w = a_rows.shape[1] // 2
            for t, name in enumerate(["query", "value"]):
                A = a_rows[:, t * w:(t + 1) * w].T
                B = b_rows[:, t * w:(t + 1) * w]
                row = dict(layer=i, target=name, top_sv_share=top_share(A @ B),
                           b_common_share=float(b_common), a_common_share=float(a_common), max_abs_pre=float(max(a_pre, b_pre)))
                out.append(against_w0(row, scale * A @ B, w0(i, name)))
    else:
        names = sorted({k.rsplit(".factors", 1)[0] for k in d if ".factors." in k}, key=lambda n: int(n.rsplit(".", 1)[1]))
        for n in names:
            A, B = d[n + ".factors.a"], d[n + ".factors.b"]
            # Targets are query, value of each layer in order (the default --targets).
            t = int(n.split("targets.")[1])
            layer, name = t // 2, ["query", "value"][t % 2]
            row = dict(layer=layer, target=name, top_sv_share=top_share(A @ B))
            out.append(against_w0(row, scale * A @ B, w0(layer, name)))
    out.sort(key=lambda r: (r["layer"], r["target"]))
    for row in out:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
