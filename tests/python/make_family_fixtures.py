"""Builds the model-family fixtures of tests/families.rs with transformers and PEFT.

Usage: make_family_fixtures.py OUT_DIR [FAMILY ...]   (run by scripts/make-family-fixtures in .venv-bench;
FAMILY names limit it to those families)

For each family, a tiny random model (2 layers, width 32) saved as a Hugging Face directory,
fixed inputs (two rows, the second right-padded), transformers' logits for them, and the logits
with a small random PEFT LoRA adapter on q_proj and v_proj (saved beside, in PEFT's layout).
The Qwen2 model is also saved in shards (model-sharded/: model-0000N-of-0000M.safetensors
and model.safetensors.index.json). Each fixture exercises what its family changes: Qwen2's query/key/value biases and tied
embeddings, Qwen3's per-head query/key norms with a head size that is not hidden/heads,
Mistral's sliding window shorter than the inputs, and Gemma 3's (1 + w) norms (four a layer),
scaled embeddings, GeGLU, query scale, and sliding/global layers with two RoPE bases.

Phi-3 (phi3/) fuses the query/key/value projections into `qkv_proj` and the gate/up projections
into `gate_up_proj`; its fixture also has a partial rotary embedding (half of each head) and a
sliding window shorter than the inputs. Its PEFT LoRA (lora/) is on `qkv_proj`, as PEFT names
it, and a second adapter (dora/) is a DoRA on `qkv_proj` and `gate_up_proj` with a rank and an
alpha of its own on `gate_up_proj` (rank_pattern, alpha_pattern) and random magnitudes, so that
splitting the fused B rows and magnitudes is checked; its logits are `logits_dora`.
"""

import json
import sys
from pathlib import Path

import torch
import transformers
import peft
from safetensors.torch import save_file

COMMON = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    hidden_act="silu",
)

FAMILIES = {
    "qwen2": transformers.Qwen2Config(**COMMON, rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False),
    "qwen3": transformers.Qwen3Config(
        **COMMON, rope_theta=5000.0, head_dim=16, tie_word_embeddings=False, attention_bias=False, use_sliding_window=False
    ),
    "mistral": transformers.MistralConfig(**COMMON, rope_theta=10000.0, head_dim=8, sliding_window=4, tie_word_embeddings=False),
    # Sliding-window and global layers with their own RoPE bases, a head size != hidden/heads and
    # a query scale != head_dim^-1/2, so that each shows in the logits.
    "gemma3": transformers.Gemma3TextConfig(
        **{k: v for k, v in COMMON.items() if k not in ("hidden_act", "num_hidden_layers")},
        num_hidden_layers=3,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        sliding_window=4,
        head_dim=16,
        query_pre_attn_scalar=24,
        hidden_activation="gelu_pytorch_tanh",
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        tie_word_embeddings=True,
    ),
    # GQA (2 key-value heads of 4), RoPE on 4 of the 8 dimensions of a head, a 4-token window.
    "phi3": transformers.Phi3Config(
        **COMMON,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        sliding_window=4,
        original_max_position_embeddings=64,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
    ),
}

# PEFT's names for the query and value projections where a family fuses them.
LORA_TARGETS = {"phi3": ["qkv_proj"]}

INPUT_IDS = [[5, 17, 33, 2, 90, 41, 8, 63, 12, 77], [9, 3, 55, 71, 20, 6, 0, 0, 0, 0]]
ATTENTION_MASK = [[1] * 10, [1] * 6 + [0] * 4]


def main(out: Path, only: list[str]) -> None:
    for name, config in FAMILIES.items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.eval()
        # Default initialisation (std 0.02) leaves the logits near zero; larger weights make
        # every part of the forward pass show in them.
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if pname.endswith("norm.weight"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.2 * torch.randn_like(p))
        directory = out / name
        model.save_pretrained(directory / "model", safe_serialization=True)
        if name == "qwen2":
            # The same weights in shards with transformers' index, as a large checkpoint comes.
            model.save_pretrained(directory / "model-sharded", safe_serialization=True, max_shard_size="40KB")
        ids = torch.tensor(INPUT_IDS)
        mask = torch.tensor(ATTENTION_MASK)
        with torch.no_grad():
            base = model(input_ids=ids, attention_mask=mask).logits
        targets = LORA_TARGETS.get(name, ["q_proj", "v_proj"])
        lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, lora_dropout=0.0)
        adapted_model = peft.get_peft_model(model, lora)
        adapted_model.eval()
        with torch.no_grad():
            adapted = adapted_model(input_ids=ids, attention_mask=mask).logits
        adapted_model.save_pretrained(directory / "lora")
        (directory / "lora" / "README.md").unlink()  # PEFT's model-card template
        expected = {"logits": base.contiguous(), "logits_lora": adapted.contiguous()}
        if name == "phi3":
            model = adapted_model.unload()  # the base model again, without the LoRA layers
            expected["logits_dora"] = fused_dora(model, ids, mask, directory / "dora")
        save_file(expected, str(directory / "expected.safetensors"))
        (directory / "inputs.json").write_text(
            json.dumps(
                {
                    "input_ids": INPUT_IDS,
                    "attention_mask": ATTENTION_MASK,
                    "made_with": {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__},
                },
                indent=1,
            )
        )
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters -> {directory}")


def fused_dora(model, ids, mask, directory: Path) -> torch.Tensor:
    """A DoRA on both fused linears, rank 4 on qkv_proj and 2 on gate_up_proj (alpha 8 and 3),
    with magnitudes away from the weight norms, saved to `directory`; its logits."""
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["qkv_proj", "gate_up_proj"],
        rank_pattern={"gate_up_proj": 2},
        alpha_pattern={"gate_up_proj": 3},
        use_dora=True,
        init_lora_weights=False,
        lora_dropout=0.0,
    )
    adapted_model = peft.get_peft_model(model, config)
    adapted_model.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for pname, p in adapted_model.named_parameters():
            if "lora_magnitude_vector" in pname:
                p.mul_(1.0 + 0.3 * torch.randn_like(p))
        logits = adapted_model(input_ids=ids, attention_mask=mask).logits
    adapted_model.save_pretrained(directory)
    (directory / "README.md").unlink()
    return logits.contiguous()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
