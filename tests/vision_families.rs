//! The vision transformers read by `src/models/dinov2.rs` beside DINOv2, against transformers,
//! without torch: tiny random ViT (`ViTModel`, whose pooler replora does not read) and CLIP
//! vision (`CLIPVisionModel`, and a full `CLIPModel` whose vision tower is read) models, with
//! transformers' last hidden states and pooled image features (ViT: the CLS token after the
//! final layernorm; CLIP: `pooler_output`) for two fixed images, base and with a PEFT LoRA
//! adapter made by transformers 5 (modules `q_proj`, `v_proj`), all made by
//! `scripts/make-vision-fixtures` (tests/python/make_vision_fixtures.py) and committed.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use replora::adapters::base_weight::Quantize;
use replora::adapters::{Adaptable, AdapterConfig, Deltas, Method, PeftModel, TargetModules};
use replora::files::read_json;
use replora::formats::peft::{self, PeftInfo};
use replora::models::dinov2::{Dinov2, Variant};
use replora::models::pixels::PixelStatistics;
use replora::models::{Architecture, Family};
use replora::tasks::heads::ClassifierModel;
use replora::tasks::image_classification::{ImageClassifier, ImagePooling};
use replora::weights::{HostTensor, tensors};

const FAMILIES: [(&str, Variant); 2] = [("vit", Variant::Vit), ("clip", Variant::Clip)];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision-families").join(name)
}

fn expected(name: &str) -> BTreeMap<String, HostTensor> {
    tensors::read(&fixture(name).join("expected.safetensors")).unwrap().0
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// Last hidden states and pooled features of `model` on the fixture's images.
fn outputs(model: &Dinov2, pixels: &HostTensor, deltas: &Deltas) -> (Vec<f32>, Vec<f32>) {
    let hidden = model.forward(pixels.to_tensor(&model.embeddings.position.device()), deltas);
    (host(hidden.clone()), host(model.pooled(hidden)))
}

/// The largest difference, relative to the largest expected value.
fn difference(ours: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(ours.len(), expected.len());
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    support::max_abs_diff(ours, expected) / scale
}

/// PEFT export settings for transformers 5's module names of `variant`.
fn peft_info(model_dir: &Path, variant: Variant) -> PeftInfo {
    let rename = variant.transformers_5_names().iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    PeftInfo { base_model_name_or_path: model_dir.display().to_string(), rename, ..PeftInfo::default() }
}

#[test]
fn each_family_is_detected_and_equals_transformers_base_and_with_a_peft_lora_adapter() {
    let device = Device::flex();
    for (name, variant) in FAMILIES {
        let (dir, expected) = (fixture(name), expected(name));
        let model_dir = dir.join("model");
        assert_eq!(Family::detect(model_dir.to_str().unwrap()), Some(Family::Dinov2), "{name}");
        let model = Dinov2::load(&model_dir, "", &device).unwrap();
        assert_eq!(model.variant(), variant);
        assert!(model.describe().starts_with(variant.name()), "{}", model.describe());

        let (hidden, pooled) = outputs(&model, &expected["pixels"], &Deltas::none());
        let (base_hidden, base_pooled) = (difference(&hidden, &expected["hidden"].data), difference(&pooled, &expected["pooled"].data));
        eprintln!("{name}: base hidden states within {base_hidden:.2e}, pooled within {base_pooled:.2e} of transformers' (relative)");
        assert!(base_hidden < 1e-4 && base_pooled < 1e-4, "{name}: base outputs differ from transformers' by {base_hidden}, {base_pooled}");

        let adapted = peft::import_renamed(model, &dir.join("lora"), variant.transformers_5_names()).unwrap();
        assert_eq!(adapted.adapters.targets.len(), 4, "{name}: query and value of 2 layers");
        let (hidden, pooled) = outputs(&adapted.model, &expected["pixels"], &adapted.deltas());
        let (lora_hidden, lora_pooled) =
            (difference(&hidden, &expected["hidden_lora"].data), difference(&pooled, &expected["pooled_lora"].data));
        eprintln!("{name}: LoRA hidden states within {lora_hidden:.2e}, pooled within {lora_pooled:.2e} of PEFT's (relative)");
        assert!(lora_hidden < 1e-4 && lora_pooled < 1e-4, "{name}: LoRA outputs differ from PEFT's by {lora_hidden}, {lora_pooled}");
        let moved = difference(&expected["pooled"].data, &expected["pooled_lora"].data);
        assert!(moved > 1e-2, "{name}: the fixture's adapter must change the outputs ({moved})");

        // replora's PEFT export of the adapter, in transformers 5's names, loads back the same.
        let out = tempfile::tempdir().unwrap();
        peft::export(&adapted.adapters, &peft_info(&model_dir, variant), out.path()).unwrap();
        let (keys, _) = tensors::read(&out.path().join("adapter_model.safetensors")).unwrap();
        let first_query = if variant == Variant::Vit { "layers.0.attention.q_proj" } else { "encoder.layers.0.self_attn.q_proj" };
        assert!(keys.contains_key(&format!("base_model.model.{first_query}.lora_A.weight")), "{name}: {:?}", keys.keys());
        let reloaded =
            peft::import_renamed(Dinov2::load(&model_dir, "", &device).unwrap(), out.path(), variant.transformers_5_names()).unwrap();
        assert_eq!(
            outputs(&reloaded.model, &expected["pixels"], &reloaded.deltas()),
            (hidden, pooled),
            "{name}: the export reloads to other outputs"
        );
    }
}

/// A classifier whose adapter and head moved off their init (a few AdamW steps).
fn trained(model: Dinov2, method: Method, pooling: ImagePooling, input: &Tensor<4>) -> ImageClassifier {
    let targets = model.targets_of(method).iter().map(|t| t.to_string()).collect();
    let config = AdapterConfig { method: method.defaults(), r: 2, target_modules: TargetModules::Names(targets), ..Default::default() };
    support::trained_image_classifier(model, &config, pooling, input)
}

/// replora's own PEFT export of a trained LoRA and of a trained RepLoRA (as the LoRA it
/// materializes to), read back into the base model, gives the adapted model's outputs.
#[test]
fn exports_of_trained_lora_and_replora_read_back_equal() {
    let device = Device::flex().autodiff();
    for (name, variant) in FAMILIES {
        let model_dir = fixture(name).join("model");
        let pixels = expected(name)["pixels"].to_tensor::<4>(&device);
        let base = Dinov2::load(&model_dir, "", &device).unwrap();
        for method in [Method::Lora, Method::Replora] {
            let classifier = trained(base.clone(), method, ImagePooling::Cls, &pixels);
            let peft_model = &classifier.backbone;
            let adapted = host(peft_model.model.pooled(peft_model.model.forward(pixels.clone(), &peft_model.deltas())));
            let untouched = host(base.pooled(base.forward(pixels.clone(), &Deltas::none())));
            assert!(difference(&adapted, &untouched) > 1e-4, "{name} {method}: training left the adapter at zero");
            let out = tempfile::tempdir().unwrap();
            peft::export(&peft_model.adapters, &peft_info(&model_dir, variant), out.path()).unwrap();
            let reloaded = peft::import_renamed(base.clone(), out.path(), variant.transformers_5_names()).unwrap();
            let back = host(reloaded.model.pooled(reloaded.model.forward(pixels.clone(), &reloaded.deltas())));
            let diff = difference(&back, &adapted);
            eprintln!("{name} {method}: exported and read back within {diff:.1e} (relative)");
            assert!(diff < 1e-5, "{name} {method}: the export reads back {diff} off");
        }
    }
}

#[test]
fn each_family_saves_merges_and_reloads_equal() {
    let device = Device::flex().autodiff();
    for (name, variant) in FAMILIES {
        let model_dir = fixture(name).join("model");
        let pixels = expected(name)["pixels"].clone();
        let model = Dinov2::load(&model_dir, "", &device).unwrap();
        let out = tempfile::tempdir().unwrap();
        model.save(out.path()).unwrap();
        let reloaded = Dinov2::load(out.path(), "", &device).unwrap();
        assert_eq!((&reloaded.config, reloaded.tensors()), (&model.config, model.tensors()), "{name}");
        assert_eq!(outputs(&reloaded, &pixels, &Deltas::none()), outputs(&model, &pixels, &Deltas::none()), "{name}");
        let read = |p: &Path| read_json::<serde_json::Value>(&p.join("config.json")).unwrap();
        assert_eq!(read(out.path()), read(&model_dir), "{name}: the saved config is the family's own");

        // A trained classifier merged and written as transformers reads it: the tower (with
        // the task prefix) and the head give the unmerged logits.
        let input = pixels.to_tensor::<4>(&device);
        let in_task = Dinov2::load_in_task(&model_dir, Quantize::Stored, &device).unwrap();
        assert!(in_task.linears().iter().all(|l| l.path.starts_with(variant.task_prefix())), "{name}");
        let classifier = trained(in_task, Method::Lora, ImagePooling::Cls, &input);
        let unmerged = host(classifier.logits(&input, false));
        let merged_dir = out.path().join("merged");
        classifier.save_merged(&merged_dir, &["a".into(), "b".into(), "c".into()]).unwrap();
        let config = read(&merged_dir);
        // It carries the image processor of the images it was trained on: the tower's pixel
        // statistics, the shorter side resized to the run's size and the centre crop.
        let classifier_pixels = classifier.backbone.model.pixels;
        assert_eq!(PixelStatistics::read(&merged_dir).unwrap(), Some(classifier_pixels), "{name}: the merged processor's statistics");
        let processor: serde_json::Value = read_json(&merged_dir.join("preprocessor_config.json")).unwrap();
        let size = classifier.backbone.model.config.image_size;
        assert_eq!(
            (&processor["size"]["shortest_edge"], &processor["crop_size"]["width"]),
            (&serde_json::json!(size), &serde_json::json!(size)),
            "{name}"
        );
        let head_file = if variant == Variant::Clip { merged_dir.join("head.safetensors") } else { merged_dir.join("model.safetensors") };
        let head = tensors::read(&head_file).unwrap().0;
        let merged = Dinov2::load_in_task(&merged_dir, Quantize::Stored, &device).unwrap();
        let (w, b) = (head["classifier.weight"].clone(), head["classifier.bias"].clone());
        assert_eq!(w.shape, [3, 32], "{name}: the head reads the pooled feature only");
        // The classifier takes ImageNet-normalized batches; transformers' merged model, the
        // family's own pixels from its image processor.
        let family_pixels = merged.pixels.from_imagenet(input.clone());
        let logits = merged.pooled(merged.forward(family_pixels, &Deltas::none())).matmul(w.transpose().to_tensor(&device))
            + b.to_tensor::<1>(&device).unsqueeze();
        let diff = difference(&host(logits), &unmerged);
        eprintln!("{name}: merged {} within {diff:.1e} of the unmerged logits", config["architectures"][0]);
        assert!(diff < 1e-5, "{name}: merged logits differ by {diff}");
        let architecture = if variant == Variant::Vit { "ViTForImageClassification" } else { "CLIPVisionModel" };
        assert_eq!(config["architectures"][0], architecture);
    }
}

/// ViTForImageClassification classifies the CLS token alone: a CLS + mean head is refused.
#[test]
fn a_vit_cls_mean_head_has_no_transformers_layout() {
    let device = Device::flex().autodiff();
    let model = Dinov2::load_in_task(&fixture("vit").join("model"), Quantize::Stored, &device).unwrap();
    let classifier = ImageClassifier::new(PeftModel::new(model, &AdapterConfig::default()).unwrap(), 3, ImagePooling::ClsMean, 1);
    let e = classifier.hf_head_tensors().unwrap_err().to_string();
    assert!(e.contains("ViTForImageClassification") && e.contains("--image-pooling cls"), "{e}");
}

/// replora's image batches are ImageNet-normalized (DINOv2's statistics); a ViT or CLIP
/// classifier sees them normalized as its own image processor does (transformers' defaults:
/// 0.5 / 0.5 for ViT, OpenAI's for CLIP; a checkpoint's `preprocessor_config.json` over them),
/// so its logits are those of the tower on the family's pixels, which transformers computes.
#[test]
fn a_classifier_feeds_its_tower_pixels_normalized_as_its_family_does() {
    let device = Device::flex();
    let out = tempfile::tempdir().unwrap();
    // Two images of `side` x `side` pixels in [0, 1], normalized with `stats`.
    let normalized = |stats: PixelStatistics, side: usize| -> Tensor<4> {
        let plane = side * side;
        let values: Vec<f32> = (0..2 * 3 * plane)
            .map(|i| (((i * 37) % 256) as f32 / 255.0 - stats.mean[(i / plane) % 3]) / stats.std[(i / plane) % 3])
            .collect();
        Tensor::<1>::from_floats(values.as_slice(), &device).reshape([2, 3, side, side])
    };
    let own = PixelStatistics { mean: [0.3, 0.4, 0.5], std: [0.2, 0.3, 0.4] };
    let with_processor = out.path().join("clip-own");
    support::copy_dir(&fixture("clip").join("model"), &with_processor);
    let processor = serde_json::json!({"image_mean": own.mean, "image_std": own.std});
    std::fs::write(with_processor.join("preprocessor_config.json"), processor.to_string()).unwrap();
    for (dir, stats) in [
        (fixture("vit").join("model"), PixelStatistics::HALF),
        (fixture("clip").join("model"), PixelStatistics::CLIP),
        (with_processor, own),
    ] {
        let model = Dinov2::load_in_task(&dir, Quantize::Stored, &device).unwrap();
        assert_eq!(model.pixels, stats, "{}", dir.display());
        let side = model.config.image_size;
        let targets = model.targets_of(Method::Lora).iter().map(|t| t.to_string()).collect();
        let lora = AdapterConfig { target_modules: TargetModules::Names(targets), ..AdapterConfig::default() };
        let classifier = ImageClassifier::new(PeftModel::new(model, &lora).unwrap(), 3, ImagePooling::Cls, 1);
        let logits = host(classifier.logits(&normalized(PixelStatistics::IMAGENET, side), false));
        let tower = &classifier.backbone.model;
        let pooled = tower.pooled(tower.forward(normalized(stats, side), &Deltas::none()));
        let expected = host(classifier.head.forward(pooled, &Deltas::none()));
        let apart = support::max_abs_diff(&logits, &expected);
        assert!(apart < 1e-4, "{}: {apart}", dir.display());
        let imagenet = tower.pooled(tower.forward(normalized(PixelStatistics::IMAGENET, side), &Deltas::none()));
        let unconverted = host(classifier.head.forward(imagenet, &Deltas::none()));
        assert!(support::max_abs_diff(&logits, &unconverted) > 1e-3, "{}: the statistics change nothing here", dir.display());
    }
}

#[test]
fn a_full_clip_directory_is_read_as_its_vision_tower() {
    let device = Device::flex();
    let (dir, expected) = (fixture("clip-full"), expected("clip-full"));
    assert_eq!(Family::detect(dir.join("model").to_str().unwrap()), Some(Family::Dinov2));
    let model = Dinov2::load(&dir.join("model"), "", &device).unwrap();
    assert_eq!(model.variant(), Variant::Clip);
    let (hidden, pooled) = outputs(&model, &expected["pixels"], &Deltas::none());
    let diff = difference(&hidden, &expected["hidden"].data).max(difference(&pooled, &expected["pooled"].data));
    eprintln!("clip-full: within {diff:.2e} of transformers' vision tower (relative)");
    assert!(diff < 1e-4, "clip-full: {diff}");
    let out = tempfile::tempdir().unwrap();
    model.save(out.path()).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
    assert_eq!((saved["model_type"].as_str(), saved["architectures"][0].as_str()), (Some("clip_vision_model"), Some("CLIPVisionModel")));
}

/// Writes a copy of `name`'s model with `config.json`'s `key` set to `value`.
fn with_config(root: &Path, name: &str, key: &str, value: serde_json::Value) -> PathBuf {
    support::copy_with_config(&fixture(name).join("model"), &root.join(format!("{name}-{key}")), key, value)
}

#[test]
fn unknown_towers_and_configs_that_contradict_their_weights_are_named() {
    let device = Device::flex();
    let out = tempfile::tempdir().unwrap();
    let siglip = with_config(out.path(), "clip", "model_type", serde_json::json!("siglip_vision_model"));
    assert_eq!(Family::detect(siglip.to_str().unwrap()), None);
    let e = Dinov2::load(&siglip, "", &device).unwrap_err().to_string();
    for expected in ["config.json", "siglip_vision_model", "dinov2, vit, clip_vision_model, clip", "qwen2"] {
        assert!(e.contains(expected), "{expected:?} in {e}");
    }
    for (name, key, value, expected) in [
        ("vit", "hidden_act", serde_json::json!("quick_gelu"), "hidden_act \"quick_gelu\""),
        ("clip", "hidden_act", serde_json::json!("relu"), "hidden_act \"relu\""),
        ("vit", "intermediate_size", serde_json::Value::Null, "intermediate_size"),
        ("vit", "intermediate_size", serde_json::json!(48), "encoder.layer.0.intermediate.dense.weight"),
        ("clip", "num_hidden_layers", serde_json::json!(3), "encoder.layers.2.layer_norm1.weight"),
        ("clip", "num_hidden_layers", serde_json::json!(1), "encoder.layers.1."),
        ("vit", "patch_size", serde_json::json!(5), "image_size 28 is not a multiple of patch_size 5"),
    ] {
        let e = Dinov2::load(&with_config(out.path(), name, key, value), "", &device).unwrap_err().to_string();
        assert!(e.contains(expected), "{name} {key}: {e}");
    }
}

/// `replora info` names each family and its PEFT targets, and an image-classification run on
/// each trains, predicts, exports and merges.
#[cfg(feature = "cli")]
#[test]
fn the_cli_describes_and_trains_each_family() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    support::image_folder(&data, &["blue", "green", "red"], 6);
    for (name, variant) in FAMILIES {
        let model = fixture(name).join("model");
        let o = support::replora(&["info", "--model", model.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && text.contains(variant.name()), "{text}{}", support::stderr(&o));
        let targets = if variant == Variant::Clip { "q_proj,v_proj" } else { "query,value" };
        assert!(text.contains(&format!("rank 8 on {targets}")), "{text}");

        let run = tmp.path().join(format!("{name}-run"));
        let (model_s, data_s, run_s) = (model.to_str().unwrap(), data.to_str().unwrap(), run.to_str().unwrap());
        let args = [
            "train",
            "--task",
            "image-classification",
            "--model",
            model_s,
            "--data",
            data_s,
            "--method",
            "replora",
            "--image-size",
            "14",
            "--train-images",
            "12",
            "--val-images",
            "3",
            "--test-images",
            "3",
            "--epochs",
            "1",
            "--batch-size",
            "6",
            "--out",
            run_s,
        ];
        let o = support::replora(&args);
        assert!(o.status.success(), "{name}: {}", support::stderr(&o));
        let listing = tmp.path().join("images.txt");
        std::fs::write(&listing, format!("{}\n", data.join("red/0.png").display())).unwrap();
        let o = support::replora(&["predict", "--run", run_s, "--input", listing.to_str().unwrap()]);
        assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("probability"), "{name}: {}", support::stderr(&o));
        for (command, out) in [("export", "peft"), ("merge", "merged")] {
            let o = support::replora(&[command, "--run", run_s, "--out", tmp.path().join(format!("{name}-{out}")).to_str().unwrap()]);
            assert!(o.status.success(), "{name} {command}: {}", support::stderr(&o));
        }
        let merged = Dinov2::load_in_task(&tmp.path().join(format!("{name}-merged")), Quantize::Stored, &Device::flex()).unwrap();
        assert_eq!((merged.variant(), merged.config.image_size), (variant, 14), "{name}: the merged tower at the run's size");
    }
}
