"""Writes a copy of a Hugging Face model directory whose floating-point tensors are bf16 or f16,
as `model.to(torch.bfloat16).save_pretrained(...)` writes one (the benchmarks' 16-bit
encoders and ViTs: the registries carry them in f32).

    .venv-bench/bin/python bench/to_16_bit.py IN_DIR OUT_DIR [bf16|f16]

Every file but `model.safetensors` (and hidden files such as replora's asset record) is copied
as it is; the tensors are rounded to nearest.
"""

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


def main(src: str, dst: str, target: str) -> None:
    src_dir, dst_dir = Path(src), Path(dst)
    dst_dir.mkdir(parents=True, exist_ok=True)
    for f in src_dir.iterdir():
        if f.is_file() and f.name != "model.safetensors" and not f.name.startswith("."):
            shutil.copy(f, dst_dir / f.name)
    tensors = load_file(src_dir / "model.safetensors")
    rounded = {k: (v.to(DTYPES[target]) if v.is_floating_point() else v) for k, v in tensors.items()}
    save_file(rounded, dst_dir / "model.safetensors", metadata={"format": "pt"})
    print(f"{dst_dir / 'model.safetensors'}: {len(rounded)} tensors in {target}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or (len(sys.argv) == 4 and sys.argv[3] not in DTYPES):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else "bf16")
