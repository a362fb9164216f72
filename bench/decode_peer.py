"""The decoding benchmark's Python peer: `replora bench --decode` in transformers.

Usage: decode_peer.py --model-dir DIR [--batch 1] [--seq 128] [--new-tokens 32] [--steps 3]
                      [--threads 2]

DIR holds one .gguf file (LLaMA, e.g. SmolLM2), dequantized by transformers to f32. `--batch`
prompts of `--seq` token ids uniform in [1000, vocab) (seed 0, no padding) are continued
greedily by `model.generate` with the KV cache (`do_sample=False`, exactly `--new-tokens` new
tokens). Time to first token is `generate` with one new token; decoding speed counts the tokens
after the first: batch * (new_tokens - 1) / (total - first). Prints one JSON line with the keys
replora's writes.
"""
import argparse
import glob
import json
import os
import platform
import resource
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

p = argparse.ArgumentParser()
p.add_argument("--model-dir", required=True)
p.add_argument("--batch", type=int, default=1)
p.add_argument("--seq", type=int, default=128)
p.add_argument("--new-tokens", type=int, default=32)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(1)
ggufs = glob.glob(os.path.join(args.model_dir, "*.gguf"))
if len(ggufs) != 1:
    sys.exit(f"{args.model_dir}: expected one .gguf file, found {len(ggufs)}")
model = AutoModelForCausalLM.from_pretrained(args.model_dir, gguf_file=os.path.basename(ggufs[0]), torch_dtype=torch.float32)
model.eval()
config = model.config
gen = torch.Generator().manual_seed(0)
ids = torch.randint(1000, config.vocab_size, (args.batch, args.seq), generator=gen)
mask = torch.ones_like(ids)


def generate(n):
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             use_cache=True, pad_token_id=config.eos_token_id)
    assert out.shape[1] == args.seq + n
    return time.perf_counter() - started


generate(2)  # warm-up
ttft, decode = [], []
for round in range(args.steps):
    first = generate(1)
    total = generate(args.new_tokens)
    print(f"pytorch decode round {round + 1}: first token {first:.3f} s, total {total:.3f} s", file=sys.stderr)
    ttft.append(first)
    decode.append(args.batch * (args.new_tokens - 1) / (total - first))

first = statistics.median(ttft)
print(json.dumps({
    "side": "pytorch",
    "job": "decode",
    "batch": args.batch,
    "prompt_tokens": args.seq,
    "new_tokens": args.new_tokens,
    "threads": args.threads,
    "rounds": args.steps,
    "time_to_first_token_s": first,
    "prompt_tokens_per_s": args.batch * args.seq / first,
    "decode_tokens_per_s": statistics.median(decode),
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    # What one step reads: every weight once (a tied table counted once, as parameters() does).
    "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
    "model": {"name": args.model_dir, "layers": config.num_hidden_layers, "hidden": config.hidden_size, "vocab": config.vocab_size},
    "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
}))
