"""PEFT itself reads replora's export of an adapter on a model with fused linears (Phi-3's
qkv_proj): the logits of transformers' model with PeftModel.from_pretrained(export) must equal
replora's own (within 1e-4 of the largest, at unpadded positions).

Usage: check_fused_peft_export.py MODEL_DIR EXPORT_DIR INPUTS_JSON REPLORA_LOGITS   (.venv-bench)
"""

import json
import sys

import peft
import torch
import transformers
from safetensors.torch import load_file

model_dir, export_dir, inputs_file, logits_file = sys.argv[1:5]
inputs = json.load(open(inputs_file))
ids, mask = torch.tensor(inputs["input_ids"]), torch.tensor(inputs["attention_mask"])
model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
config = json.load(open(f"{export_dir}/adapter_config.json"))
adapted = peft.PeftModel.from_pretrained(model, export_dir)
adapted.eval()
targeted = sorted({name.rsplit(".", 1)[-1] for name, m in adapted.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)})
with torch.no_grad():
    theirs = adapted(input_ids=ids, attention_mask=mask).logits
ours = load_file(logits_file)["logits"]
real = mask.bool()
diff = ((theirs - ours).abs()[real].max() / ours.abs().max()).item()
print(f"PEFT {peft.__version__} adapted {targeted} (target_modules {config['target_modules']}, r {config['r']})")
assert diff < 1e-4, f"PEFT's logits differ from replora's by {diff:.2e} (relative)"
print(f"ok: PEFT's logits equal replora's within {diff:.1e} (relative)")
