"""Transformers' reference for tests/gemma3.rs: Gemma 3 270M's logits and greedy answer, read
from the same Q4_K_M GGUF file that `replora fetch gemma3` installs (transformers dequantizes it
with the `gguf` package and runs Gemma3ForCausalLM in float32, eager attention).

Usage: make_gemma3_reference.py GGUF OUT_JSON   (in .venv-bench: scripts/setup-bench)

For a factual prompt it writes the prompt's token ids (transformers' GGUF tokenizer, BOS first),
the 20 largest logits with their token ids at every position, and the 12 greedy tokens that
follow with their text. A few kilobytes, committed, so the test needs no torch.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import transformers

PROMPT = "Q: What is the capital of France?\nA:"
TOP = 20
NEW_TOKENS = 12


def main(gguf: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # transformers reads a GGUF from a directory; link the file in rather than copy 250 MB.
        os.symlink(gguf.resolve(), Path(tmp) / gguf.name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    ids = tokenizer(PROMPT)["input_ids"]
    assert ids[0] == model.config.bos_token_id, ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        generated = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)[0, len(ids) :].tolist()
    top = logits.topk(TOP, dim=-1)
    reference = {
        "prompt": PROMPT,
        "prompt_ids": ids,
        "top_ids": top.indices.tolist(),
        "top_logits": top.values.tolist(),
        "greedy_ids": generated,
        "greedy_text": tokenizer.decode(generated),
        "made_with": {"transformers": transformers.__version__, "torch": torch.__version__, "gguf": gguf.name},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"{PROMPT!r} -> {reference['greedy_text']!r}; ids {ids}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
