#!/usr/bin/env python3
"""Tables of scripts/study/collapse-hyperbaton's runs (docs/study/collapse.md).

    scripts/study/collapse_hyperbaton_table.py runs/collapse-hyperbaton [--around RUN RUN ...]

First table: per configuration and method, test accuracy and macro-F1 per seed, and the seeds
whose run the collapse guard flagged (training.collapse in summary.json). With --around: the
logged training loss, update norm ||sBA||/||W0||, update spectral ratio and adapter gradient
norm of the named runs at steps 60-180.
"""
import json
import os
import sys
from collections import defaultdict


def runs(root):
    out = {}
    for name in sorted(os.listdir(root)):
        summary = os.path.join(root, name, "summary.json")
        if os.path.exists(summary):
            out[name] = json.load(open(summary))
    return out


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    root, around = args[0], []
    if "--around" in args:
        around = args[args.index("--around") + 1 :]
    table = defaultdict(dict)
    for name, s in runs(root).items():
        config, method, seed = name.rsplit("-", 2)
        table[(config, method)][int(seed)] = s
    print("| configuration | method | validation accuracy per seed | test accuracy per seed | test macro-F1 per seed | collapse flagged (seed: step) |")
    print("|---|---|---|---|---|---|")
    for (config, method), seeds in table.items():
        val = " / ".join(f"{100 * seeds[k]['training']['best_validation']['accuracy']:.1f}" for k in sorted(seeds))
        acc = " / ".join(f"{100 * seeds[k]['test']['accuracy']:.1f}" for k in sorted(seeds))
        f1 = " / ".join(f"{100 * seeds[k]['test']['macro_f1']:.1f}" for k in sorted(seeds))
        flagged = ", ".join(
            f"{k}: {seeds[k]['training']['collapse']['step']}" for k in sorted(seeds) if (seeds[k].get("training") or {}).get("collapse")
        )
        print(f"| {config} | {method} | {val} | {acc} | {f1} | {flagged or 'none'} |")
    if around:
        logs = {}
        for run in around:
            steps = {}
            for line in open(os.path.join(root, run, "metrics.jsonl")):
                d = json.loads(line)
                if "loss" in d and "step" in d:
                    steps[d["step"]] = d
            logs[run] = steps
        print()
        print("| step | " + " | ".join(f"{r}: loss, update, spectral, grad" for r in around) + " |")
        print("|---|" + "---|" * len(around))
        for step in range(60, 181, 10):
            cells = []
            for run in around:
                d = logs[run].get(step)
                grad = d.get("generator_grad_norm", d.get("factor_grad_norm")) if d else None
                cells.append(
                    f"{d['loss']:.3f}, {d['update_norm']:.3f}, {d['update_spectral_ratio']:.2f}, {grad:.3f}" if d else "-"
                )
            print(f"| {step} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
