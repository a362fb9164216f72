"""The benchmark's Python peer: the job of `replora bench`, in PyTorch + Hugging Face PEFT.

Usage: peer.py --model-dir DIR [--method lora|dora|full] [--batch 32] [--seq 128] [--rank 8]
               [--steps 5] [--warmup 2] [--threads 2] [--no-peak]

Same job as src/bench.rs: the BERT encoder + mean pooling + Linear(hidden, 4) head (N(0, 0.02)
weights, zero bias), LoRA/DoRA r, alpha 2r, dropout 0 on query,value (the head trains too),
AdamW lr 1e-4 weight decay 0.01, gradient norm clipped to 1.0, one synthetic batch (token ids
uniform in [1000, vocab), [CLS] first, [SEP] last, no padding, labels i % 4), f32. Prints one
JSON line with the keys replora's writes.
"""
import argparse
import json
import platform
import resource
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)

started_import = time.perf_counter()
import torch  # noqa: E402
import transformers  # noqa: E402
import peft  # noqa: E402
from transformers import AutoModel  # noqa: E402

import_s = time.perf_counter() - started_import
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

p = argparse.ArgumentParser()
p.add_argument("--model-dir", required=True)
p.add_argument("--method", default="lora", choices=["lora", "dora", "full"])
p.add_argument("--batch", type=int, default=32)
p.add_argument("--seq", type=int, default=128)
p.add_argument("--rank", type=int, default=8)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--no-peak", action="store_true")
args = p.parse_args()

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(1)
torch.manual_seed(0)


class Classifier(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.classifier = torch.nn.Linear(hidden, 4)
        torch.nn.init.normal_(self.classifier.weight, std=0.02)
        torch.nn.init.zeros_(self.classifier.bias)

    def forward(self, ids, mask):
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.classifier((h * m).sum(1) / m.sum(1).clamp_min(1e-9))


t0 = time.perf_counter()
encoder = AutoModel.from_pretrained(args.model_dir, torch_dtype=torch.float32, attn_implementation="eager")
config = encoder.config
if args.method != "full":
    lora = peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=["query", "value"],
                           use_dora=args.method == "dora")
    encoder = peft.get_peft_model(encoder, lora)
model = Classifier(encoder)
model.train()
params = [p for p in model.parameters() if p.requires_grad]
optim = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
gen = torch.Generator().manual_seed(0)
ids = torch.randint(1000, config.vocab_size, (args.batch, args.seq), generator=gen)
ids[:, 0], ids[:, -1] = 101, 102
mask = torch.ones_like(ids)
labels = torch.arange(args.batch) % 4

times, first = [], None
for step in range(args.warmup + args.steps):
    s = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optim.step()
    if first is None:
        first = time.perf_counter() - t0
    if step >= args.warmup:
        times.append(time.perf_counter() - s)
    print(f"pytorch {args.method} step {step + 1}: {time.perf_counter() - s:.3f} s", file=sys.stderr)


def inference_rate(m, repeats=5):
    m.eval()
    out = []
    with torch.no_grad():
        for i in range(repeats + 1):
            s = time.perf_counter()
            m(ids, mask)
            if i > 0:
                out.append(time.perf_counter() - s)
    return args.batch * args.seq / statistics.median(out)


if args.method == "full":
    infer_base = infer_merged = inference_rate(model)
else:
    with model.encoder.disable_adapter():
        infer_base = inference_rate(model)
    model.encoder = model.encoder.merge_and_unload()
    infer_merged = inference_rate(model)

peak = None
if not args.no_peak:
    peak = 0.0
    for m, k, n in [(1024, 1024, 1024), (4096, 384, 1536), (4096, 1536, 384)]:
        a, b = torch.full((m, k), 0.5), torch.full((k, n), 0.25)
        a @ b
        for _ in range(5):
            s = time.perf_counter()
            a @ b
            peak = max(peak, 2 * m * k * n / (time.perf_counter() - s) / 1e9)

median_step = statistics.median(times)
print(json.dumps({
    "side": "pytorch",
    "method": args.method,
    "batch": args.batch,
    "seq": args.seq,
    "rank": args.rank,
    "threads": args.threads,
    "trainable_params": sum(p.numel() for p in params),
    "time_to_first_step_s": first,
    "import_s": import_s,
    "step_times_s": times,
    "median_step_s": median_step,
    "train_tokens_per_s": args.batch * args.seq / median_step,
    "infer_base_tokens_per_s": infer_base,
    "infer_merged_tokens_per_s": infer_merged,
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "matmul_peak_gflops": peak,
    "model": {"name": args.model_dir, "layers": config.num_hidden_layers, "hidden": config.hidden_size,
              "intermediate": config.intermediate_size, "heads": config.num_attention_heads},
    "versions": {"python": platform.python_version(), "torch": torch.__version__,
                 "transformers": transformers.__version__, "peft": peft.__version__},
}))
