//! The LLaMA-style families read by `src/models/llama.rs` against transformers, without torch:
//! tiny random Qwen2 (query/key/value biases, tied embeddings, RoPE base 1e6), Qwen3 (per-head
//! query/key norms, head size 16 != hidden/heads, RoPE base 5000) and Mistral (sliding window 4
//! over 10 tokens) and Gemma 3 ((1 + w) norms around attention and the feed-forward, scaled
//! embeddings, GeGLU, a query scale of its own, sliding-window and global layers with two RoPE
//! bases) models, with transformers' logits for two rows (the second right-padded) and
//! the logits with a PEFT LoRA adapter, all made by `scripts/make-family-fixtures`
//! (tests/python/make_family_fixtures.py) and committed.

mod support;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use replora::adapters::Deltas;
use replora::formats::peft::{self, PeftInfo};
use replora::models::llama::{Llama, Variant};
use replora::models::{Architecture, Family};
use replora::weights::tensors;

const FAMILIES: [(&str, Variant); 4] =
    [("qwen2", Variant::Qwen2), ("qwen3", Variant::Qwen3), ("mistral", Variant::Mistral), ("gemma3", Variant::Gemma3)];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families").join(name)
}

struct Inputs {
    ids: Vec<Vec<i64>>,
    mask: Vec<Vec<f32>>,
}

fn inputs(dir: &Path) -> Inputs {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("inputs.json")).unwrap()).unwrap();
    let rows = |key: &str| -> Vec<Vec<f64>> { serde_json::from_value(json[key].clone()).unwrap() };
    Inputs {
        ids: rows("input_ids").iter().map(|r| r.iter().map(|&v| v as i64).collect()).collect(),
        mask: rows("attention_mask").iter().map(|r| r.iter().map(|&v| v as f32).collect()).collect(),
    }
}

/// Logits `[batch * t * vocab]` of `model` with `deltas`.
fn logits(model: &Llama, inputs: &Inputs, deltas: &Deltas, device: &Device) -> Vec<f32> {
    let (b, t) = (inputs.ids.len(), inputs.ids[0].len());
    let ids = Tensor::<2, Int>::from_data(TensorData::new(inputs.ids.concat(), [b, t]), device);
    let mask = Tensor::<2>::from_data(TensorData::new(inputs.mask.concat(), [b, t]), device);
    let hidden = model.forward(ids, Some(mask), None, deltas);
    model.logits(hidden).into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// The largest difference at real (unpadded) positions, relative to the largest expected logit.
fn difference(ours: &[f32], expected: &[f32], inputs: &Inputs) -> f32 {
    let vocab = expected.len() / inputs.mask.concat().len();
    let real: Vec<bool> = inputs.mask.concat().iter().map(|&m| m > 0.5).collect();
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = 0f32;
    for (i, _) in real.iter().enumerate().filter(|(_, r)| **r) {
        let row = i * vocab..(i + 1) * vocab;
        worst = worst.max(support::max_abs_diff(&ours[row.clone()], &expected[row]));
    }
    worst / scale
}

#[test]
fn each_family_is_detected_and_equals_transformers_base_and_with_a_peft_lora_adapter() {
    let device = Device::flex();
    for (name, variant) in FAMILIES {
        let dir = fixture(name);
        let model_dir = dir.join("model");
        assert_eq!(Family::detect(model_dir.to_str().unwrap()), Some(Family::Llama), "{name}");
        let inputs = inputs(&dir);
        let (expected, _) = tensors::read(&dir.join("expected.safetensors")).unwrap();
        let model = Llama::load(&model_dir, &device).unwrap();
        assert_eq!(model.config.variant(), variant);
        assert!(model.describe().starts_with(&format!("{} decoder", variant.name())), "{}", model.describe());

        let base = difference(&logits(&model, &inputs, &Deltas::none(), &device), &expected["logits"].data, &inputs);
        assert!(base < 1e-4, "{name}: base logits differ from transformers' by {base} (relative)");

        let adapted = peft::import(model, &dir.join("lora")).unwrap();
        let with_lora = logits(&adapted.model, &inputs, &adapted.deltas(), &device);
        let lora = difference(&with_lora, &expected["logits_lora"].data, &inputs);
        assert!(lora < 1e-4, "{name}: LoRA logits differ from PEFT's by {lora} (relative)");
        let moved = difference(&expected["logits"].data, &expected["logits_lora"].data, &inputs);
        assert!(moved > 1e-2, "{name}: the fixture's adapter must change the logits ({moved})");

        // replora's PEFT export of the adapter loads back to the same logits.
        let out = tempfile::tempdir().unwrap();
        let info = PeftInfo {
            base_model_name_or_path: model_dir.display().to_string(),
            task_type: Some("CAUSAL_LM".into()),
            ..PeftInfo::default()
        };
        peft::export(&adapted.adapters, &info, out.path()).unwrap();
        let reloaded = peft::import(Llama::load(&model_dir, &device).unwrap(), out.path()).unwrap();
        let again = logits(&reloaded.model, &inputs, &reloaded.deltas(), &device);
        assert_eq!(again, with_lora, "{name}: the exported adapter reloads to other logits");
    }
}

#[test]
fn each_family_saves_and_reloads_bit_exactly() {
    let device = Device::flex();
    for (name, _) in FAMILIES {
        let dir = fixture(name);
        let model = Llama::load(&dir.join("model"), &device).unwrap();
        let out = tempfile::tempdir().unwrap();
        model.save(out.path()).unwrap();
        let reloaded = Llama::load(out.path(), &device).unwrap();
        assert_eq!(reloaded.config.variant(), model.config.variant());
        assert_eq!(reloaded.tensors(), model.tensors(), "{name}");
        let inputs = inputs(&dir);
        assert_eq!(logits(&reloaded, &inputs, &Deltas::none(), &device), logits(&model, &inputs, &Deltas::none(), &device), "{name}");
    }
}

#[test]
fn unsupported_family_settings_are_named() {
    let device = Device::flex();
    let out = tempfile::tempdir().unwrap();
    for (name, change, expected) in [
        ("qwen2", ("use_sliding_window", serde_json::json!(true)), "use_sliding_window"),
        ("qwen3", ("rope_parameters", serde_json::json!({"rope_type": "yarn", "rope_theta": 1e6})), "rope_type \"yarn\""),
        ("mistral", ("model_type", serde_json::json!("gemma2")), "model_type \"gemma2\""),
        ("gemma3", ("final_logit_softcapping", serde_json::json!(30.0)), "final_logit_softcapping"),
        ("gemma3", ("layer_types", serde_json::json!(["full_attention"])), "layer_types lists 1 layers"),
    ] {
        let dir = out.path().join(name);
        support::copy_dir(&fixture(name).join("model"), &dir);
        let path = dir.join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config[change.0] = change.1;
        std::fs::write(&path, config.to_string()).unwrap();
        let e = Llama::load(&dir, &device).unwrap_err().to_string();
        assert!(e.contains(expected) && e.contains("config.json"), "{name}: {e}");
    }
}

/// A checkpoint in shards (transformers' `save_pretrained` with `max_shard_size`: three
/// `model-0000N-of-00003.safetensors` and `model.safetensors.index.json`) loads to the same model,
/// and a shard that is missing, or that holds other tensors than the index says, is named.
#[test]
fn a_sharded_checkpoint_loads_as_one_and_its_missing_shard_is_named() {
    let device = Device::flex();
    let sharded_dir = fixture("qwen2").join("model-sharded");
    let whole = Llama::load(&fixture("qwen2").join("model"), &device).unwrap();
    let sharded = Llama::load(&sharded_dir, &device).unwrap();
    assert_eq!(sharded.tensors(), whole.tensors());
    let inputs = inputs(&fixture("qwen2"));
    assert_eq!(logits(&sharded, &inputs, &Deltas::none(), &device), logits(&whole, &inputs, &Deltas::none(), &device));

    let out = tempfile::tempdir().unwrap();
    let missing = out.path().join("missing");
    support::copy_dir(&sharded_dir, &missing);
    std::fs::remove_file(missing.join("model-00002-of-00003.safetensors")).unwrap();
    let e = Llama::load(&missing, &device).unwrap_err().to_string();
    assert!(e.contains("shard model-00002-of-00003.safetensors is missing") && e.contains("model.safetensors.index.json"), "{e}");

    let swapped = out.path().join("swapped");
    support::copy_dir(&sharded_dir, &swapped);
    let index = swapped.join("model.safetensors.index.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    json["weight_map"]["model.norm.weight"] = "model-00001-of-00003.safetensors".into();
    std::fs::write(&index, json.to_string()).unwrap();
    let listed_in_3 = std::fs::read_to_string(sharded_dir.join("model.safetensors.index.json")).unwrap();
    assert!(listed_in_3.contains("\"model.norm.weight\": \"model-00003-of-00003.safetensors\""), "the fixture's layout changed");
    let e = Llama::load(&swapped, &device).unwrap_err().to_string();
    assert!(e.contains("tensor model.norm.weight is in model-00003-of-00003.safetensors, but the index lists it in model-00001"), "{e}");
}
