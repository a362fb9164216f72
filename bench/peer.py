"""The benchmark's Python peer: the job of `replora bench`, in PyTorch + Hugging Face PEFT.

Usage: peer.py --model-dir DIR [--method lora|dora|full] [--batch 32] [--seq 128] [--rank 8]
               [--steps 5] [--warmup 2] [--threads 2] [--no-peak] [--autocast bf16]
               [--checkpoint-activations] [--device cpu|cuda[:N]|mps]

Same jobs as src/bench.rs, f32, LoRA/DoRA r, alpha 2r, dropout 0, AdamW lr 1e-4 weight decay
0.01, gradient norm clipped to 1.0, one synthetic batch of token ids uniform in [1000, vocab):
- DIR with config.json (BERT): encoder + mean pooling + Linear(hidden, 4) head (N(0, 0.02),
  zero bias, trains too), adapters on query,value, [CLS] first, [SEP] last, labels i % 4;
- DIR with one .gguf file (LLaMA, e.g. SmolLM2): transformers dequantizes it to f32; adapters on
  q_proj,v_proj; causal-LM loss on the last 32 tokens of each sequence, only those positions
  projected onto the vocabulary.
--autocast bf16: the forward passes under torch.autocast("cpu", dtype=torch.bfloat16) (weights,
gradients and optimizer state stay f32; products run in bf16), PyTorch's mixed precision on the CPU.
--checkpoint-activations: transformers' gradient checkpointing (each layer recomputed in the
backward pass, `use_reentrant=False`), as `replora bench --checkpoint-activations`.
--device cuda[:N] (or mps): the model, the batch and the peak-matmul operands on that device,
every timed interval ending with the device's work done (torch.cuda.synchronize), and
"peak_device_bytes": the most memory PyTorch's caching allocator reserved during the training
steps (torch.cuda.max_memory_reserved), as replora reports its allocator's.
Prints one JSON line with the keys replora's writes.
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

warnings.filterwarnings("ignore", category=FutureWarning)

started_import = time.perf_counter()
import torch  # noqa: E402
import transformers  # noqa: E402
import peft  # noqa: E402
from transformers import AutoModel, AutoModelForCausalLM  # noqa: E402

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
p.add_argument("--autocast", choices=["bf16"])
p.add_argument("--checkpoint-activations", action="store_true")
p.add_argument("--device", default="cpu", help="cpu, cuda[:N] or mps")
args = p.parse_args()
device = torch.device(args.device)
if device.type == "cuda" and not torch.cuda.is_available():
    sys.exit(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
if device.type == "mps" and not torch.backends.mps.is_available():
    sys.exit(f"--device {args.device}: this torch sees no Metal device")


def sync():
    """Waits for the device's queued work, so that a time taken next includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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


ANSWER = 32
ggufs = glob.glob(os.path.join(args.model_dir, "*.gguf"))
decoder = bool(ggufs) and not os.path.exists(os.path.join(args.model_dir, "config.json"))
t0 = time.perf_counter()
if decoder:
    base = AutoModelForCausalLM.from_pretrained(args.model_dir, gguf_file=os.path.basename(ggufs[0]), torch_dtype=torch.float32)
    targets = ["q_proj", "v_proj"]
else:
    base = AutoModel.from_pretrained(args.model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    targets = ["query", "value"]
config = base.config
if args.checkpoint_activations:
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
if args.method != "full":
    lora = peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=targets, use_dora=args.method == "dora")
    base = peft.get_peft_model(base, lora)
base.to(device)
gen = torch.Generator().manual_seed(0)
ids = torch.randint(1000, config.vocab_size, (args.batch, args.seq), generator=gen)
ids = ids.to(device)
if decoder:
    lm = base.get_base_model() if args.method != "full" else base
    answer = min(ANSWER, args.seq - 1)

    def loss_of(_model):
        # Only the answer positions go through the 49k-wide vocabulary projection.
        hidden = lm.model(input_ids=ids).last_hidden_state[:, -answer - 1:-1]
        logits = lm.lm_head(hidden)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, -answer:].reshape(-1))

    model = base
else:
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids).to(device)
    labels = (torch.arange(args.batch) % 4).to(device)
    model = Classifier(base).to(device)

    def loss_of(m):
        return torch.nn.functional.cross_entropy(m(ids, mask), labels)

model.train()
params = [p for p in model.parameters() if p.requires_grad]
optim = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)

times, first = [], None
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
for step in range(args.warmup + args.steps):
    s = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.autocast == "bf16"):
        loss = loss_of(model)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optim.step()
    sync()
    if first is None:
        first = time.perf_counter() - t0
    if step >= args.warmup:
        times.append(time.perf_counter() - s)
    print(f"pytorch {args.method} step {step + 1}: {time.perf_counter() - s:.3f} s", file=sys.stderr)
peak_device_bytes = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None


def inference_rate(m, repeats=5):
    m.eval()
    out = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.autocast == "bf16"):
        for i in range(repeats + 1):
            s = time.perf_counter()
            loss_of(m)
            sync()
            if i > 0:
                out.append(time.perf_counter() - s)
    return args.batch * args.seq / statistics.median(out)


peft_model = None if args.method == "full" else (model if decoder else model.encoder)
if peft_model is None:
    infer_base = infer_merged = inference_rate(model)
else:
    with peft_model.disable_adapter():
        infer_base = inference_rate(model)
    merged = peft_model.merge_and_unload()
    if decoder:
        lm = merged
    else:
        model.encoder = merged
    infer_merged = inference_rate(model)

peak = None
if not args.no_peak:
    peak = 0.0
    for m, k, n in [(1024, 1024, 1024), (4096, 384, 1536), (4096, 1536, 384)]:
        a, b = torch.full((m, k), 0.5, device=device), torch.full((k, n), 0.25, device=device)
        a @ b
        for _ in range(5):
            sync()
            s = time.perf_counter()
            a @ b
            sync()
            peak = max(peak, 2 * m * k * n / (time.perf_counter() - s) / 1e9)

median_step = statistics.median(times)
print(json.dumps({
    "side": "pytorch",
    "device": args.device,
    "method": args.method,
    "autocast": args.autocast,
    "checkpoint_activations": args.checkpoint_activations,
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
    **({"peak_device_bytes": peak_device_bytes} if peak_device_bytes is not None else {}),
    "matmul_peak_gflops": peak,
    "model": {"name": args.model_dir, "kind": "decoder" if decoder else "encoder", "layers": config.num_hidden_layers,
              "hidden": config.hidden_size, "intermediate": config.intermediate_size, "heads": config.num_attention_heads,
              "kv_heads": getattr(config, "num_key_value_heads", None) or config.num_attention_heads, "vocab": config.vocab_size,
              "answer_tokens": answer if decoder else None},
    "versions": {"python": platform.python_version(), "torch": torch.__version__,
                 "transformers": transformers.__version__, "peft": peft.__version__},
}))
