"""Converts the tiny family fixtures (tests/fixtures/families/*/model) to GGUF with llama.cpp's
own converter, so that tests/families.rs checks replora's GGUF reader against files written by
the tool users convert with, not by a converter of ours.

Usage: convert_family_ggufs.py FIXTURES_DIR [FAMILY ...]
(run by scripts/make-family-fixtures in .venv-bench, which has torch). llama.cpp's
convert_hf_to_gguf.py, conversion/ and gguf-py/ come from the pinned llama-cpp-python source
distribution on PyPI (it vendors llama.cpp), downloaded once into .cache/, sha256-checked.

The fixtures have no tokenizer (their vocabulary is 96 random ids), so the converter's
tokenizer step is replaced by a placeholder vocabulary of that size; everything the converter
does to the weights and the architecture's metadata is its own. Tensors are written as f32
(`--outtype f32`), so the GGUF logits equal transformers' within float rounding; Phi-3 is also
written as Q8_0 (model-q8_0.gguf), so that its fused matrices are read block-quantized.

Gemma 3 is left out: its converter trims the embedding table to the tokenizer's vocabulary,
which the fixture does not have (Gemma 3's GGUF reading is checked on the real 270M file).
"""

import hashlib
import json
import sys
import tarfile
import types
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

FAMILIES = ["qwen2", "qwen3", "mistral", "phi3"]
# The converter's version: the llama.cpp that llama-cpp-python 0.3.36 vendors.
SDIST = ("llama-cpp-python", "0.3.36", "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e")
CACHE = Path(".cache/llama-cpp-python")


def llama_cpp_sources():
    """The vendored llama.cpp of the pinned source distribution, extracted under CACHE."""
    name, version, sha256 = SDIST
    root = CACHE / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if (root / "convert_hf_to_gguf.py").exists():
        return root
    index = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(index) as response:
        files = json.load(response)["releases"][version]
    sdist = next(f for f in files if f["packagetype"] == "sdist")
    with urllib.request.urlopen(urljoin(index, sdist["url"])) as response:
        data = response.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        sys.exit(f"{name} {version}: the source distribution's sha256 is not the pinned {sha256}")
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / sdist["filename"]
    archive.write_bytes(data)
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    wanted = (prefix + "convert_hf_to_gguf.py", prefix + "conversion/", prefix + "gguf-py/")
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, members=[m for m in tar.getmembers() if m.name.startswith(wanted)], filter="data")
    return root


def placeholder_vocab(self):
    """A token list of the model's vocabulary size (ids only, no merges), in the SentencePiece
    layout llama.cpp reads for `llama`-style vocabularies."""
    size = self.hparams["vocab_size"]
    self.gguf_writer.add_tokenizer_model("llama")
    self.gguf_writer.add_tokenizer_pre("default")
    self.gguf_writer.add_token_list([f"<t{i}>" for i in range(size)])
    self.gguf_writer.add_token_scores([0.0] * size)
    self.gguf_writer.add_token_types([1] * size)


def patch_vocab(base):
    """`set_vocab` replaced on every model instance before the converter calls it (the model
    classes, which override it, are imported only when a model asks for them)."""
    prepare = base.prepare_metadata

    def prepare_with_placeholder(self, *args, **kwargs):
        self.set_vocab = types.MethodType(placeholder_vocab, self)
        return prepare(self, *args, **kwargs)

    base.prepare_metadata = prepare_with_placeholder


def main():
    fixtures = Path(sys.argv[1])
    families = sys.argv[2:] or FAMILIES
    llama_cpp = llama_cpp_sources().resolve()
    sys.path[:0] = [str(llama_cpp), str(llama_cpp / "gguf-py")]
    import convert_hf_to_gguf  # noqa: F401  (registers every model class)
    from conversion.base import TextModel

    patch_vocab(TextModel)
    for family in families:
        model = fixtures / family / "model"
        for outtype in ["f32", "q8_0"] if family == "phi3" else ["f32"]:
            out = fixtures / family / ("model.gguf" if outtype == "f32" else f"model-{outtype}.gguf")
            sys.argv = ["convert_hf_to_gguf.py", str(model), "--outtype", outtype, "--outfile", str(out)]
            convert_hf_to_gguf.main()
            print(f"{family}: {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
