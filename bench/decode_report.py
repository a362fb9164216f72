"""Aggregates `replora bench --decode` and `bench/decode_peer.py` results into the decoding table.

Usage: decode_report.py RESULTS_JSONL [--append-md bench/results.md] [--append-jsonl bench/results.jsonl]

Per side and batch size the median over rounds is taken. Ratios are replora's speed over
PyTorch's (above 1: replora is faster), for time to first token too (PyTorch's time / replora's).
"""
import datetime
import os
import statistics
from collections import defaultdict

from common import emit, fmt, git_commit, machine, mib, ratio, read_runs

args, runs = read_runs()
by = defaultdict(list)
for r in runs:
    by[(r["side"], r["batch"])].append(r)
KEYS = ["time_to_first_token_s", "prompt_tokens_per_s", "decode_tokens_per_s", "peak_rss_bytes"]


def summary(rows):
    return {k: statistics.median(r[k] for r in rows) if rows and all(r.get(k) is not None for r in rows) else None for k in KEYS}


first = runs[0]
report = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "machine": machine(),
    "job": {"decode": True, "model": first["model"], "prompt_tokens": first["prompt_tokens"], "new_tokens": first["new_tokens"], "threads": first["threads"]},
    "versions": {side: next((r["versions"] for r in runs if r["side"] == side), {}) for side in ["replora", "pytorch"]},
    "git": git_commit(),
    "batches": {b: {side: summary(by[(side, b)]) for side in ["replora", "pytorch"]} for b in sorted({r["batch"] for r in runs})},
}


job, v = report["job"], report["versions"]
lines = [
    f"### {report['date']} — decoding, {os.path.basename(str(job['model'].get('name')).rstrip('/'))}, prompts of {job['prompt_tokens']} tokens, "
    f"{job['new_tokens']} new tokens (greedy, KV cache), {job['threads']} threads, f32",
    "",
    f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, {report['machine']['memory_gib']} GiB. "
    f"replora {v['replora'].get('replora')} (git {report['git']}); PyTorch {v['pytorch'].get('torch')}, transformers "
    f"{v['pytorch'].get('transformers')} (`generate`). Medians over rounds; ratio = replora's speed / PyTorch's.",
    "",
    "| batch | first token s replora / PyTorch | ratio | prompt tok/s replora / PyTorch | decode tok/s replora / PyTorch | ratio | peak RSS MiB replora / PyTorch |",
    "|---|---|---|---|---|---|---|",
]
for b, sides in report["batches"].items():
    o, t = sides["replora"], sides["pytorch"]
    lines.append(
        f"| {b} | {fmt(o['time_to_first_token_s'], 3)} / {fmt(t['time_to_first_token_s'], 3)} | {ratio(t['time_to_first_token_s'], o['time_to_first_token_s'])} "
        f"| {fmt(o['prompt_tokens_per_s'])} / {fmt(t['prompt_tokens_per_s'])} "
        f"| {fmt(o['decode_tokens_per_s'], 1)} / {fmt(t['decode_tokens_per_s'], 1)} | {ratio(o['decode_tokens_per_s'], t['decode_tokens_per_s'])} "
        f"| {fmt(mib(o['peak_rss_bytes']))} / {fmt(mib(t['peak_rss_bytes']))} |"
    )
emit(lines, report, args.append_md, args.append_jsonl)
