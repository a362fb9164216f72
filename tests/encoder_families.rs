//! The BERT-style encoder families read by `src/models/bert.rs` against transformers, without
//! torch: tiny random RoBERTa (position ids after the padding id 1, one token type, a pooler
//! replora does not read), XLM-RoBERTa (padding id 3) and DistilBERT (its own names and config
//! keys, no token types) models, with transformers' last hidden states for two rows (the second
//! right-padded; every position compared, padded ones too) and with a PEFT LoRA adapter on the
//! family's PEFT targets, all made by `scripts/make-encoder-fixtures`
//! (tests/python/make_encoder_fixtures.py) and committed.

mod support;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use replora::adapters::base_weight::Quantize;
use replora::adapters::{Adaptable, AdapterConfig, Deltas, Method, PeftModel, TargetModules};
use replora::data::tokenize::EncoderInput;
use replora::formats::peft::{self, PeftInfo};
use replora::models::bert::{Bert, Variant};
use replora::models::modernbert::ModernBert;
use replora::models::{Architecture, Family};
use replora::weights::tensors;

const FAMILIES: [(&str, Variant); 3] =
    [("roberta", Variant::Roberta), ("xlm-roberta", Variant::XlmRoberta), ("distilbert", Variant::DistilBert)];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoder-families").join(name)
}

fn input(dir: &Path, device: &Device) -> EncoderInput {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("inputs.json")).unwrap()).unwrap();
    let rows = |key: &str| -> Vec<Vec<f64>> { serde_json::from_value(json[key].clone()).unwrap() };
    let (ids, mask) = (rows("input_ids"), rows("attention_mask"));
    let shape = [ids.len(), ids[0].len()];
    let ints: Vec<i64> = ids.concat().iter().map(|&v| v as i64).collect();
    EncoderInput {
        input_ids: Tensor::from_data(TensorData::new(ints, shape), device),
        // RoBERTa's tokenizers give none; DistilBERT has no table for them.
        token_type_ids: Tensor::zeros(shape, device),
        attention_mask: Tensor::from_data(TensorData::new(mask.concat().iter().map(|&v| v as f32).collect(), shape), device),
    }
}

/// Last hidden states `[batch * t * hidden]` of `model` with `deltas`.
fn hidden(model: &Bert, input: &EncoderInput, deltas: &Deltas) -> Vec<f32> {
    model.forward(input, deltas).into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// The largest difference at any position, relative to the largest expected value.
fn difference(ours: &[f32], expected: &[f32]) -> f32 {
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    support::max_abs_diff(ours, expected) / scale
}

#[test]
fn each_family_is_detected_and_equals_transformers_base_and_with_a_peft_lora_adapter() {
    let device = Device::flex();
    for (name, variant) in FAMILIES {
        let dir = fixture(name);
        let model_dir = dir.join("model");
        assert_eq!(Family::detect(model_dir.to_str().unwrap()), Some(Family::Bert), "{name}");
        assert_eq!(Variant::detect(model_dir.to_str().unwrap()), variant, "{name}");
        let input = input(&dir, &device);
        let (expected, _) = tensors::read(&dir.join("expected.safetensors")).unwrap();
        let model = Bert::load(&model_dir, "", &device).unwrap();
        assert_eq!(model.config.variant(), variant);
        assert!(model.describe().starts_with(&format!("{} encoder", variant.name())), "{}", model.describe());
        assert!(model.pooler.is_none(), "{name}: no pooler is read");

        let base = difference(&hidden(&model, &input, &Deltas::none()), &expected["hidden"].data);
        eprintln!("{name}: base hidden states within {base:.2e} of transformers' (relative)");
        assert!(base < 1e-4, "{name}: base hidden states differ from transformers' by {base} (relative)");

        let adapted = peft::import(model, &dir.join("lora")).unwrap();
        let with_lora = hidden(&adapted.model, &input, &adapted.deltas());
        let lora = difference(&with_lora, &expected["hidden_lora"].data);
        eprintln!("{name}: LoRA hidden states within {lora:.2e} of PEFT's (relative)");
        assert!(lora < 1e-4, "{name}: LoRA hidden states differ from PEFT's by {lora} (relative)");
        let moved = difference(&expected["hidden"].data, &expected["hidden_lora"].data);
        assert!(moved > 1e-2, "{name}: the fixture's adapter must change the hidden states ({moved})");

        // replora's PEFT export of the adapter loads back to the same states.
        let out = tempfile::tempdir().unwrap();
        let info = PeftInfo {
            base_model_name_or_path: model_dir.display().to_string(),
            task_type: Some("FEATURE_EXTRACTION".into()),
            ..PeftInfo::default()
        };
        peft::export(&adapted.adapters, &info, out.path()).unwrap();
        let reloaded = peft::import(Bert::load(&model_dir, "", &device).unwrap(), out.path()).unwrap();
        assert_eq!(hidden(&reloaded.model, &input, &reloaded.deltas()), with_lora, "{name}: the exported adapter reloads to other states");
    }
}

#[test]
fn each_family_saves_and_reloads_bit_exactly() {
    let device = Device::flex();
    for (name, variant) in FAMILIES {
        let dir = fixture(name);
        let model = Bert::load(&dir.join("model"), "", &device).unwrap();
        let out = tempfile::tempdir().unwrap();
        model.save(out.path()).unwrap();
        let reloaded = Bert::load(out.path(), "", &device).unwrap();
        assert_eq!(reloaded.config, model.config, "{name}");
        assert_eq!(reloaded.config.variant(), variant);
        assert_eq!(reloaded.tensors(), model.tensors(), "{name}");
        let input = input(&dir, &device);
        assert_eq!(hidden(&reloaded, &input, &Deltas::none()), hidden(&model, &input, &Deltas::none()), "{name}");
        // The saved config is the family's own, as transformers reads it.
        let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
        let original: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("model/config.json")).unwrap()).unwrap();
        assert_eq!(saved, original, "{name}");
    }
}

/// The default targets are PEFT's for the family (the fixture's adapter was made with them), a
/// classifier's module paths carry transformers' task prefix, and RepLoRA's query/value pair
/// exists in every layer.
#[test]
fn each_family_defaults_to_peft_targets_and_its_task_prefix() {
    let device = Device::flex();
    for (name, variant) in FAMILIES {
        let dir = fixture(name);
        let peft_config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("lora/adapter_config.json")).unwrap()).unwrap();
        let mut peft_targets: Vec<String> = serde_json::from_value(peft_config["target_modules"].clone()).unwrap();
        peft_targets.sort();
        let model = Bert::load_in_task(&dir.join("model"), Quantize::Stored, &device).unwrap();
        assert_eq!(peft_targets, model.targets_of(Method::Lora), "{name}");
        assert!(model.linears().iter().all(|l| l.path.starts_with(variant.task_prefix())), "{name}");
        for method in [Method::Replora, Method::Houlsby, Method::Prefix] {
            let targets = model.targets_of(method).iter().map(|s| s.to_string()).collect();
            let config = AdapterConfig { target_modules: TargetModules::Names(targets), ..AdapterConfig::new(method) };
            let wrapped = PeftModel::new(model.clone(), &config).unwrap();
            let per_layer = if method == Method::Prefix { 1 } else { 2 };
            assert_eq!(wrapped.adapters.targets.len(), per_layer * 2, "{name} {method}");
        }
    }
}

/// RoBERTa's positions start after the padding id: 40 positions with padding id 1 hold 38
/// tokens (3 for XLM-R's padding id 3 leaves 36).
#[test]
fn roberta_inputs_fit_the_positions_after_the_padding_id() {
    let device = Device::flex();
    for (name, fits) in [("roberta", 38), ("xlm-roberta", 36), ("distilbert", 40)] {
        let model = Bert::load(&fixture(name).join("model"), "", &device).unwrap();
        assert_eq!(model.max_positions(), fits, "{name}");
        model.check_fits(fits, None).unwrap();
        let e = model.check_fits(fits + 1, None).unwrap_err().to_string();
        assert!(e.contains(&fits.to_string()), "{name}: {e}");
    }
}

/// RoBERTa's one token-type row is every token's: a second segment's type ids (which its
/// tokenizers do not give, and transformers' RoBERTa would refuse) change nothing.
#[test]
fn roberta_token_types_are_its_one_row() {
    let device = Device::flex();
    for name in ["roberta", "xlm-roberta"] {
        let dir = fixture(name);
        let model = Bert::load(&dir.join("model"), "", &device).unwrap();
        let plain = input(&dir, &device);
        let [b, t] = plain.input_ids.dims();
        let second: Vec<i64> = (0..b * t).map(|i| i64::from(i % t >= t / 2)).collect();
        let typed = EncoderInput { token_type_ids: Tensor::from_data(TensorData::new(second, [b, t]), &device), ..plain.clone() };
        assert_eq!(hidden(&model, &typed, &Deltas::none()), hidden(&model, &plain, &Deltas::none()), "{name}");
    }
}

/// Writes a copy of `name`'s model with `config.json`'s `key` set to `value`.
fn with_config(root: &Path, name: &str, key: &str, value: serde_json::Value) -> PathBuf {
    support::copy_with_config(&fixture(name).join("model"), &root.join(format!("{name}-{key}")), key, value)
}

#[test]
fn unknown_encoders_and_configs_that_contradict_their_weights_are_named() {
    let device = Device::flex();
    let out = tempfile::tempdir().unwrap();
    let electra = with_config(out.path(), "roberta", "model_type", serde_json::json!("electra"));
    assert_eq!(Family::detect(electra.to_str().unwrap()), None);
    let e = Bert::load(&electra, "", &device).unwrap_err().to_string();
    for expected in ["config.json", "model_type \"electra\"", "bert, roberta, xlm-roberta, distilbert", "qwen2", "dinov2"] {
        assert!(e.contains(expected), "{expected:?} in {e}");
    }
    for (name, key, value, tensor) in [
        ("distilbert", "dim", serde_json::json!(48), "embeddings.word_embeddings.weight"),
        ("distilbert", "hidden_dim", serde_json::json!(128), "transformer.layer.0.ffn.lin1.weight"),
        ("distilbert", "n_layers", serde_json::json!(1), "transformer.layer.1."),
        ("roberta", "type_vocab_size", serde_json::json!(2), "embeddings.token_type_embeddings.weight"),
        ("xlm-roberta", "num_hidden_layers", serde_json::json!(3), "encoder.layer.2.attention.self.query.weight"),
    ] {
        let e = Bert::load(&with_config(out.path(), name, key, value), "", &device).unwrap_err().to_string();
        assert!(e.contains(tensor), "{name} {key}: {e}");
    }
    let e = Bert::load(&with_config(out.path(), "roberta", "pad_token_id", serde_json::json!(39)), "", &device).unwrap_err().to_string();
    assert!(e.contains("pad_token_id 39") && e.contains("config.json"), "{e}");
}

/// `replora info` describes each family, and `replora train` fine-tunes the two with a
/// tokenizer (RoBERTa's BPE, DistilBERT's WordPiece) on a tiny dataset with each default target
/// set; RepLoRA's run on DistilBERT adapts `q_lin` and `v_lin`.
#[cfg(feature = "cli")]
#[test]
fn the_cli_describes_and_trains_each_family() {
    let out = tempfile::tempdir().unwrap();
    for (name, variant) in FAMILIES {
        let model = fixture(name).join("model");
        let o = support::replora(&["info", "--model", model.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && text.contains(&format!("{} encoder", variant.name())), "{text}{}", support::stderr(&o));
        let targets = if variant == Variant::DistilBert { "q_lin,v_lin" } else { "query,value" };
        assert!(text.contains(&format!("rank 8 on {targets}")), "{text}");
    }
    let data = out.path().join("data.jsonl");
    support::word_dataset(&data, 3, 10);
    for (name, method) in [("roberta", "lora"), ("distilbert", "replora"), ("modernbert", "replora")] {
        let model = fixture(name).join("model");
        let run = out.path().join(format!("{name}-{method}"));
        let args = [
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--method",
            method,
            "--max-len",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--out",
            run.to_str().unwrap(),
        ];
        let o = support::replora(&args);
        assert!(o.status.success(), "{name} {method}: {}", support::stderr(&o));
        let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        let expected = if name == "distilbert" { ["q_lin", "v_lin"] } else { ["query", "value"] };
        assert_eq!(spec["adapter"]["target_modules"], serde_json::json!(expected), "{spec}");
        let o = support::replora(&["predict", "--run", run.to_str().unwrap(), "--text", "w3 w14 w7"]);
        assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("probability"), "{}", support::stderr(&o));
        if name == "modernbert" {
            // Export writes PEFT's fused module; merge a ModernBERT classifier directory.
            let (peft, merged) = (out.path().join("modern-peft"), out.path().join("modern-merged"));
            let o = support::replora(&["export", "--run", run.to_str().unwrap(), "--out", peft.to_str().unwrap()]);
            assert!(o.status.success(), "export: {}", support::stderr(&o));
            let config = std::fs::read_to_string(peft.join("adapter_config.json")).unwrap();
            assert!(config.contains("Wqkv"), "{config}");
            let o = support::replora(&["merge", "--run", run.to_str().unwrap(), "--out", merged.to_str().unwrap()]);
            assert!(o.status.success(), "merge: {}", support::stderr(&o));
            let config = std::fs::read_to_string(merged.join("config.json")).unwrap();
            assert!(config.contains("\"modernbert\""), "{config}");
        }
    }
}

/// ModernBERT's last hidden states `[batch * t * hidden]` with `deltas`.
fn modern_hidden(model: &ModernBert, input: &EncoderInput, deltas: &Deltas) -> Vec<f32> {
    model.forward(input, deltas).into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// ModernBERT (4 layers, 1 and 3 local with a window of 4, two RoPE bases, fused `Wqkv`,
/// GeGLU, no biases) equals transformers' eager attention, base and with PEFT's LoRA on the
/// fused `Wqkv`, which replora reads split over the query, key and value.
#[test]
fn modernbert_equals_transformers_base_and_with_a_peft_lora_adapter_on_wqkv() {
    let device = Device::flex();
    let dir = fixture("modernbert");
    let model_dir = dir.join("model");
    assert_eq!(Family::detect(model_dir.to_str().unwrap()), Some(Family::Bert));
    let input = input(&dir, &device);
    let (expected, _) = tensors::read(&dir.join("expected.safetensors")).unwrap();
    let model = ModernBert::load(&model_dir, "", &device).unwrap();
    assert!(model.describe().starts_with("ModernBERT encoder, 4 layers (2 local, window 4)"), "{}", model.describe());

    let base = difference(&modern_hidden(&model, &input, &Deltas::none()), &expected["hidden"].data);
    eprintln!("modernbert: base hidden states within {base:.2e} of transformers' (relative)");
    assert!(base < 1e-4, "modernbert: base hidden states differ from transformers' by {base} (relative)");

    let adapted = peft::import(model, &dir.join("lora")).unwrap();
    assert_eq!(adapted.adapters.targets.len(), 12, "Wqkv is its query, key and value in each of 4 layers");
    let with_lora = modern_hidden(&adapted.model, &input, &adapted.deltas());
    let lora = difference(&with_lora, &expected["hidden_lora"].data);
    eprintln!("modernbert: LoRA hidden states within {lora:.2e} of PEFT's (relative)");
    assert!(lora < 1e-4, "modernbert: LoRA hidden states differ from PEFT's by {lora} (relative)");
    let moved = difference(&expected["hidden"].data, &expected["hidden_lora"].data);
    assert!(moved > 1e-2, "the fixture's adapter must change the hidden states ({moved})");

    // Exported fused again (rank 4 on Wqkv, as read), it reads back to the same states.
    let out = tempfile::tempdir().unwrap();
    let info = PeftInfo::default();
    peft::export(&adapted.adapters, &info, out.path()).unwrap();
    let (written, _) = tensors::read(&out.path().join("adapter_model.safetensors")).unwrap();
    let (original, _) = tensors::read(&dir.join("lora/adapter_model.safetensors")).unwrap();
    assert_eq!(written, original, "the exported adapter is PEFT's own");
    let reloaded = peft::import(ModernBert::load(&model_dir, "", &device).unwrap(), out.path()).unwrap();
    assert_eq!(modern_hidden(&reloaded.model, &input, &reloaded.deltas()), with_lora);
}

/// Moves every adapter parameter by a random amount (LoRA's `B` starts at zero).
struct Perturb;

impl burn::module::ModuleMapper for Perturb {
    fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
        param.map(|t| t.clone() + t.random_like(burn::tensor::Distribution::Normal(0.0, 0.3)))
    }
}

/// ModernBERT with replora's own adapter of `method` on the default query/value targets,
/// every factor moved away from its start.
fn modernbert_adapted(method: Method, device: &Device) -> PeftModel<ModernBert> {
    let model = ModernBert::load(&fixture("modernbert").join("model"), "", device).unwrap();
    let targets = model.targets_of(method).iter().map(|s| s.to_string()).collect();
    let config = AdapterConfig { target_modules: TargetModules::Names(targets), r: 2, ..AdapterConfig::new(method) };
    let mut adapted = PeftModel::new(model, &config).unwrap();
    adapted.adapters = burn::module::Module::map(adapted.adapters, &mut Perturb);
    adapted
}

/// replora's LoRA and RepLoRA on the query and value (the parts of `Wqkv`) export as PEFT's
/// one LoRA on `Wqkv` (rank 2r: A stacked, B in the query's and value's rows) and read back
/// to the same states; DoRA on part of `Wqkv` is refused, on all of it it round-trips.
#[test]
fn modernbert_own_adapters_export_fused_and_read_back_equal() {
    let device = Device::flex();
    let dir = fixture("modernbert");
    let input = input(&dir, &device);
    for method in [Method::Lora, Method::Replora] {
        let adapted = modernbert_adapted(method, &device);
        assert_eq!(adapted.adapters.targets.len(), 8, "{method}: the query and value of 4 layers");
        let ours = modern_hidden(&adapted.model, &input, &adapted.deltas());
        let moved = difference(&ours, &modern_hidden(&adapted.model, &input, &Deltas::none()));
        assert!(moved > 1e-2, "{method}: the adapter must change the states ({moved})");
        let out = tempfile::tempdir().unwrap();
        let info = PeftInfo::default();
        peft::export(&adapted.adapters, &info, out.path()).unwrap();
        let (written, _) = tensors::read(&out.path().join("adapter_model.safetensors")).unwrap();
        assert_eq!(written["base_model.model.layers.1.attn.Wqkv.lora_A.weight"].shape, [4, 32], "{method}");
        assert_eq!(written["base_model.model.layers.1.attn.Wqkv.lora_B.weight"].shape, [96, 4], "{method}");
        let key_rows = &written["base_model.model.layers.1.attn.Wqkv.lora_B.weight"].data[32 * 4..64 * 4];
        assert!(key_rows.iter().all(|&v| v == 0.0), "{method}: the key's rows are not adapted");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("adapter_config.json")).unwrap()).unwrap();
        let rank = config["rank_pattern"].get("layers.1.attn.Wqkv").unwrap_or(&config["r"]);
        assert_eq!(rank, 4, "{config}");
        let reloaded = peft::import(ModernBert::load(&dir.join("model"), "", &device).unwrap(), out.path()).unwrap();
        let back = difference(&modern_hidden(&reloaded.model, &input, &reloaded.deltas()), &ours);
        eprintln!("modernbert {method}: exported PEFT adapter reads back within {back:.2e} (relative)");
        assert!(back < 1e-4, "{method}: the exported adapter reads back to states {back} away");
    }
    let dora = modernbert_adapted(Method::Dora, &device);
    let out = tempfile::tempdir().unwrap();
    let info = PeftInfo::default();
    let e = peft::export(&dora.adapters, &info, out.path()).unwrap_err().to_string();
    assert!(e.contains("DoRA") && e.contains("layers.0.attn.Wqkv"), "{e}");
    let model = ModernBert::load(&dir.join("model"), "", &device).unwrap();
    let config = AdapterConfig { target_modules: TargetModules::Names(vec!["Wqkv".into()]), r: 2, ..AdapterConfig::new(Method::Dora) };
    let mut dora = PeftModel::new(model, &config).unwrap();
    assert_eq!(dora.adapters.targets.len(), 12, "Wqkv targets its three parts");
    dora.adapters = burn::module::Module::map(dora.adapters, &mut Perturb);
    let ours = modern_hidden(&dora.model, &input, &dora.deltas());
    peft::export(&dora.adapters, &info, out.path()).unwrap();
    let reloaded = peft::import(ModernBert::load(&dir.join("model"), "", &device).unwrap(), out.path()).unwrap();
    let back = difference(&modern_hidden(&reloaded.model, &input, &reloaded.deltas()), &ours);
    assert!(back < 1e-4, "DoRA on Wqkv reads back to states {back} away");
}

/// A saved ModernBERT is the checkpoint again (`Wqkv` fused, no biases, the same config), and
/// an adapter merged into it and saved reloads to the adapted states.
#[test]
fn modernbert_saves_fused_and_merges() {
    let device = Device::flex();
    let dir = fixture("modernbert");
    let input = input(&dir, &device);
    for (name, prefix) in [("model", ""), ("classifier", "model.")] {
        let model = ModernBert::load(&dir.join(name), prefix, &device).unwrap();
        let out = tempfile::tempdir().unwrap();
        model.save(out.path()).unwrap();
        let (saved, _) = tensors::read(&out.path().join("model.safetensors")).unwrap();
        let (original, _) = tensors::read(&dir.join(name).join("model.safetensors")).unwrap();
        let stored: std::collections::BTreeMap<_, _> = original.into_iter().filter(|(k, _)| !k.starts_with("classifier.")).collect();
        assert_eq!(saved.keys().collect::<Vec<_>>(), stored.keys().collect::<Vec<_>>(), "{name}");
        assert!(saved == stored, "{name}: the saved tensors differ from the checkpoint's");
        let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
        let original: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(name).join("config.json")).unwrap()).unwrap();
        assert_eq!(saved, original, "{name}");
    }
    let adapted = modernbert_adapted(Method::Replora, &device);
    let ours = modern_hidden(&adapted.model, &input, &adapted.deltas());
    let out = tempfile::tempdir().unwrap();
    adapted.merge().unwrap().model.save(out.path()).unwrap();
    let merged = ModernBert::load(out.path(), "", &device).unwrap();
    let back = difference(&modern_hidden(&merged, &input, &Deltas::none()), &ours);
    eprintln!("modernbert: merged and saved RepLoRA within {back:.2e} (relative)");
    assert!(back < 1e-4, "the merged model's states are {back} away");
}

/// A `ModernBertForSequenceClassification` read as replora's classifier (encoder under
/// `model.`, its `head`, the classifier) gives transformers' logits with either pooling.
#[test]
fn modernbert_classifier_logits_equal_transformers() {
    use replora::models::bert::Pooling;
    use replora::models::encoder::Encoder;
    use replora::tasks::heads::{ClassifierModel, SequenceClassifier};
    let device = Device::flex();
    let dir = fixture("modernbert");
    let classifier_dir = dir.join("classifier");
    let input = input(&dir, &device);
    let (expected, _) = tensors::read(&dir.join("expected.safetensors")).unwrap();
    let (weights, file) = (tensors::read(&classifier_dir.join("model.safetensors")).unwrap().0, classifier_dir.join("model.safetensors"));
    for (pooling, key) in [(Pooling::Cls, "logits_cls"), (Pooling::Mean, "logits_mean")] {
        let encoder = Encoder::load_in_task(&classifier_dir, Quantize::Stored, &device).unwrap();
        let head = weights.iter().filter(|(k, _)| k.starts_with("classifier.")).map(|(k, v)| (k.clone(), v.clone())).collect();
        let model = SequenceClassifier::new(PeftModel::full_finetune(encoder), 3, pooling, 0.0, 0).with_head(head, &file).unwrap();
        let logits = model.logits(&input, false).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let d = difference(&logits, &expected[key].data);
        eprintln!("modernbert: {pooling} classifier logits within {d:.2e} of transformers' (relative)");
        assert!(d < 1e-4, "{pooling}: logits differ from transformers' by {d} (relative)");
    }
}
