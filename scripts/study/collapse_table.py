"""Issue 27's screen table from a sweep's cells: per (task, fraction, seed, AdamW beta_2) LoRA's
and RepLoRA's test macro-F1, the majority-class predictor's macro-F1 (class priors of the whole
task.json, or of the whole JSONL file for a subset), whether RepLoRA collapsed (macro-F1 within
0.05 of the majority's while LoRA's > 0.6) and what the trainer's collapse guard recorded; then
the collapse count per beta_2. Usage: python collapse_table.py runs/sweep/<grid>/grid.json
"""
import collections
import json
import os
import sys
from pathlib import Path

CACHE = Path(os.environ.get("REPLORA_CACHE", Path.home() / ".cache/replora"))


def majority_f1(data):
    if data.startswith("bigbench:"):
        examples = json.load(open(CACHE / "bigbench" / data.split(":", 1)[1] / "task.json"))["examples"]
        labels = collections.Counter(max(e["target_scores"], key=e["target_scores"].get) for e in examples)
    else:
        labels = collections.Counter(json.loads(line)["label"] for line in open(data))
    p = max(labels.values()) / sum(labels.values())
    return (2 * p / (1 + p)) / len(labels)


def main(grid_json):
    runs = collections.defaultdict(dict)
    for cell in json.load(open(grid_json)):
        f = cell["flags"]
        summary = Path(cell["dir"]) / "summary.json"
        if not summary.is_file():
            continue
        s = json.load(open(summary))
        key = (f["data"], float(f.get("train_fraction", 1)), int(f["seed"]), float(f.get("adam_beta2", 0.999)))
        runs[key][f["method"]] = s
    print("| task | fraction | seed | beta_2 | LoRA macro-F1 | RepLoRA macro-F1 | majority macro-F1 | collapsed? | guard (RepLoRA / LoRA) |")
    print("|---|---|---|---|---|---|---|---|---|")
    count = collections.Counter()
    for (data, frac, seed, beta2), m in sorted(runs.items()):
        maj = majority_f1(data)
        task = data.split(":", 1)[1] if data.startswith("bigbench:") else Path(data).stem
        f1 = {k: v["test"]["macro_f1"] for k, v in m.items()}
        guard = {k: (v["training"].get("collapse") or {}).get("step") for k, v in m.items()}
        collapsed = "replora" in f1 and "lora" in f1 and abs(f1["replora"] - maj) <= 0.05 and f1["lora"] > 0.6
        count[beta2] += collapsed
        fmt = lambda k: f"{f1[k]:.3f}" if k in f1 else "not run"
        g = lambda k: "-" if k not in guard else (f"step {guard[k]}" if guard[k] else "none")
        print(f"| {task} | {frac} | {seed} | {beta2} | {fmt('lora')} | {fmt('replora')} | {maj:.3f} | {'**yes**' if collapsed else 'no'} | {g('replora')} / {g('lora')} |")
    cells = collections.Counter(k[3] for k, m in runs.items() if "lora" in m and "replora" in m)
    for beta2 in sorted(cells):
        print(f"\nbeta_2 {beta2}: {count[beta2]} collapses in {cells[beta2]} (task, fraction, seed) cells with both methods")


if __name__ == "__main__":
    main(sys.argv[1])
