"""Independent check of a replora PEFT export, with numpy and the safetensors package only.

Usage: check_peft_export.py EXPORT_DIR REFERENCE_FILE

REFERENCE_FILE holds, per adapted module path P, `base.P` (the frozen weight W0, PyTorch
layout [d_out, d_in]) and `merged.P` (the weight replora's merge produced). The script checks
the PEFT file names, shapes, dtype, metadata and config, then recomputes the merge in numpy:
W0 + s B A (DoRA: rescaled per output row by m / ||W0 + s B A||) and compares.
"""
import json
import math
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

export_dir, reference_file = sys.argv[1], sys.argv[2]
config = json.load(open(f"{export_dir}/adapter_config.json"))
for key in ["peft_type", "r", "lora_alpha", "target_modules", "use_rslora", "use_dora",
            "rank_pattern", "alpha_pattern", "bias", "task_type", "base_model_name_or_path"]:
    assert key in config, f"adapter_config.json lacks {key}"
assert config["peft_type"] == "LORA", config["peft_type"]
assert config["bias"] == "none"

weights_path = f"{export_dir}/adapter_model.safetensors"
with safe_open(weights_path, framework="numpy") as f:
    assert f.metadata() == {"format": "pt"}, f.metadata()
adapter = load_file(weights_path)
reference = load_file(reference_file)

paths = sorted(k[len("base."):] for k in reference if k.startswith("base."))
expected_keys = set()
worst = 0.0
for path in paths:
    prefix = f"base_model.model.{path}"
    a, b = adapter[f"{prefix}.lora_A.weight"], adapter[f"{prefix}.lora_B.weight"]
    expected_keys |= {f"{prefix}.lora_A.weight", f"{prefix}.lora_B.weight"}
    w0 = reference[f"base.{path}"].astype(np.float64)
    d_out, d_in = w0.shape
    r = config["r"]
    assert a.dtype == np.float32 and b.dtype == np.float32, (a.dtype, b.dtype)
    assert a.shape == (r, d_in), f"{path}: lora_A {a.shape} != {(r, d_in)}"
    assert b.shape == (d_out, r), f"{path}: lora_B {b.shape} != {(d_out, r)}"
    alpha = config["lora_alpha"]
    scale = alpha / math.sqrt(r) if config["use_rslora"] else alpha / r
    w = w0 + scale * (b.astype(np.float64) @ a.astype(np.float64))
    if config["use_dora"]:
        m = adapter[f"{prefix}.lora_magnitude_vector"].astype(np.float64)
        expected_keys.add(f"{prefix}.lora_magnitude_vector")
        assert m.shape == (d_out,), m.shape
        w = w * (m / np.linalg.norm(w, axis=1))[:, None]
    merged = reference[f"merged.{path}"].astype(np.float64)
    err = np.abs(w - merged).max() / max(np.abs(merged).max(), 1e-12)
    worst = max(worst, err)
    assert err < 1e-5, f"{path}: numpy merge differs from replora's by {err:.2e}"
assert set(adapter) == expected_keys, f"unexpected tensors: {set(adapter) ^ expected_keys}"
print(f"ok: {len(paths)} modules, worst relative error {worst:.2e}")
