//! The LLaMA-style families read by `src/models/llama.rs` against transformers, without torch:
//! tiny random Qwen2 (query/key/value biases, tied embeddings, RoPE base 1e6), Qwen3 (per-head
//! query/key norms, head size 16 != hidden/heads, RoPE base 5000) and Mistral (sliding window 4
//! over 10 tokens) and Gemma 3 ((1 + w) norms around attention and the feed-forward, scaled
//! embeddings, GeGLU, a query scale of its own, sliding-window and global layers with two RoPE
//! bases) and Phi-3 (fused `qkv_proj` and `gate_up_proj`, held split; RoPE on half of each head;
//! sliding window 4) models, with transformers' logits for two rows (the second right-padded) and
//! the logits with a PEFT LoRA adapter (Phi-3's on `qkv_proj`, and a DoRA on both fused linears),
//! all made by `scripts/make-family-fixtures` (tests/python/make_family_fixtures.py) and committed.

mod support;

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::prelude::*;
use replora::adapters::set::NamedParams;
use replora::adapters::{Adaptable, AdapterConfig, BaseWeight, Deltas, FusedRows, Method, PeftModel, TargetModules};
use replora::formats::peft::{self, PeftInfo};
use replora::models::llama::{Llama, Variant};
use replora::models::{Architecture, Family};
use replora::weights::gguf::Gguf;
use replora::weights::{HostTensor, tensors};

const FAMILIES: [(&str, Variant); 5] = [
    ("qwen2", Variant::Qwen2),
    ("qwen3", Variant::Qwen3),
    ("mistral", Variant::Mistral),
    ("gemma3", Variant::Gemma3),
    ("phi3", Variant::Phi3),
];

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
        eprintln!("{name}: base logits within {base:.1e} of transformers', with the PEFT LoRA {lora:.1e} (relative)");
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
        (
            "phi3",
            ("rope_scaling", serde_json::json!({"type": "longrope", "short_factor": [1.0, 1.0]})),
            "rope_scaling of type \"longrope\"",
        ),
        ("phi3", ("rope_parameters", serde_json::json!({"rope_type": "longrope", "rope_theta": 1e4})), "rope_type \"longrope\""),
        (
            "phi3",
            ("rope_parameters", serde_json::json!({"rope_theta": 1e4, "partial_rotary_factor": 0.4})),
            "partial_rotary_factor 0.4 turns 3",
        ),
        ("phi3", ("resid_pdrop", serde_json::json!(0.1)), "resid_pdrop = 0.1"),
        ("phi3", ("attention_dropout", serde_json::json!(0.1)), "attention_dropout = 0.1"),
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

/// The decoders as llama.cpp's own converter writes them (`model.gguf`, f32, made by
/// `scripts/make-family-fixtures` with the llama.cpp that llama-cpp-python 0.3.36 vendors): Qwen2
/// and Qwen3 under their own architectures (rows not permuted, Qwen2's biases, Qwen3's q/k norms
/// and head size), Phi-3 with its fused `attn_qkv` and `ffn_up`, partial rotary embedding and
/// window, each equal to transformers base and with the PEFT LoRA, and saved as a directory that
/// reads back to the same logits; Mistral, which the converter
/// writes as `llama` (q/k rows permuted, the sliding window dropped, as llama.cpp then runs it),
/// equal to the Hugging Face directory where the window changes nothing.
#[test]
fn each_decoder_converted_by_llama_cpp_loads_from_gguf() {
    let device = Device::flex();
    for name in ["qwen2", "qwen3", "phi3"] {
        let dir = fixture(name);
        let gguf = dir.join("model.gguf");
        assert_eq!(Family::detect(gguf.to_str().unwrap()), Some(Family::Llama), "{name}");
        let model = Llama::load(&gguf, &device).unwrap();
        assert_eq!(model.config.variant(), Llama::load(&dir.join("model"), &device).unwrap().config.variant(), "{name}");
        let (inputs, (expected, _)) = (inputs(&dir), tensors::read(&dir.join("expected.safetensors")).unwrap());
        let base_logits = logits(&model, &inputs, &Deltas::none(), &device);
        let base = difference(&base_logits, &expected["logits"].data, &inputs);
        assert!(base < 1e-4, "{name}: the GGUF's logits differ from transformers' by {base} (relative)");
        // Saved as a Hugging Face directory (what `merge` writes), it reads back as the same family.
        let out = tempfile::tempdir().unwrap();
        model.save(out.path()).unwrap();
        let saved = Llama::load(out.path(), &device).unwrap();
        assert_eq!(saved.config.variant(), model.config.variant(), "{name}");
        assert_eq!(logits(&saved, &inputs, &Deltas::none(), &device), base_logits, "{name}: saved from GGUF and reloaded");
        let adapted = peft::import(model, &dir.join("lora")).unwrap();
        let lora = difference(&logits(&adapted.model, &inputs, &adapted.deltas(), &device), &expected["logits_lora"].data, &inputs);
        assert!(lora < 1e-4, "{name}: the GGUF with the PEFT LoRA differs from PEFT's logits by {lora} (relative)");
        eprintln!("{name}: GGUF logits within {base:.1e} of transformers', with the PEFT LoRA {lora:.1e}");
    }

    let dir = fixture("mistral");
    let window = Llama::load(&dir.join("model"), &device).unwrap().config.sliding_window.unwrap();
    let mut inputs = inputs(&dir);
    inputs.ids.iter_mut().for_each(|row| row.truncate(window));
    inputs.mask.iter_mut().for_each(|row| row.truncate(window));
    let from_gguf = Llama::load(&dir.join("model.gguf"), &device).unwrap();
    assert_eq!(from_gguf.config.variant(), Variant::Llama);
    let from_dir = Llama::load(&dir.join("model"), &device).unwrap();
    let (ours, theirs) = (logits(&from_gguf, &inputs, &Deltas::none(), &device), logits(&from_dir, &inputs, &Deltas::none(), &device));
    let apart = relative(&ours, &theirs);
    assert!(apart < 1e-5, "mistral: the GGUF differs from the directory by {apart}");
    eprintln!("mistral: GGUF logits within {apart:.1e} of the directory's over the first {window} tokens");
}

/// Phi-3 converted to Q8_0: its fused matrices are read block-quantized, each block of rows a
/// quantized linear of its own, and give the logits of the same file widened to f32 (so the
/// blocks are the right rows); those are within Q8_0's rounding of transformers'.
#[test]
fn phi3_quantized_gguf_keeps_its_fused_blocks_quantized() {
    let device = Device::flex();
    let (dir, inputs, expected) = phi3();
    let file = dir.join("model-q8_0.gguf");
    let model = Llama::load(&file, &device).unwrap();
    let attention = &model.layers[0].self_attn;
    for linear in [&attention.q_proj, &attention.k_proj, &attention.v_proj, &model.layers[0].mlp.up_proj] {
        assert!(matches!(linear.weight, BaseWeight::Quantized(_)), "{} is not quantized", linear.path);
    }
    let gguf = Gguf::open(&file).unwrap();
    let config = replora::models::llama::LlamaConfig::from_value(gguf.llama_config().unwrap(), &file).unwrap();
    let widened = Llama::from_tensors(config, &mut gguf.llama_tensors().unwrap(), &file, &device).unwrap();
    let quantized = logits(&model, &inputs, &Deltas::none(), &device);
    let same_values = relative(&quantized, &logits(&widened, &inputs, &Deltas::none(), &device));
    assert!(same_values < 1e-5, "kept quantized and widened to f32, the file gives logits {same_values} apart");
    let rounding = difference(&quantized, &expected["logits"].data, &inputs);
    assert!(rounding > 1e-6 && rounding < 0.1, "Q8_0 logits differ from transformers' by {rounding} (relative)");
    eprintln!("phi3 Q8_0: logits within {same_values:.1e} of the file widened to f32, {rounding:.1e} of transformers'");
}

/// A config that contradicts its weights is refused naming the tensor: head counts that do not
/// fit the projections, a width that does not fit the embedding table, and tied embeddings
/// whose stored output head differs from the table (or untied ones without a head).
#[test]
fn configs_that_contradict_their_weights_name_the_tensor() {
    let device = Device::flex();
    let out = tempfile::tempdir().unwrap();
    for (name, key, value, expected) in [
        ("qwen2", "num_key_value_heads", serde_json::json!(4), "model.layers.0.self_attn.k_proj.weight"),
        ("qwen3", "num_attention_heads", serde_json::json!(2), "model.layers.0.self_attn.q_proj.weight"),
        ("mistral", "hidden_size", serde_json::json!(48), "model.embed_tokens.weight"),
        ("qwen3", "tie_word_embeddings", serde_json::json!(true), "lm_head.weight"),
        ("qwen2", "tie_word_embeddings", serde_json::json!(false), "lm_head.weight"),
    ] {
        let dir = support::copy_with_config(&fixture(name).join("model"), &out.path().join(format!("{name}-{key}")), key, value);
        let e = Llama::load(&dir, &device).unwrap_err().to_string();
        assert!(e.contains(expected), "{name} with {key} changed: {e}");
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

// ---- Phi-3: fused linears held split --------------------------------------------------------

fn phi3() -> (PathBuf, Inputs, std::collections::BTreeMap<String, HostTensor>) {
    let dir = fixture("phi3");
    let inputs = inputs(&dir);
    let (expected, _) = tensors::read(&dir.join("expected.safetensors")).unwrap();
    (dir, inputs, expected)
}

fn relative(a: &[f32], b: &[f32]) -> f32 {
    support::max_abs_diff(a, b) / b.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Every parameter of an adapter replaced by seeded values (a DoRA magnitude scaled by
/// `1 + noise` instead), so that its delta is far from zero without training.
struct Randomize(u64);

impl Randomize {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

impl NamedParams for Randomize {
    fn param<const D: usize>(&mut self, name: &str, param: Param<Tensor<D>>) -> replora::Result<Param<Tensor<D>>> {
        let old = param.val().into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let shape = param.shape().to_vec();
        let values: Vec<f32> =
            old.iter().map(|v| if name.ends_with(".magnitude") { v * (1.0 + 0.3 * self.next()) } else { 0.3 * self.next() }).collect();
        Ok(Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), &param.device())))
    }
}

/// `config` on the Phi-3 fixture with every adapter parameter random.
fn randomized(config: &AdapterConfig, device: &Device) -> PeftModel<Llama> {
    let model = Llama::load(&fixture("phi3").join("model"), device).unwrap();
    let peft = PeftModel::new(model.clone(), config).unwrap();
    PeftModel::from_parts(model, peft.adapters.map_named(&mut Randomize(7)).unwrap())
}

fn lora_config(method: Method, targets: &[&str]) -> AdapterConfig {
    AdapterConfig {
        method: method.defaults(),
        r: 4,
        lora_alpha: 8.0,
        target_modules: TargetModules::Names(targets.iter().map(|t| t.to_string()).collect()),
        ..Default::default()
    }
}

fn causal_lm_info() -> PeftInfo {
    PeftInfo { base_model_name_or_path: "phi3".into(), task_type: Some("CAUSAL_LM".into()), ..PeftInfo::default() }
}

/// Phi-3's `qkv_proj` is read as `q_proj`, `k_proj`, `v_proj` (its rows 0..32, 32..48, 48..64)
/// and `gate_up_proj` as `gate_proj`, `up_proj`; saving joins them into the very tensors of the
/// checkpoint. PEFT names select the blocks: `qkv_proj` all three, `gate_up_proj` both.
#[test]
fn phi3_fused_linears_are_read_as_blocks_and_saved_as_they_were() {
    let device = Device::flex();
    let model_dir = fixture("phi3").join("model");
    let model = Llama::load(&model_dir, &device).unwrap();
    assert!(model.describe().contains("RoPE base 10000 on 4 of 8 head dimensions"), "{}", model.describe());
    let layer0: Vec<(String, usize, Option<FusedRows>)> = model.linears()[..7]
        .iter()
        .map(|l| (l.path.trim_start_matches("model.layers.0.").to_string(), l.d_out(), l.fused.clone()))
        .collect();
    let rows = |module: &str, start: usize, total: usize| Some(FusedRows { module: format!("model.layers.0.{module}"), start, total });
    assert_eq!(
        layer0,
        [
            ("self_attn.q_proj".into(), 32, rows("self_attn.qkv_proj", 0, 64)),
            ("self_attn.k_proj".into(), 16, rows("self_attn.qkv_proj", 32, 64)),
            ("self_attn.v_proj".into(), 16, rows("self_attn.qkv_proj", 48, 64)),
            ("self_attn.o_proj".into(), 32, None),
            ("mlp.gate_proj".into(), 64, rows("mlp.gate_up_proj", 0, 128)),
            ("mlp.up_proj".into(), 64, rows("mlp.gate_up_proj", 64, 128)),
            ("mlp.down_proj".into(), 32, None),
        ]
    );
    let (stored, _) = tensors::read(&model_dir.join("model.safetensors")).unwrap();
    assert_eq!(model.tensors(), stored, "saving must give the checkpoint's own tensors (qkv_proj, gate_up_proj joined)");

    let targets = |names: &[&str]| {
        let peft = PeftModel::new(model.clone(), &lora_config(Method::Lora, names)).unwrap();
        peft.adapters.target_paths().iter().filter(|p| p.starts_with("model.layers.1.")).map(|p| p[15..].to_string()).collect::<Vec<_>>()
    };
    assert_eq!(targets(&["qkv_proj"]), ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]);
    assert_eq!(targets(&["gate_up_proj", "o_proj"]), ["self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj"]);
    assert_eq!(targets(&["q_proj", "v_proj"]), ["self_attn.q_proj", "self_attn.v_proj"]);
    let regex =
        AdapterConfig { target_modules: TargetModules::Regex(r".*\.1\.self_attn\.qkv_proj".into()), ..lora_config(Method::Lora, &[]) };
    let by_regex = PeftModel::new(model.clone(), &regex).unwrap();
    assert_eq!(by_regex.adapters.target_paths().len(), 3, "a regex on the fused path selects its blocks");
    let e = PeftModel::new(model, &lora_config(Method::Lora, &["qkv"])).unwrap_err().to_string();
    assert!(e.contains("model.layers.0.self_attn.qkv_proj (fused"), "the fused names are listed among the modules: {e}");
}

/// PEFT's DoRA on both fused linears (rank 4 on `qkv_proj`, rank 2 and alpha 3 on
/// `gate_up_proj` through rank_pattern / alpha_pattern, random magnitudes) gives PEFT's logits,
/// and replora writes it back as the same file: one `A`, `B` and magnitude per fused linear.
#[test]
fn phi3_peft_dora_on_the_fused_linears_equals_peft_and_is_written_back_unchanged() {
    let device = Device::flex();
    let (dir, inputs, expected) = phi3();
    let adapted = peft::import(Llama::load(&dir.join("model"), &device).unwrap(), &dir.join("dora")).unwrap();
    assert_eq!(adapted.adapters.targets.len(), 10, "q, k, v, gate, up in both layers");
    let ours = logits(&adapted.model, &inputs, &adapted.deltas(), &device);
    let diff = difference(&ours, &expected["logits_dora"].data, &inputs);
    assert!(diff < 1e-4, "DoRA logits differ from PEFT's by {diff} (relative)");
    eprintln!("phi3: PEFT's DoRA on qkv_proj and gate_up_proj within {diff:.1e} of PEFT's logits (relative)");

    let out = tempfile::tempdir().unwrap();
    peft::export(&adapted.adapters, &causal_lm_info(), out.path()).unwrap();
    let (written, _) = tensors::read(&out.path().join("adapter_model.safetensors")).unwrap();
    let (original, _) = tensors::read(&dir.join("dora/adapter_model.safetensors")).unwrap();
    assert_eq!(written, original, "the export differs from PEFT's file");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["target_modules"], serde_json::json!(["qkv_proj", "gate_up_proj"]));
    assert_eq!((config["r"].clone(), config["lora_alpha"].clone()), (serde_json::json!(4), serde_json::json!(8.0)));
    assert_eq!(config["rank_pattern"], serde_json::json!({"gate_up_proj": 2}));
    assert_eq!(config["alpha_pattern"], serde_json::json!({"gate_up_proj": 3.0}));
    assert_eq!(config["use_dora"], true);
}

/// replora's adapters on the split linears (LoRA and RepLoRA on q_proj,v_proj; LoRA with a rank
/// of its own on v_proj and on down_proj; DoRA on all of qkv_proj) are written under PEFT's
/// fused names: q and v together as one LoRA on qkv_proj of rank 2r, zero in the key rows, and
/// read back to the same logits. DoRA on q and v only cannot be written exactly and is refused.
#[test]
fn phi3_adapters_on_the_blocks_are_written_as_fused_peft_modules_and_read_back() {
    let device = Device::flex();
    let (dir, inputs, expected) = phi3();
    let mut patterned = lora_config(Method::Lora, &["q_proj", "v_proj", "down_proj"]);
    patterned.rank_pattern.insert("v_proj".into(), 2);
    for (name, config) in [
        ("lora", lora_config(Method::Lora, &["q_proj", "v_proj"])),
        ("replora", lora_config(Method::Replora, &["q_proj", "v_proj"])),
        ("lora with patterns", patterned),
        ("dora", lora_config(Method::Dora, &["qkv_proj"])),
    ] {
        let peft = randomized(&config, &device);
        let ours = logits(&peft.model, &inputs, &peft.deltas(), &device);
        assert!(difference(&ours, &expected["logits"].data, &inputs) > 1e-2, "{name}: the adapter must change the logits");
        let out = tempfile::tempdir().unwrap();
        peft::export(&peft.adapters, &causal_lm_info(), out.path()).unwrap();
        let (written, _) = tensors::read(&out.path().join("adapter_model.safetensors")).unwrap();
        assert!(written.keys().all(|k| !k.contains(".q_proj.") && !k.contains(".v_proj.")), "{name}: {:?}", written.keys());
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("adapter_config.json")).unwrap()).unwrap();
        let b = &written["base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight"];
        match name {
            "lora" | "replora" => {
                assert_eq!(config["target_modules"], serde_json::json!(["qkv_proj"]), "{name}");
                assert_eq!((config["r"].clone(), config["lora_alpha"].clone()), (serde_json::json!(8), serde_json::json!(16.0)), "{name}");
                assert_eq!(b.shape, [64, 8], "{name}");
                assert!(b.data[32 * 8..48 * 8].iter().all(|v| *v == 0.0), "{name}: the key rows must be zero");
                assert!(b.data[..32 * 4].iter().any(|v| *v != 0.0), "{name}");
            }
            "lora with patterns" => {
                // q at scale 8/4, v at 8/2: one rank-6 LoRA at scale 2, v's B doubled.
                assert_eq!(config["target_modules"], serde_json::json!(["qkv_proj", "down_proj"]));
                assert_eq!((config["r"].clone(), config["lora_alpha"].clone()), (serde_json::json!(6), serde_json::json!(12.0)));
                assert_eq!(config["rank_pattern"], serde_json::json!({"down_proj": 4}));
                assert_eq!(config["alpha_pattern"], serde_json::json!({"down_proj": 8.0}));
                assert_eq!(b.shape, [64, 6]);
            }
            _ => {
                assert_eq!(config["use_dora"], true);
                assert_eq!(written["base_model.model.model.layers.0.self_attn.qkv_proj.lora_magnitude_vector"].shape, [64]);
                assert_eq!(b.shape, [64, 12], "three blocks, each with its own A");
            }
        }
        let reloaded = peft::import(Llama::load(&dir.join("model"), &device).unwrap(), out.path()).unwrap();
        let again = logits(&reloaded.model, &inputs, &reloaded.deltas(), &device);
        let diff = relative(&again, &ours);
        assert!(diff < 1e-5, "{name}: the export reads back to logits {diff} (relative) away");
        eprintln!("{name}: export read back within {diff:.1e}");
        check_in_peft(&dir, out.path(), &ours, &inputs);
    }
    let dora = randomized(&lora_config(Method::Dora, &["q_proj", "v_proj"]), &device);
    let e = peft::export(&dora.adapters, &causal_lm_info(), tempfile::tempdir().unwrap().path()).unwrap_err().to_string();
    assert!(e.contains("DoRA on q_proj, v_proj of model.layers.0.self_attn.qkv_proj cannot be written in PEFT's layout exactly"), "{e}");
}

/// PEFT itself reads the export (a LoRA or DoRA on qkv_proj, with rank_pattern / alpha_pattern
/// where the modules differ) into replora's logits: run where the benchmark's Python environment is
/// (`.venv-bench`, scripts/setup-bench: torch, transformers, PEFT), else skipped with a note.
fn check_in_peft(dir: &Path, export: &Path, ours: &[f32], inputs: &Inputs) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("REPLORA_BENCH_PYTHON").map(PathBuf::from).unwrap_or(root.join(".venv-bench/bin/python"));
    let usable =
        std::process::Command::new(&python).args(["-c", "import torch, transformers, peft"]).output().is_ok_and(|o| o.status.success());
    if !usable {
        eprintln!(
            "skipped PEFT's own reading of the Phi-3 export: {} lacks torch/transformers/peft (scripts/setup-bench)",
            python.display()
        );
        return;
    }
    let (b, t) = (inputs.ids.len(), inputs.ids[0].len());
    let file = export.join("replora_logits.safetensors");
    let ours = HostTensor { shape: vec![b, t, ours.len() / (b * t)], data: ours.to_vec() };
    tensors::write(&file, &std::collections::BTreeMap::from([("logits".to_string(), ours)]), None).unwrap();
    let script = root.join("tests/python/check_fused_peft_export.py");
    let o = std::process::Command::new(&python)
        .env("OMP_NUM_THREADS", "1")
        .arg(script)
        .args([dir.join("model"), export.to_path_buf(), dir.join("inputs.json"), file])
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && report.contains("ok: PEFT"), "PEFT's reading of the export:\n{report}");
    eprintln!("{}", report.trim());
}

/// A LoRA on q_proj,v_proj merged into the Phi-3 fixture and saved is a Phi-3 checkpoint again
/// (qkv_proj, no q_proj), which loads to the adapted logits.
#[test]
fn phi3_merged_and_saved_loads_to_the_adapted_logits() {
    let device = Device::flex();
    let (_, inputs, _) = phi3();
    let peft = randomized(&lora_config(Method::Lora, &["q_proj", "v_proj", "up_proj"]), &device);
    let adapted = logits(&peft.model, &inputs, &peft.deltas(), &device);
    let merged = peft.merge().unwrap();
    let out = tempfile::tempdir().unwrap();
    merged.model.save(out.path()).unwrap();
    let (stored, _) = tensors::read(&out.path().join("model.safetensors")).unwrap();
    assert!(
        stored.contains_key("model.layers.1.self_attn.qkv_proj.weight") && stored.contains_key("model.layers.1.mlp.gate_up_proj.weight")
    );
    assert!(!stored.keys().any(|k| k.contains("q_proj.") || k.contains("gate_proj.")), "{:?}", stored.keys());
    let reloaded = Llama::load(out.path(), &device).unwrap();
    assert_eq!(reloaded.config.variant(), Variant::Phi3);
    let diff = relative(&logits(&reloaded, &inputs, &Deltas::none(), &device), &adapted);
    assert!(diff < 1e-5, "merged and saved: {diff} (relative) from the adapted logits");
}

/// Older Phi-3 configs give `partial_rotary_factor` and `rope_theta` at the top level; without
/// the factor every dimension turns, which changes the logits (the fixture's partial rotary
/// embedding shows in them).
#[test]
fn phi3_reads_the_top_level_partial_rotary_factor() {
    let device = Device::flex();
    let (dir, inputs, expected) = phi3();
    let out = tempfile::tempdir().unwrap();
    for (factor, same) in [(Some(0.5), true), (None, false)] {
        let model_dir = out.path().join(format!("{factor:?}"));
        support::copy_dir(&dir.join("model"), &model_dir);
        let path = model_dir.join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let config_map = config.as_object_mut().unwrap();
        config_map.remove("rope_parameters");
        config_map.insert("rope_theta".into(), serde_json::json!(10000.0));
        if let Some(f) = factor {
            config_map.insert("partial_rotary_factor".into(), serde_json::json!(f));
        }
        std::fs::write(&path, config.to_string()).unwrap();
        let model = Llama::load(&model_dir, &device).unwrap();
        let diff = difference(&logits(&model, &inputs, &Deltas::none(), &device), &expected["logits"].data, &inputs);
        assert_eq!(diff < 1e-4, same, "partial_rotary_factor {factor:?}: {diff}");
    }
}

/// `replora info` on the Phi-3 fixture lists the split linears with their rows of the fused
/// ones, says how to target them, and counts an adapter on `qkv_proj`.
#[cfg(feature = "cli")]
#[test]
fn phi3_info_lists_the_blocks_of_the_fused_linears() {
    let model = fixture("phi3").join("model");
    let o = support::replora(&["info", "--model", model.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", support::stderr(&o));
    for line in [
        "Phi-3 decoder, 2 layers (2 with a 4-token window), hidden 32, 4 heads / 2 key-value heads",
        "model.layers.0.self_attn.q_proj  32 -> 32  (rows 0..32 of model.layers.0.self_attn.qkv_proj)",
        "model.layers.0.self_attn.k_proj  32 -> 16  (rows 32..48 of model.layers.0.self_attn.qkv_proj)",
        "model.layers.1.mlp.up_proj  32 -> 64  (rows 64..128 of model.layers.1.mlp.gate_up_proj)",
        "model.layers.1.self_attn.o_proj  32 -> 32\n",
        "the checkpoint stores gate_up_proj, qkv_proj fused",
        "linear weights: 14 f32, 0.1 MiB (0.1 MiB as f32)",
        "rank 8 on q_proj,v_proj",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Converted as they are read, the fused matrices' blocks of rows too.
    let o = support::replora(&["info", "--model", model.to_str().unwrap(), "--quantize", "q8_0"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("linear weights: 14 q8_0, 0.0 MiB (0.1 MiB as f32)"), "{text}{}", support::stderr(&o));
    let o = support::replora(&["info", "--model", model.to_str().unwrap(), "--rank", "2", "--targets", "qkv_proj"]);
    let text = String::from_utf8_lossy(&o.stdout);
    // LoRA on q, k and v of both layers at rank 2: 2 * 2 * (3 * 32 + 32 + 16 + 16) parameters.
    assert!(
        o.status.success() && text.contains("rank 2 on qkv_proj") && text.contains("lora            640"),
        "{text}{}",
        support::stderr(&o)
    );
}
