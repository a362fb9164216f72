"""Aggregates `replora bench --decode` and a peer's results (`bench/decode_peer.py`: transformers,
side "pytorch"; or `bench/decode_llamacpp.mjs`: llama.cpp, side "llama.cpp") into the decoding
table, with the memory-bandwidth floor when the results hold a `bench/membw.c` line.

Usage: decode_report.py RESULTS_JSONL [--weights-bytes N] [--append-md bench/results.md]
                        [--append-jsonl bench/results.jsonl]

Per side and batch size the median over rounds is taken. Ratios are replora's speed over the
peer's (above 1: replora is faster), for time to first token too (the peer's time / replora's).

The floor: at batch 1 one decoding step reads every weight once, so no decoder can produce more
than bandwidth / weight bytes tokens per second (batch times that at batch B, where one step
reads the weights once for B tokens; reads of the KV cache are left out). Weight bytes per side:
the result's own `weight_bytes` when it has one, else --weights-bytes, else the tensor data of
the model's GGUF file (its size less the header). The bandwidth is the median over rounds of
membw's best read of a 512 MiB array with the benchmark's thread count. "Share" is the decoding
speed over that floor.
"""
import datetime
import glob
import os
import statistics
import struct
import sys
from collections import defaultdict

from common import emit, fmt, git_commit, machine, mib, ratio, read_runs

PEERS = {"pytorch": "PyTorch", "llama.cpp": "llama.cpp"}
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_tensor_bytes(path):
    """Bytes of a GGUF file's tensor data: the file size less the header (metadata and tensor
    infos, padded to the alignment)."""
    with open(path, "rb") as f:
        def read(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

        def skip_value(kind):
            if kind == 8:  # string
                f.seek(read("Q"), 1)
            elif kind == 9:  # array: element type, count, elements
                item, n = read("I"), read("Q")
                if item in SCALARS:
                    f.seek(n * struct.calcsize(SCALARS[item]), 1)
                else:
                    for _ in range(n):
                        skip_value(item)
            else:
                f.seek(struct.calcsize(SCALARS[kind]), 1)

        magic, _version, tensors, kvs = struct.unpack("<4sIQQ", f.read(24))
        if magic != b"GGUF":
            sys.exit(f"{path}: not a GGUF file")
        alignment = 32
        for _ in range(kvs):
            key = f.read(read("Q"))
            kind = read("I")
            if key == b"general.alignment":
                alignment = read("I")
            else:
                skip_value(kind)
        for _ in range(tensors):
            f.seek(read("Q"), 1)  # name
            f.seek(8 * read("I") + 4 + 8, 1)  # dimensions, type, offset
        header = -(-f.tell() // alignment) * alignment
    return os.path.getsize(path) - header


def weight_bytes(rows, override):
    """Bytes one decoding step reads for weights on one side (see the module's docstring)."""
    own = next((r["weight_bytes"] for r in rows if r.get("weight_bytes")), None)
    if own or override:
        return own or override
    name = str(rows[0]["model"].get("name"))
    files = glob.glob(os.path.join(name, "*.gguf")) if os.path.isdir(name) else [name]
    return gguf_tensor_bytes(files[0]) if len(files) == 1 and os.path.isfile(files[0]) else None


args, runs = read_runs(lambda p: p.add_argument("--weights-bytes", type=int, help="weight bytes read per decoding step, for sides whose results do not say"))
decodes = [r for r in runs if r.get("job") == "decode"]
peers = sorted({r["side"] for r in decodes} - {"replora"})
if "replora" not in {r["side"] for r in decodes} or len(peers) != 1 or peers[0] not in PEERS:
    sys.exit(f"{args.results}: expected replora's decoding results and one peer's ({' or '.join(PEERS)}), found sides {sorted({r['side'] for r in decodes})}")
peer = peers[0]
sides = ["replora", peer]
by = defaultdict(list)
for r in decodes:
    by[(r["side"], r["batch"])].append(r)
bandwidths = [r["read_gb_per_s"] for r in runs if r.get("job") == "membw"]
bandwidth = statistics.median(bandwidths) if bandwidths else None
weights = {side: weight_bytes([r for r in decodes if r["side"] == side], args.weights_bytes) for side in sides}
KEYS = ["time_to_first_token_s", "prompt_tokens_per_s", "decode_tokens_per_s", "peak_rss_bytes"]


def summary(side, batch):
    rows = by[(side, batch)]
    s = {k: statistics.median(r[k] for r in rows) if rows and all(r.get(k) is not None for r in rows) else None for k in KEYS}
    floor = batch * bandwidth * 1e9 / weights[side] if bandwidth and weights[side] else None
    s["floor_tokens_per_s"] = floor
    s["share_of_floor"] = s["decode_tokens_per_s"] / floor if floor and s["decode_tokens_per_s"] else None
    return s


first = next(r for r in decodes if r["side"] == "replora")
report = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "machine": machine(),
    "job": {"decode": True, "model": first["model"], "prompt_tokens": first["prompt_tokens"], "new_tokens": first["new_tokens"], "threads": first["threads"]},
    "peer": peer,
    "versions": {side: next((r["versions"] for r in decodes if r["side"] == side), {}) for side in sides},
    "git": git_commit(),
    "replora_git": os.environ.get("REPLORA_GIT") or git_commit(),
    "replora_weights": first.get("quantize", "none"),
    "read_gb_per_s": bandwidth,
    "weight_bytes": weights,
    "batches": {b: {side: summary(side, b) for side in sides} for b in sorted({r["batch"] for r in decodes})},
}


job, v, name = report["job"], report["versions"], PEERS[peer]
if peer == "pytorch":
    peer_versions = f"PyTorch {v[peer].get('torch')}, transformers {v[peer].get('transformers')} (`generate`, f32)"
else:
    peer_versions = (f"llama.cpp {v[peer].get('llama.cpp')} through node-llama-cpp {v[peer].get('node-llama-cpp')} "
                     f"({v[peer].get('build')} CPU binary, the GGUF's own quantized weights, one context with a sequence per prompt)")
floor_note = (f"Read bandwidth {bandwidth:.1f} GB/s (bench/membw.c, {job['threads']} threads, median of {len(bandwidths)}); "
              f"weights read per step: replora {fmt(mib(weights['replora']), 1)} MiB, {name} {fmt(mib(weights[peer]), 1)} MiB; "
              "floor = batch x bandwidth / weight bytes, share = decode tok/s / floor." if bandwidth else "No bandwidth measured: no floor.")
lines = [
    f"### {report['date']} — decoding, {os.path.basename(str(job['model'].get('name')).rstrip('/'))}, prompts of {job['prompt_tokens']} tokens, "
    f"{job['new_tokens']} new tokens (greedy, KV cache), {job['threads']} threads, against {name}",
    "",
    f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, {report['machine']['memory_gib']} GiB. "
    f"replora {v['replora'].get('replora')} (git {report['replora_git']}, --quantize {report['replora_weights']}); {peer_versions}. "
    f"Medians over rounds; ratio = replora's speed / {name}'s. {floor_note}",
    "",
    f"| batch | first token s replora / {name} | ratio | prompt tok/s replora / {name} | decode tok/s replora / {name} | ratio "
    f"| bandwidth floor tok/s replora / {name} | share of floor replora / {name} | peak RSS MiB replora / {name} |",
    "|---|---|---|---|---|---|---|---|---|",
]


def share(x):
    return "-" if x is None else f"{100 * x:.0f}%"


for b, s in report["batches"].items():
    o, t = s["replora"], s[peer]
    lines.append(
        f"| {b} | {fmt(o['time_to_first_token_s'], 3)} / {fmt(t['time_to_first_token_s'], 3)} | {ratio(t['time_to_first_token_s'], o['time_to_first_token_s'])} "
        f"| {fmt(o['prompt_tokens_per_s'])} / {fmt(t['prompt_tokens_per_s'])} "
        f"| {fmt(o['decode_tokens_per_s'], 1)} / {fmt(t['decode_tokens_per_s'], 1)} | {ratio(o['decode_tokens_per_s'], t['decode_tokens_per_s'])} "
        f"| {fmt(o['floor_tokens_per_s'])} / {fmt(t['floor_tokens_per_s'])} | {share(o['share_of_floor'])} / {share(t['share_of_floor'])} "
        f"| {fmt(mib(o['peak_rss_bytes']))} / {fmt(mib(t['peak_rss_bytes']))} |"
    )
emit(lines, report, args.append_md, args.append_jsonl)
