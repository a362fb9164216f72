#!/usr/bin/env python3
"""Writes a BIG-bench classification task, or a seeded random subset of it, as JSONL
({"text", "label"}), for screens that need a large task at a bounded cost.

    scripts/study/bigbench_subset.py TASK N OUT.jsonl [--seed S]

TASK is read from replora's cache (`replora fetch bigbench` puts it at
$REPLORA_CACHE/bigbench/TASK/task.json, default ~/.cache/replora). The label is the choice
with the highest target score, as `--data bigbench:TASK` reads it; examples are shuffled with
Python's `random.Random(S)` (S = 0 by default) and the first N kept. OUT must not exist.
"""
import argparse
import ast
import json
import os
import random
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task")
    p.add_argument("n", type=int)
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    cache = os.environ.get("REPLORA_CACHE", os.path.expanduser("~/.cache/replora"))
    path = os.path.join(cache, "bigbench", a.task, "task.json")
    if not os.path.exists(path):
        sys.exit(f"error: {path} does not exist; run `replora fetch bigbench` first")
    if os.path.exists(a.out):
        sys.exit(f"error: {a.out} exists; this script never overwrites a file")
    examples = json.load(open(path))["examples"]
    if a.n > len(examples):
        sys.exit(f"error: {a.task} has {len(examples)} examples, fewer than {a.n}")
    random.Random(a.seed).shuffle(examples)
    lines = []
    for e in examples[: a.n]:
        scores = e["target_scores"]
        if isinstance(scores, str):
            scores = ast.literal_eval(scores)
        label = max(scores.items(), key=lambda kv: kv[1])[0]
        lines.append(json.dumps({"text": e["input"], "label": label}) + "\n")
    tmp = a.out + ".tmp"
    with open(tmp, "x") as f:
        f.writelines(lines)
    os.rename(tmp, a.out)


if __name__ == "__main__":
    main()
