"""Issue 27's screen table from a sweep's cells: per (task, fraction, seed, optimizer setting:
AdamW's beta_2, `+clip` with update clipping) LoRA's
and RepLoRA's test macro-F1, the majority-class predictor's macro-F1 (class priors of the whole
task.json, or of the whole JSONL file for a subset), whether RepLoRA collapsed (macro-F1 within
0.05 of the majority's while LoRA's > 0.6) and what the trainer's collapse guard recorded; then
the collapse count per beta_2; then, per method, the paired difference in validation and test
accuracy between each other setting and plain 0.999 over the (task, fraction, seed) cells where both ran
(mean and a 95% t-interval), which is what the default is chosen on; last, RepLoRA minus LoRA
per setting.  Usage: python collapse_table.py runs/sweep/<grid>/grid.json
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


def setting(flags):
    """The optimizer setting a cell runs: its beta_2, with `+clip` for update clipping."""
    beta2 = str(float(flags.get("adam_beta2", 0.999)))
    return beta2 + "+clip" if flags.get("update_clip") == "true" else beta2


def main(grid_json):
    runs = collections.defaultdict(dict)
    for cell in json.load(open(grid_json)):
        f = cell["flags"]
        summary = Path(cell["dir"]) / "summary.json"
        if not summary.is_file():
            continue
        s = json.load(open(summary))
        key = (f["data"], float(f.get("train_fraction", 1)), int(f["seed"]), setting(f))
        runs[key][f["method"]] = s
    print("| task | fraction | seed | optimizer | LoRA macro-F1 | RepLoRA macro-F1 | majority macro-F1 | collapsed? | guard (RepLoRA / LoRA) |")
    print("|---|---|---|---|---|---|---|---|---|")
    count = collections.Counter()
    for (data, frac, seed, opt), m in sorted(runs.items()):
        maj = majority_f1(data)
        task = data.split(":", 1)[1] if data.startswith("bigbench:") else Path(data).stem
        f1 = {k: v["test"]["macro_f1"] for k, v in m.items()}
        guard = {k: (v["training"].get("collapse") or {}).get("step") for k, v in m.items()}
        collapsed = "replora" in f1 and "lora" in f1 and abs(f1["replora"] - maj) <= 0.05 and f1["lora"] > 0.6
        count[opt] += collapsed
        fmt = lambda k: f"{f1[k]:.3f}" if k in f1 else "not run"
        g = lambda k: "-" if k not in guard else (f"step {guard[k]}" if guard[k] else "none")
        print(f"| {task} | {frac} | {seed} | {opt} | {fmt('lora')} | {fmt('replora')} | {maj:.3f} | {'**yes**' if collapsed else 'no'} | {g('replora')} / {g('lora')} |")
    cells = collections.Counter(k[3] for k, m in runs.items() if "lora" in m and "replora" in m)
    for opt in sorted(cells):
        print(f"\n{opt}: {count[opt]} collapses in {cells[opt]} (task, fraction, seed) cells with both methods")
    paired(runs)
    against_lora(runs)


# Two-sided 97.5% quantiles of Student's t for 1-30 degrees of freedom.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def interval(diffs):
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return f"{mean:+.1f} (n = 1)"
    sd = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * sd / n**0.5
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}] (n = {n})"


def learned(runs, data, frac, seed):
    """Whether any run of the (task, fraction, seed) beat the majority predictor by > 0.05
    macro-F1: where none did, every setting ties at the majority and the cell says nothing."""
    maj = majority_f1(data)
    return any(s["test"]["macro_f1"] > maj + 0.05 for (d, f, sd, _), m in runs.items() if (d, f, sd) == (data, frac, seed) for s in m.values())


def paired(runs):
    """Accuracy points at each setting minus at plain 0.999, per method, over cells where both ran:
    all of them, and those where something was learned."""
    print("\n| method | optimizer | cells | validation accuracy, paired difference vs 0.999 | test accuracy, paired difference |")
    print("|---|---|---|---|---|")
    for method in ["lora", "replora"]:
        for opt, which in [(b, w) for b in sorted({k[3] for k in runs} - {"0.999"}) for w in ("all", "learned")]:
            val, test = [], []
            for (data, frac, seed, b), m in runs.items():
                old = runs.get((data, frac, seed, "0.999"), {})
                if b != opt or method not in m or method not in old:
                    continue
                if which == "learned" and not learned(runs, data, frac, seed):
                    continue
                val.append(100 * (m[method]["training"]["best_validation"]["accuracy"] - old[method]["training"]["best_validation"]["accuracy"]))
                test.append(100 * (m[method]["test"]["accuracy"] - old[method]["test"]["accuracy"]))
            if val:
                print(f"| {method} | {opt} | {which} | {interval(val)} | {interval(test)} |")


def against_lora(runs):
    """RepLoRA minus LoRA, per setting, over the learned cells where both ran: the issue's bar
    is that a fix keeps RepLoRA within noise of LoRA where both learn."""
    print("\n| optimizer | RepLoRA - LoRA, validation accuracy | RepLoRA - LoRA, test accuracy |")
    print("|---|---|---|")
    for opt in sorted({k[3] for k in runs}):
        val, test = [], []
        for (data, frac, seed, b), m in runs.items():
            if b == opt and "lora" in m and "replora" in m and learned(runs, data, frac, seed):
                acc = lambda k, split: m[k]["training"]["best_validation"]["accuracy"] if split == "val" else m[k]["test"]["accuracy"]
                val.append(100 * (acc("replora", "val") - acc("lora", "val")))
                test.append(100 * (acc("replora", "test") - acc("lora", "test")))
        if val:
            print(f"| {opt} | {interval(val)} | {interval(test)} |")


if __name__ == "__main__":
    main(sys.argv[1])
