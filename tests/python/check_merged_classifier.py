"""Reads a merged replora classifier directory the way Hugging Face libraries do, with numpy and
the safetensors package only, and writes its logits.

Usage: check_merged_classifier.py MERGED_DIR BATCHES_JSON OUT_FILE

The layout decides the model, as it does for transformers / sentence-transformers:
- config.json `architectures` == ["BertForSequenceClassification"]: logits =
  classifier(tanh(pooler(h_CLS))), the tensors under `bert.` and `classifier.`;
- modules.json (sentence-transformers): the encoder at the root, `1_Pooling/config.json`'s mode
  (mean over real tokens or the CLS token), then `2_Dense` (linear, identity activation only).
The encoder forward is tests/python/bert_reference.py (float64). OUT_FILE gets `logits.{i}`.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

merged, batches_file, out_file = sys.argv[1:4]
config = json.load(open(f"{merged}/config.json"))
with tempfile.TemporaryDirectory() as tmp:
    encoded = f"{tmp}/encoder.safetensors"
    reference = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bert_reference.py")
    subprocess.run([sys.executable, reference, merged, batches_file, encoded], check=True, stdout=subprocess.DEVNULL)
    encoder = load_file(encoded)
weights = load_file(f"{merged}/model.safetensors")
n = len(json.load(open(batches_file))["batches"])
out = {}
if config.get("architectures") == ["BertForSequenceClassification"]:
    assert not os.path.exists(f"{merged}/modules.json"), "a BertForSequenceClassification directory with modules.json is ambiguous"
    w, b = weights["classifier.weight"], weights["classifier.bias"]
    assert len(config["id2label"]) == w.shape[0] == config["num_labels"], (config["id2label"], w.shape)
    for i in range(n):
        out[f"logits.{i}"] = encoder[f"pooler.{i}"].astype(np.float64) @ w.T.astype(np.float64) + b
    layout = "BertForSequenceClassification"
else:
    assert not any(k.startswith("classifier.") or k.startswith("bert.") for k in weights), "encoder weights carry a task head"
    modules = json.load(open(f"{merged}/modules.json"))
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    assert kinds == ["Transformer", "Pooling", "Dense"], kinds
    pooling = json.load(open(f"{merged}/{modules[1]['path']}/config.json"))
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True]
    assert modes in (["pooling_mode_mean_tokens"], ["pooling_mode_cls_token"]), modes
    dense_dir = f"{merged}/{modules[2]['path']}"
    dense = json.load(open(f"{dense_dir}/config.json"))
    assert dense["activation_function"] == "torch.nn.modules.linear.Identity", dense
    head = load_file(f"{dense_dir}/model.safetensors")
    w, b = head["linear.weight"], head["linear.bias"]
    assert w.shape == (dense["out_features"], dense["in_features"]), (w.shape, dense)
    for i in range(n):
        pooled = encoder[f"mean.{i}"] if modes == ["pooling_mode_mean_tokens"] else encoder[f"hidden.{i}"][:, 0]
        out[f"logits.{i}"] = pooled.astype(np.float64) @ w.T.astype(np.float64) + b
    layout = f"sentence-transformers ({modes[0]})"
save_file({k: v.astype(np.float32) for k, v in out.items()}, out_file)
print(f"{layout}: {n} batches")
