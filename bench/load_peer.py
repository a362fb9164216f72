"""The peer of replora's model loading (docs/benchmarks.md, Loading): transformers loading the
same model, one process per call, as `replora info --model` loads it in replora.

usage: .venv-bench/bin/python bench/load_peer.py --model-dir DIR [--gguf FILE] [--threads 2]
Prints one JSON line: the seconds of `from_pretrained` alone, the seconds since the process
started (torch's import included), and the process's peak RSS (ru_maxrss).
"""

import argparse
import json
import resource
import time

started = time.perf_counter()
import torch  # noqa: E402
import transformers  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--gguf", help="a GGUF file in --model-dir: load it as a causal LM (transformers dequantizes it)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    before = time.perf_counter()
    if args.gguf:
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model_dir, gguf_file=args.gguf, torch_dtype=torch.float32)
    else:
        model = transformers.AutoModel.from_pretrained(args.model_dir, torch_dtype=torch.float32)
    loaded = time.perf_counter()
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "side": "transformers",
        "model": args.gguf or args.model_dir,
        "params": params,
        "load_s": round(loaded - before, 3),
        "process_s": round(loaded - started, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }))


if __name__ == "__main__":
    main()
