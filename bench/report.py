"""Aggregates `replora bench` and `bench/peer.py` results into the benchmark table.

Usage: report.py RESULTS_JSONL [--append-md bench/results.md] [--append-jsonl bench/results.jsonl]

Each input line is one run of one side (replora or pytorch) and method. Per side and method the
median over rounds is taken; replora's RepLoRA is compared with PyTorch's LoRA (PEFT has no
RepLoRA; LoRA is what a user would run instead). Ratios are replora / PyTorch.

FLOPs of a training step (the same formula for both sides): the forward pass costs, per token
and layer, 2 x (multiply-adds of the linears: BERT 4 h^2 + 2 h f; LLaMA 2 h^2 + 2 h kv + 3 h f)
plus 4 t h for attention (scores and context), plus, for a decoder, 2 h V per answer token for
the vocabulary projection; with a frozen base the backward pass computes input gradients only
(about one more forward), a full fine-tune also weight gradients (two more). Adapter FLOPs are
negligible and left out.
"""
import datetime
import os
import statistics
from collections import defaultdict

from common import emit, fmt, git_commit, machine, mib, ratio, read_runs

args, runs = read_runs()
by = defaultdict(list)
for r in runs:
    by[(r["side"], r["method"])].append(r)


def med(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def step_flops(r):
    m, b, t = r["model"], r["batch"], r["seq"]
    h, f, layers = m["hidden"], m["intermediate"], m["layers"]
    if m.get("kind") == "decoder":
        kv = h // m["heads"] * m["kv_heads"]
        linears = 2 * h * h + 2 * h * kv + 3 * h * f  # q, o; k, v; gate, up, down
        head = b * m["answer_tokens"] * 2 * h * m["vocab"]
    else:
        linears = 4 * h * h + 2 * h * f
        head = 0
    forward = b * t * layers * (2 * linears + 4 * t * h) + head
    return forward * (3 if r["method"] == "full" else 2)


def summary(rows):
    out = {k: med(rows, k) for k in ["median_step_s", "train_tokens_per_s", "time_to_first_step_s", "infer_base_tokens_per_s",
                                     "infer_merged_tokens_per_s", "peak_rss_bytes", "peak_device_bytes", "matmul_peak_gflops",
                                     "trainable_params"]}
    out["rounds"] = len(rows)
    out["train_gflops"] = step_flops(rows[0]) / out["median_step_s"] / 1e9
    return out


methods = [m for m in ["lora", "dora", "replora", "full"] if ("replora", m) in by]
first = runs[0]
report = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "machine": machine(),
    "job": {"model": first["model"], "batch": first["batch"], "seq": first["seq"], "rank": first["rank"], "threads": first["threads"]},
    "versions": {side: next((r["versions"] for r in runs if r["side"] == side), {}) for side in ["replora", "pytorch"]},
    "git": git_commit(),
    "methods": {},
}
for m in methods:
    ours = summary(by[("replora", m)])
    peer_method = "lora" if m == "replora" else m
    theirs = summary(by[("pytorch", peer_method)]) if ("pytorch", peer_method) in by else None
    report["methods"][m] = {"replora": ours, "pytorch": theirs, "pytorch_method": peer_method}


def precision_of(quantize, products, autocast):
    """How each side held and multiplied the weights."""
    if quantize == "none" and products == "f32" and not autocast:
        return "f32"
    ours = [] if quantize == "none" else [f"base --quantize {quantize}"]
    ours += [] if products == "f32" else [f"--precision {products}"]
    return f"replora {', '.join(ours) or 'f32'}, PyTorch {'bf16 autocast' if autocast == 'bf16' else 'f32'}"


peak = {side: med([r for r in runs if r["side"] == side], "matmul_peak_gflops") for side in ["replora", "pytorch"]}
job = report["job"]
backend = report["versions"]["replora"].get("backend", "flex (CPU)")
# On a GPU (`scripts/bench --device`) each side's peak device memory joins the table.
on_device = any(r.get("peak_device_bytes") is not None for r in runs)
peer_device = next((r.get("device") for r in runs if r["side"] == "pytorch"), None) or "cpu"
lines = [
    f"### {report['date']} — {os.path.basename(str(job['model'].get('name')).rstrip('/'))} ({job['model'].get('kind', 'encoder')}, "
    f"{job['model']['layers']} layers, hidden {job['model']['hidden']}), batch {job['batch']} x {job['seq']} tokens, rank {job['rank']} "
    f"on {'q_proj,v_proj' if job['model'].get('kind') == 'decoder' else 'query,value'}, {job['threads']} threads, "
    f"{precision_of(job['model'].get('quantize', 'none'), job['model'].get('precision', 'f32'), next((r.get('autocast') for r in runs if r['side'] == 'pytorch'), None))}"
    f"{', activation checkpointing on both sides' if job['model'].get('checkpoint_activations') else ''}",
    "",
    f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, {report['machine']['memory_gib']} GiB, Linux {report['machine']['kernel']}. "
    f"replora {report['versions']['replora'].get('replora')} (burn {report['versions']['replora'].get('burn')}, git {report['git']}); "
    f"PyTorch {report['versions']['pytorch'].get('torch')}, transformers {report['versions']['pytorch'].get('transformers')}, "
    f"PEFT {report['versions']['pytorch'].get('peft')}. Medians over {min(v['replora']['rounds'] for v in report['methods'].values())} alternating rounds.",
    f"Devices: replora on {backend}, PyTorch on {peer_device}. "
    f"Measured f32 matmul peak: replora {fmt(peak['replora'], 1)} GFLOP/s, PyTorch {fmt(peak['pytorch'], 1)} GFLOP/s.",
    "",
    "| method (vs PyTorch) | train tokens/s replora / PyTorch | ratio | train GFLOP/s (% of own peak) replora / PyTorch | peak RSS MiB replora / PyTorch | ratio | "
    + ("peak device MiB replora / PyTorch | ratio | " if on_device else "")
    + "first step s replora / PyTorch | inference tok/s base / merged, replora | base / merged, PyTorch |",
    "|---|---|---|---|---|---|" + ("---|---|" if on_device else "") + "---|---|---|",
]
for m, v in report["methods"].items():
    o, t = v["replora"], v["pytorch"] or {}
    pct = lambda s, side: "-" if s.get("train_gflops") is None or not peak[side] else f"{s['train_gflops']:.1f} ({100 * s['train_gflops'] / peak[side]:.0f}%)"
    lines.append(
        f"| {m} (vs {v['pytorch_method']}) | {fmt(o['train_tokens_per_s'])} / {fmt(t.get('train_tokens_per_s'))} | {ratio(o['train_tokens_per_s'], t.get('train_tokens_per_s'))} "
        f"| {pct(o, 'replora')} / {pct(t, 'pytorch')} | {fmt(mib(o['peak_rss_bytes']))} / {fmt(mib(t.get('peak_rss_bytes')))} | {ratio(o['peak_rss_bytes'], t.get('peak_rss_bytes'))} "
        + (f"| {fmt(mib(o['peak_device_bytes']))} / {fmt(mib(t.get('peak_device_bytes')))} | {ratio(o['peak_device_bytes'], t.get('peak_device_bytes'))} "
           if on_device else "")
        + f"| {fmt(o['time_to_first_step_s'], 2)} / {fmt(t.get('time_to_first_step_s'), 2)} "
        f"| {fmt(o['infer_base_tokens_per_s'])} / {fmt(o['infer_merged_tokens_per_s'])} | {fmt(t.get('infer_base_tokens_per_s'))} / {fmt(t.get('infer_merged_tokens_per_s'))} |"
    )
emit(lines, report, args.append_md, args.append_jsonl)
