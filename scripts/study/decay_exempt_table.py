"""Issue 28's weight-decay measurement (sweeps/decay-exempt.toml): per cell, validation and test
accuracy with every parameter decayed (false) and with biases, norms, scales and RepLoRA's seeds
exempt (true), and the paired difference (true - false) per method over the cells where both ran.
Usage: python decay_exempt_table.py runs/sweep/decay-exempt/grid.json
"""
import collections
import json
import sys
from pathlib import Path


def main(grid_json):
    runs = collections.defaultdict(dict)
    for cell in json.load(open(grid_json)):
        f = cell["flags"]
        summary = Path(cell["dir"]) / "summary.json"
        if summary.is_file():
            key = (f["data"].removeprefix("bigbench:"), float(f.get("train_fraction", 1)), f["method"], int(f["seed"]))
            runs[key][f["exempt_from_decay"]] = json.load(open(summary))
    print("| task | fraction | method | seed | validation acc. (all decayed / exempt) | test acc. (all decayed / exempt) |")
    print("|---|---|---|---|---|---|")
    diffs = collections.defaultdict(lambda: ([], []))
    for (task, frac, method, seed), m in sorted(runs.items()):
        if set(m) != {"false", "true"}:
            continue
        val = [100 * m[k]["training"]["best_validation"]["accuracy"] for k in ("false", "true")]
        test = [100 * m[k]["test"]["accuracy"] for k in ("false", "true")]
        print(f"| {task} | {frac} | {method} | {seed} | {val[0]:.2f} / {val[1]:.2f} | {test[0]:.2f} / {test[1]:.2f} |")
        diffs[method][0].append(val[1] - val[0])
        diffs[method][1].append(test[1] - test[0])
    print("\n| method | cells | validation, mean paired difference (exempt - all) | test, mean paired difference |")
    print("|---|---|---|---|")
    for method, (val, test) in sorted(diffs.items()):
        print(f"| {method} | {len(val)} | {sum(val) / len(val):+.2f} (range {min(val):+.2f} to {max(val):+.2f}) | {sum(test) / len(test):+.2f} (range {min(test):+.2f} to {max(test):+.2f}) |")


if __name__ == "__main__":
    main(sys.argv[1])
