"""Writes a copy of a GGUF model whose quantized matrices are re-quantized to Q8_0, F16 or BF16
(the decoding benchmark's other formats: the registries carry SmolLM2 only as Q4_1).

    .venv/bin/python bench/requantize_gguf.py IN.gguf OUT_DIR/MODEL.Q8_0.gguf [q8_0|f16|bf16]

Every quantized tensor of another format than the target is dequantized by gguf-py and
quantized again (gguf-py's reference rounding, as llama.cpp's; f16 by numpy, rounding to
nearest); f32 tensors and every metadata key are copied as they are, but `general.file_type`,
which names the target afterwards. The values are the input's to within the target's rounding:
a file for timing, not a better model.
"""

import sys
from pathlib import Path

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
TARGETS = {
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}
REQUANTIZED = {Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.F16, Q.BF16}


def main(src: str, dst: str, target: str) -> None:
    target_type, file_type = TARGETS[target]
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
            value = int(file_type)
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for t in reader.tensors:
        if t.tensor_type in REQUANTIZED and t.tensor_type != target_type:
            values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            if target_type == Q.F16:
                writer.add_tensor(t.name, values.astype(np.float16))
            else:
                writer.add_tensor(t.name, gguf.quants.quantize(values, target_type), raw_dtype=target_type)
        else:
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"{dst}: {Path(dst).stat().st_size / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or (len(sys.argv) == 4 and sys.argv[3] not in TARGETS):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else "q8_0")
