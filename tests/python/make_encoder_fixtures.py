"""Builds the encoder-family fixtures of tests/encoder_families.rs with transformers and PEFT.

Usage: make_encoder_fixtures.py OUT_DIR   (run by scripts/make-encoder-fixtures in .venv-bench)

For RoBERTa, XLM-RoBERTa and DistilBERT, a tiny random model (2 layers, width 32) saved as a
Hugging Face directory, fixed inputs (two rows, the second right-padded with the family's
padding id), transformers' last hidden states for them at every position (padded ones too), and
the hidden states with a small random PEFT LoRA adapter on the family's PEFT default targets
(saved beside, in PEFT's layout). RoBERTa's position ids count from its padding id + 1 and keep
padding tokens at the padding id: the XLM-R fixture pads with id 3 (not RoBERTa's 1) so that
the padding id is read from the config. The RoBERTa and DistilBERT models also carry a tiny
tokenizer.json (BPE, WordPiece; 96 ids at most) trained on the words of the tests' word
dataset ("w0" ... "w45"), so that `replora train` runs on them end to end.

ModernBERT (modernbert/): a tiny random model of 4 layers whose layers 0 and 2 attend globally
and 1 and 3 in a sliding window of 4 (2 tokens each side), with its two RoPE bases, no biases
(transformers' defaults), run with eager attention on a 10-token row and an 8-token row padded
by 2 (so every padded position still has a real key in its window); the hidden states base and
with a PEFT LoRA adapter on the fused `Wqkv`; and a `ModernBertForSequenceClassification` of
the same encoder with a random head, its logits with `classifier_pooling` "cls" and "mean"
(`classifier/`). Usage with a second argument `modernbert` builds only that fixture.
"""

import json
import sys
from pathlib import Path

import peft
import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

VOCAB = 96
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    hidden_act="gelu",
)

# name: (config, PEFT targets, padding id, tokenizer kind)
FAMILIES = {
    "roberta": (transformers.RobertaConfig(**COMMON, pad_token_id=1, bos_token_id=0, eos_token_id=2), ["query", "value"], 1, "bpe"),
    "xlm-roberta": (transformers.XLMRobertaConfig(**COMMON, pad_token_id=3, bos_token_id=0, eos_token_id=2), ["query", "value"], 3, None),
    "distilbert": (
        transformers.DistilBertConfig(
            vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=40, pad_token_id=0, activation="gelu"
        ),
        ["q_lin", "v_lin"],
        0,
        "wordpiece",
    ),
}

ROWS = [[5, 17, 33, 25, 90, 41, 8, 63, 12, 77], [9, 11, 55, 71, 20, 6]]
CORPUS = [" ".join(f"w{(i * 7 + j) % 46}" for j in range(i % 5 + 1)) for i in range(200)]


def tokenizer(kind: str) -> transformers.PreTrainedTokenizerFast:
    """A tiny tokenizer over the test words, as transformers saves one."""
    if kind == "bpe":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials))
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        names = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=specials))
        tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
        names = dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def perturb(model: torch.nn.Module) -> None:
    """Weights larger than the default initialisation's, so every part of the forward shows."""
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname.lower() and pname.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))


MODERNBERT_ROWS = [[2, 17, 33, 25, 90, 41, 8, 63, 12, 3], [2, 11, 55, 71, 20, 6, 44, 3]]


def modernbert(out: Path) -> None:
    torch.manual_seed(0)
    config = transformers.ModernBertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=64,
        global_attn_every_n_layers=2,
        local_attention=4,
        global_rope_theta=160000.0,
        local_rope_theta=10000.0,
        pad_token_id=0,
        cls_token_id=2,
        sep_token_id=3,
        bos_token_id=2,
        eos_token_id=3,
        num_labels=3,
        attn_implementation="eager",
    )
    model = transformers.ModernBertModel(config).eval()
    perturb(model)
    directory = out / "modernbert"
    model.save_pretrained(directory / "model", safe_serialization=True)
    tokenizer("wordpiece").save_pretrained(directory / "model")
    width = max(len(r) for r in MODERNBERT_ROWS)
    input_ids = [r + [0] * (width - len(r)) for r in MODERNBERT_ROWS]
    attention_mask = [[1] * len(r) + [0] * (width - len(r)) for r in MODERNBERT_ROWS]
    ids, mask = torch.tensor(input_ids), torch.tensor(attention_mask)
    classifier = transformers.ModernBertForSequenceClassification(config).eval()
    perturb(classifier)
    classifier.model.load_state_dict(model.state_dict())
    logits = {}
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask).last_hidden_state
        for pooling in ["mean", "cls"]:
            classifier.config.classifier_pooling = pooling
            logits[f"logits_{pooling}"] = classifier(input_ids=ids, attention_mask=mask).logits
    classifier.save_pretrained(directory / "classifier", safe_serialization=True)
    tokenizer("wordpiece").save_pretrained(directory / "classifier")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["Wqkv"], init_lora_weights=False, lora_dropout=0.0)
    adapted_model = peft.get_peft_model(model, lora).eval()
    with torch.no_grad():
        adapted = adapted_model(input_ids=ids, attention_mask=mask).last_hidden_state
    adapted_model.save_pretrained(directory / "lora")
    (directory / "lora" / "README.md").unlink()
    expected = {"hidden": base.contiguous(), "hidden_lora": adapted.contiguous(), **logits}
    save_file(expected, str(directory / "expected.safetensors"))
    made_with = {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__}
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "made_with": made_with}
    (directory / "inputs.json").write_text(json.dumps(inputs, indent=1))
    print(f"modernbert: {sum(p.numel() for p in model.parameters())} parameters -> {directory}")


def main(out: Path) -> None:
    modernbert(out)
    for name, (config, targets, pad, tokenizer_kind) in FAMILIES.items():
        torch.manual_seed(0)
        model = transformers.AutoModel.from_config(config, dtype=torch.float32)
        model.eval()
        # Default initialisation (std 0.02) leaves the states near the embeddings' LayerNorm;
        # larger weights make every part of the forward pass show in them.
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "LayerNorm.weight" in pname or "layer_norm.weight" in pname:
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.2 * torch.randn_like(p))
        directory = out / name
        model.save_pretrained(directory / "model", safe_serialization=True)
        if tokenizer_kind:
            tokenizer(tokenizer_kind).save_pretrained(directory / "model")
        width = max(len(r) for r in ROWS)
        input_ids = [r + [pad] * (width - len(r)) for r in ROWS]
        attention_mask = [[1] * len(r) + [0] * (width - len(r)) for r in ROWS]
        ids, mask = torch.tensor(input_ids), torch.tensor(attention_mask)
        with torch.no_grad():
            base = model(input_ids=ids, attention_mask=mask).last_hidden_state
        lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, lora_dropout=0.0)
        adapted_model = peft.get_peft_model(model, lora)
        adapted_model.eval()
        with torch.no_grad():
            adapted = adapted_model(input_ids=ids, attention_mask=mask).last_hidden_state
        adapted_model.save_pretrained(directory / "lora")
        (directory / "lora" / "README.md").unlink()  # PEFT's model-card template
        save_file({"hidden": base.contiguous(), "hidden_lora": adapted.contiguous()}, str(directory / "expected.safetensors"))
        (directory / "inputs.json").write_text(
            json.dumps(
                {
                    "input_ids": input_ids,
                    "attention_mask": attention_mask,
                    "made_with": {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__},
                },
                indent=1,
            )
        )
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters -> {directory}")


if __name__ == "__main__":
    if sys.argv[2:] == ["modernbert"]:
        modernbert(Path(sys.argv[1]))
    else:
        main(Path(sys.argv[1]))
