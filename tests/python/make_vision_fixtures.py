"""Builds the vision-family fixtures of tests/vision_families.rs with transformers and PEFT.

Usage: make_vision_fixtures.py OUT_DIR   (run by scripts/make-vision-fixtures in .venv-bench)

For ViT (`ViTModel`, with its pooler, which replora does not read) and the CLIP vision tower
(`CLIPVisionModel`), a tiny random model (2 layers, width 32, 28 px images in 7 px patches)
saved as a Hugging Face directory, two fixed images (`pixels` in expected.safetensors),
transformers' last hidden states and pooled image features for them (ViT: the CLS token after
the final layernorm, what `ViTForImageClassification` classifies; CLIP: `pooler_output`,
post_layernorm of the CLS token), and the same with a small random PEFT LoRA adapter on the
family's attention query and value (saved beside, in PEFT's layout; transformers 5 names them
`q_proj`, `v_proj` in both families). `clip-full` is a tiny full `CLIPModel` (text tower too):
replora reads its `vision_config` and `vision_model.*` tensors, which must give the vision
tower's outputs.
"""

import json
import sys
from pathlib import Path

import peft
import torch
import transformers
from safetensors.torch import save_file

COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=28, patch_size=7)


def randomize(model: torch.nn.Module) -> None:
    """Default initialisation (std 0.02) hides most of the forward pass; larger weights show it."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))


def outputs(model: torch.nn.Module, pixels: torch.Tensor, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model(pixel_values=pixels)
    hidden = out.last_hidden_state
    pooled = hidden[:, 0] if family == "vit" else out.pooler_output
    return hidden.contiguous(), pooled.contiguous()


def made_with() -> dict:
    return {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__}


def main(out: Path) -> None:
    torch.manual_seed(1)
    pixels = 2.0 * torch.randn(2, 3, COMMON["image_size"], COMMON["image_size"])
    families = {
        "vit": transformers.ViTModel(transformers.ViTConfig(**COMMON)),
        "clip": transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**COMMON)),
    }
    for family, model in families.items():
        randomize(model)
        model.eval()
        directory = out / family
        model.save_pretrained(directory / "model", safe_serialization=True)
        hidden, pooled = outputs(model, pixels, family)
        lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, lora_dropout=0.0)
        adapted = peft.get_peft_model(model, lora)
        adapted.eval()
        hidden_lora, pooled_lora = outputs(adapted, pixels, family)
        adapted.save_pretrained(directory / "lora")
        (directory / "lora" / "README.md").unlink()  # PEFT's model-card template
        expected = {"pixels": pixels, "hidden": hidden, "pooled": pooled, "hidden_lora": hidden_lora, "pooled_lora": pooled_lora}
        save_file(expected, str(directory / "expected.safetensors"))
        (directory / "made_with.json").write_text(json.dumps(made_with(), indent=1))
        print(f"{family}: {sum(p.numel() for p in model.parameters())} parameters -> {directory}")

    # A full CLIP model: its vision tower is what replora reads.
    text = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, max_position_embeddings=16)
    config = transformers.CLIPConfig(text_config=text, vision_config=COMMON, projection_dim=16)
    full = transformers.CLIPModel(config)
    randomize(full)
    full.eval()
    directory = out / "clip-full"
    full.save_pretrained(directory / "model", safe_serialization=True)
    with torch.no_grad():
        vision = full.vision_model(pixel_values=pixels)
    expected = {"pixels": pixels, "hidden": vision.last_hidden_state.contiguous(), "pooled": vision.pooler_output.contiguous()}
    save_file(expected, str(directory / "expected.safetensors"))
    # transformers itself reads the full model's directory as a CLIPVisionModel.
    tower = transformers.CLIPVisionModel.from_pretrained(directory / "model")
    hidden, pooled = outputs(tower.eval(), pixels, "clip")
    assert torch.allclose(hidden, expected["hidden"]) and torch.allclose(pooled, expected["pooled"])
    (directory / "made_with.json").write_text(json.dumps(made_with(), indent=1))
    print(f"clip-full: {sum(p.numel() for p in full.parameters())} parameters -> {directory}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
