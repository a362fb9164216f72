"""The README's decoder table from sweep results: per method, test accuracy % on each task and
over all test questions (mean +- sd over seeds), exact match, trainable %, PPT, train tokens/s and
peak RSS, read from each run's summary.json.

usage: python3 bench/decoder_table.py runs/sweep/decoder/results.jsonl [more results.jsonl ...] [--methods=a,b]
Standard library only.
"""
import json
import statistics
import sys

files = [a for a in sys.argv[1:] if not a.startswith("--")]
order = next((a.split("=", 1)[1].split(",") for a in sys.argv[1:] if a.startswith("--methods=")), None)
runs = {}
for f in files:
    for line in open(f):
        if line.strip():
            r = json.loads(line)
            runs.setdefault(r["method"], []).append(json.load(open(r["run"] + "/summary.json")))


def cell(values, digits=1):
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


tasks = sorted({t["task"] for rs in runs.values() for r in rs for t in r["per_task"]})
print(f"| method | seeds | {' | '.join(tasks)} | all questions | exact match | trainable % | PPT | train tokens/s | peak RSS (MiB) |")
print("|---|---|" + "---|" * (len(tasks) + 6))
for method in order or list(runs):
    rs = runs.get(method, [])
    if not rs:
        continue
    per_task = [cell([next(t["accuracy"] for t in r["per_task"] if t["task"] == name) for r in rs]) for name in tasks]
    tokens = statistics.mean(r["train_tokens_per_s"] for r in rs)
    print(
        f"| {method} | {len(rs)} | {' | '.join(per_task)} | {cell([r['test']['accuracy'] for r in rs])} | "
        f"{cell([r['test']['exact_match'] for r in rs])} | {rs[0]['trainable_percent']:.3f} | {statistics.mean(r['ppt'] for r in rs):.1f} | "
        f"{tokens:.0f} | {max(r['peak_rss_mib'] for r in rs):.0f} |"
    )
