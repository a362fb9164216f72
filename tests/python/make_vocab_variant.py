"""Writes a GGUF file holding the metadata of another one, with some keys changed, and no tensors:
enough for llama.cpp to load its vocabulary alone (`vocabOnly`) and tokenize with it.

Usage: make_vocab_variant.py SRC.gguf OUT.gguf KEY=VALUE ...
VALUE is JSON (`true`, `"qwen2"`); each KEY must already be in SRC, and keeps its type.

scripts/make-tokenizer-fixtures uses it to give a real vocabulary a pre-tokenizer or a space
prefix that no file the registries carry has (SmolLM2's byte-level BPE read with Qwen2's and
LLaMA 3's pre-tokenizers, Gemma 3's SentencePiece vocabulary with `add_space_prefix`), so that
replora's tokenizer for those settings is checked against llama.cpp's.
"""

import json
import sys

import gguf


def main():
    src, out, changes = sys.argv[1], sys.argv[2], dict(arg.split("=", 1) for arg in sys.argv[3:])
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(out, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = json.loads(changes.pop(key)) if key in changes else field.contents()
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, kind, sub_type=sub)
    if changes:
        sys.exit(f"{src} has no keys {sorted(changes)}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
