"""A method table from a sweep's results.jsonl: per data, training fraction and method, the
seeds, test accuracy mean +- sd, trainable %, PPT (the paper's accuracy-per-parameter score,
from each run's summary.json), mean wall time per run and the largest peak RSS.

usage: python3 bench/sweep_table.py runs/sweep/vision/results.jsonl [METHOD ...]
Only the named methods are listed, in that order (default: all, in the file's order). Standard
library only.
"""
import json
import os
import statistics
import sys
from collections import OrderedDict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
order = sys.argv[2:] or list(OrderedDict.fromkeys(r["method"] for r in rows))
groups = OrderedDict()
for r in rows:
    if r["method"] in order:
        groups.setdefault((r["data"], r["train_fraction"], r["method"]), []).append(r)


def mean_sd(values):
    values = [100 * v for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


print("| data | train fraction | method | seeds | test accuracy % | trainable params | trainable % | PPT | wall time per run (s) | peak RSS (MiB) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (data, fraction, method), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order.index(kv[0][2]))):
    summaries = [json.load(open(os.path.join(r["run"], "summary.json"))) for r in runs]
    ppt = statistics.mean(s["ppt"] for s in summaries)
    wall = statistics.mean(r["wall_time_s"] for r in runs)
    rss = max(s["peak_rss_mib"] for s in summaries)
    print(f"| {data} | {fraction:g} | {method} | {len(runs)} | {mean_sd([r['test']['accuracy'] for r in runs])} | {runs[0]['trainable_params']} | "
          f"{runs[0]['trainable_percent']:.3f} | {ppt:.2f} | {wall:.0f} | {rss:.0f} |")
