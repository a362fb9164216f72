"""Writes a copy of a GGUF model whose quantized matrices are re-quantized to Q8_0 (the
decoding benchmark's second format: the registries carry SmolLM2 only as Q4_1).

    .venv/bin/python bench/requantize_gguf.py IN.gguf OUT_DIR/MODEL.Q8_0.gguf

Every Q4_1/Q4_0/Q5_0/Q4_K/Q6_K tensor is dequantized by gguf-py and quantized again to Q8_0
(gguf-py's reference rounding, as llama.cpp's); Q8_0 and f32 tensors and every metadata key
are copied as they are, but `general.file_type`, which says Q8_0 afterwards. The values are the
input's to within Q8_0's rounding: a file for timing, not a better model.
"""

import sys
from pathlib import Path

import gguf
import numpy as np

REQUANTIZED = {
    gguf.GGMLQuantizationType.Q4_0,
    gguf.GGMLQuantizationType.Q4_1,
    gguf.GGMLQuantizationType.Q5_0,
    gguf.GGMLQuantizationType.Q4_K,
    gguf.GGMLQuantizationType.Q6_K,
}


def main(src: str, dst: str) -> None:
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(dst, arch, endianess=reader.endianess)
    for field in reader.fields.values():
        # The architecture and the GGUF.* header fields are the writer's own.
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType.MOSTLY_Q8_0)
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for t in reader.tensors:
        if t.tensor_type in REQUANTIZED:
            values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            blocks = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(t.name, blocks, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"{dst}: {Path(dst).stat().st_size / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
