"""Paired differences between the values of one grid flag, per method, from a sweep's rows
(`replora sweep` writes them to runs/sweep/STEM/results.jsonl); `replora sweep`'s own report
pairs methods, this pairs a flag's values (the quantized bases against the f32 base).

Usage: paired_diff.py RESULTS_JSONL --by FLAG --baseline VALUE [--append-md FILE]

Per method and value of --by: test accuracy mean ± sd over seeds, and its difference in points
to the --baseline value at the same seeds (mean with a 95% t interval); peak RSS and training
tokens/s from each run's summary.json (mean over seeds), with the RSS ratio to the baseline.
"""
import argparse
import json
import os
import statistics
import sys

# Two-sided 95% t quantiles by degrees of freedom.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_sd(xs):
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results")
    p.add_argument("--by", required=True, help="the grid flag whose values are compared (quantize)")
    p.add_argument("--baseline", required=True, help="the value the others are paired against (none)")
    p.add_argument("--append-md", help="also append the table to this Markdown file")
    args = p.parse_args()
    try:
        rows = [json.loads(line) for line in open(args.results) if line.strip()]
    except OSError as e:
        sys.exit(f"{args.results}: {e.strerror}")
    cells = {}
    for r in rows:
        value = r["flags"].get(args.by)
        if value is None:
            sys.exit(f"{args.results}: a row without --{args.by.replace('_', '-')}: {r['run']}")
        summary_file = os.path.join(r["run"], "summary.json")
        summary = json.load(open(summary_file)) if os.path.isfile(summary_file) else {}
        cells.setdefault((r["method"], value), {})[r["seed"]] = {
            "accuracy": 100 * r["test"]["accuracy"],
            "rss": summary.get("peak_rss_mib"),
            "tokens": summary.get("train_tokens_per_s"),
        }
    values = sorted({v for _, v in cells}, key=lambda v: (v != args.baseline, v))
    if args.baseline not in values:
        sys.exit(f"{args.results}: no run has --{args.by} {args.baseline}; values: {', '.join(values)}")
    lines = [
        f"| method | --{args.by.replace('_', '-')} | seeds | test accuracy % | vs {args.baseline} (points, 95% CI) | peak RSS MiB | RSS vs {args.baseline} | train tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in sorted({m for m, _ in cells}):
        base = cells.get((method, args.baseline), {})
        for value in values:
            runs = cells.get((method, value))
            if not runs:
                continue
            seeds = sorted(runs)
            acc = mean_sd([runs[s]["accuracy"] for s in seeds])
            diff = "-"
            pairs = [runs[s]["accuracy"] - base[s]["accuracy"] for s in seeds if s in base]
            if value != args.baseline and pairs:
                m, sd = mean_sd(pairs)
                half = T975.get(len(pairs) - 1, 1.96) * sd / len(pairs) ** 0.5 if len(pairs) > 1 else float("nan")
                diff = f"{m:+.1f} [{m - half:+.1f}, {m + half:+.1f}] ({len(pairs)} pairs)"
            rss = [runs[s]["rss"] for s in seeds if runs[s]["rss"]]
            base_rss = [base[s]["rss"] for s in base if base[s]["rss"]]
            tokens = [runs[s]["tokens"] for s in seeds if runs[s]["tokens"]]
            rss_mean = statistics.mean(rss) if rss else None
            ratio = f"{rss_mean / statistics.mean(base_rss):.2f}x" if rss and base_rss else "-"
            lines.append(
                f"| {method} | {value} | {len(seeds)} | {acc[0]:.1f} ± {acc[1]:.1f} | {diff} | "
                f"{f'{rss_mean:.0f}' if rss_mean else '-'} | {ratio} | {f'{statistics.mean(tokens):.0f}' if tokens else '-'} |"
            )
    table = "\n".join(lines)
    print(table)
    if args.append_md:
        with open(args.append_md, "a") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
