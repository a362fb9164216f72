//! A decoder on a quantized base (Q8_0, Q4_0, Q4_1 blocks, as GGUF files store them, or 16-bit
//! floats; the formats read only from files are in `tests/ggml_blocks.rs`) computes
//! what the same decoder computes on the dequantized f32 weights: forward passes, adapter
//! training (QLoRA's recipe), merging (which writes f32) and full fine-tuning (which widens).

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use replora::adapters::{Adaptable, BaseWeight, Deltas, PeftModel};
use replora::kernels::{self, Kernel, fused_calls};
use replora::models::llama::{Llama, LlamaConfig};
use replora::quantization::BlockFormat;
use replora::tasks::choice_model::CausalLm;
use replora::tasks::tuning::Tuning;
use replora::training::Objective;

mod support;

fn config() -> LlamaConfig {
    support::tiny_llama_config(2)
}

/// The tiny decoder with every base weight quantized to `format`, and the same decoder with
/// those weights dequantized to f32: the same values, held two ways.
fn quantized_and_dequantized(format: BlockFormat, device: &Device) -> (Llama, Llama) {
    let c = config();
    let base = Llama::from_tensors(c.clone(), &mut support::llama_checkpoint(&c), Path::new("tiny"), device).unwrap();
    let quantized = base.converted(Some(format)).unwrap();
    let dequantized = quantized.clone().converted(None).unwrap();
    (quantized, dequantized)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// The largest difference relative to the largest magnitude of `b`.
fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    support::max_abs_diff(a, b) / scale
}

fn ids(device: &Device) -> Tensor<2, Int> {
    let flat: Vec<i64> = vec![5, 17, 3, 29, 11, 8, 40, 63, 9, 4, 30, 2, 0, 1, 33, 50];
    Tensor::from_data(TensorData::new(flat, [2, 8]), device)
}

#[test]
fn a_quantized_base_gives_the_dequantized_logits_and_reads_fewer_bytes() {
    let device = Device::flex();
    for format in BlockFormat::QUANTIZABLE {
        let (q, d) = quantized_and_dequantized(format, &device);
        assert!(q.linears().iter().all(|l| l.weight.format() == Some(format)), "{format}: a linear is not quantized");
        assert!(d.linears().iter().all(|l| l.weight.format().is_none()));
        let before = fused_calls(Kernel::QuantizedLinear);
        let ours = values(q.logits(q.forward(ids(&device), None, None, &Deltas::none())));
        // 2 layers x 7 linears + the tied head.
        assert_eq!(fused_calls(Kernel::QuantizedLinear) - before, 15, "{format}: the quantized products did not all run");
        let reference = values(d.logits(d.forward(ids(&device), None, None, &Deltas::none())));
        let diff = relative_diff(&ours, &reference);
        assert!(diff < 1e-5, "{format}: logits differ by {diff} (relative)");

        // Off the fused path (what a GPU runs), each matrix goes to the device once as held
        // (16-bit values, or codes packed into 32-bit words with f32 scales) and is widened there.
        let off = values(kernels::with_fallback(|| q.logits(q.forward(ids(&device), None, None, &Deltas::none()))));
        let diff = relative_diff(&off, &reference);
        assert!(diff < 1e-5, "{format}: logits off the fused path differ by {diff} (relative)");
        let (dtype, bytes_per_weight) = match format {
            BlockFormat::F16 => (DType::F16, 2.0),
            BlockFormat::Bf16 => (DType::BF16, 2.0),
            BlockFormat::Q8_0 => (DType::I32, 1.0 + 4.0 / 32.0), // a byte per code, an f32 scale per 32
            BlockFormat::Q4_0 => (DType::I32, 0.5 + 4.0 / 32.0),
            _ => (DType::I32, 0.5 + 8.0 / 32.0), // Q4_1: a scale and an offset
        };
        for linear in q.linears() {
            let BaseWeight::Quantized(w) = &linear.weight else { unreachable!() };
            let weights = (w.matrix.rows * w.matrix.cols) as f64;
            assert_eq!(w.resident(), Some((dtype, (weights * bytes_per_weight) as usize)), "{format}: {} on the device", linear.path);
        }
        let ratio = q.decode_weight_bytes() as f64 / d.decode_weight_bytes() as f64;
        let (values, bytes) = format.stored_block();
        let expected = bytes as f64 / values as f64 / 4.0; // the file's bytes: codes and f16 scales
        assert!((ratio - expected).abs() < 1e-9, "{format}: {ratio} of the f32 bytes, expected {expected}");
    }
}

/// Eight AdamW steps of LoRA: the loss at each step and the trained model.
fn train(base: Llama, device: &Device) -> (Vec<f32>, CausalLm) {
    let mut model = CausalLm { decoder: PeftModel::new(base, &support::tiny_lora()).unwrap() };
    let mut optim = burn::optim::AdamWConfig::new().init();
    let mut losses = vec![];
    for _ in 0..8 {
        let loss = model.loss(&support::tiny_lm_batch(), device);
        losses.push(values(loss.clone())[0]);
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    (losses, model)
}

#[test]
fn lora_on_a_quantized_base_trains_as_on_the_dequantized_base() {
    let device = Device::flex().autodiff();
    for format in [BlockFormat::Q4_1, BlockFormat::Q8_0, BlockFormat::Bf16] {
        let (q, d) = quantized_and_dequantized(format, &device);
        let before = fused_calls(Kernel::QuantizedLinear);
        let (q_losses, q_model) = train(q, &device);
        assert!(fused_calls(Kernel::QuantizedLinear) > before, "{format}: training did not run the quantized products");
        let (d_losses, d_model) = train(d, &device);
        assert!(q_losses[7] < q_losses[0] - 0.05, "{format}: LoRA did not learn on the quantized base: {q_losses:?}");
        let diff = relative_diff(&q_losses, &d_losses);
        assert!(diff < 1e-4, "{format}: losses {q_losses:?} vs {d_losses:?}");
        // The trained adapters agree too (the base's gradient reached them the same way).
        let adapter = |m: &CausalLm| values(m.decoder.adapters.deltas(false).get("model.layers.1.mlp.down_proj").unwrap().b.clone());
        let diff = relative_diff(&adapter(&q_model), &adapter(&d_model));
        assert!(diff < 1e-3, "{format}: trained B differs by {diff} (relative)");
        // The base stayed quantized and frozen.
        assert!(q_model.decoder.model.linears().iter().all(|l| l.weight.format() == Some(format) && !l.weight.is_require_grad()));
    }
}

#[test]
fn merging_into_a_quantized_base_writes_f32_weights_with_the_same_outputs() {
    let device = Device::flex().autodiff();
    let (q, _) = quantized_and_dequantized(BlockFormat::Q4_0, &device);
    let (_, trained) = train(q, &device);
    let peft = trained.decoder;
    let logits = |p: &PeftModel<Llama>| {
        let m = &p.model;
        values(m.logits(m.forward(ids(&device), None, None, &p.deltas())).detach())
    };
    let unmerged = logits(&peft);
    let merged = peft.merge().unwrap();
    let merged_paths: Vec<&str> = merged.model.linears().iter().filter(|l| l.weight.format().is_none()).map(|l| l.path.as_str()).collect();
    assert_eq!(merged_paths.len(), 6, "the 6 adapted linears become f32: {merged_paths:?}");
    let diff = relative_diff(&logits(&merged), &unmerged);
    assert!(diff < 1e-5, "merged logits differ by {diff}");
}

#[test]
fn full_fine_tuning_widens_a_quantized_base_to_trainable_f32() {
    let device = Device::flex().autodiff();
    let (q, d) = quantized_and_dequantized(BlockFormat::Q8_0, &device);
    let full = Tuning::Full.wrap(q).unwrap();
    assert!(full.model.linears().iter().all(|l| matches!(l.weight, BaseWeight::Dense(_)) && l.weight.is_require_grad()));
    let widened = values(full.model.embed_tokens.dense());
    assert_eq!(widened, values(d.embed_tokens.dense()), "the embedding table widens to the same values");
}

/// A safetensors directory in bf16 or f16 (as Hugging Face ships most decoders) loads with its
/// matrices as stored, 2 bytes a weight, whose logits are those of the same directory widened
/// to f32 at load (`--quantize none`).
#[test]
fn a_16_bit_safetensors_decoder_keeps_its_matrices_16_bit() {
    let device = Device::flex();
    let c = config();
    let dir = tempfile::tempdir().unwrap();
    Llama::from_tensors(c.clone(), &mut support::llama_checkpoint(&c), Path::new("tiny"), &device).unwrap().save(dir.path()).unwrap();
    let file = dir.path().join("model.safetensors");
    let f32_file = std::fs::read(&file).unwrap();
    for format in [BlockFormat::Bf16, BlockFormat::F16] {
        // Matrices 16-bit, the norms' vectors f32.
        std::fs::write(&file, &f32_file).unwrap();
        support::rewrite_16_bit(&file, format == BlockFormat::F16);

        let stored = Llama::load(dir.path(), &device).unwrap();
        assert!(stored.linears().iter().all(|l| l.weight.format() == Some(format)), "{format}: a linear was widened at load");
        let widened = stored.clone().converted(None).unwrap();
        let ratio = stored.decode_weight_bytes() as f64 / widened.decode_weight_bytes() as f64;
        assert_eq!(ratio, 0.5, "{format}: every matrix, the embedding included, takes 2 bytes a weight");
        let ours = values(stored.logits(stored.forward(ids(&device), None, None, &Deltas::none())));
        let reference = values(widened.logits(widened.forward(ids(&device), None, None, &Deltas::none())));
        let diff = relative_diff(&ours, &reference);
        assert!(diff < 1e-5, "{format}: logits differ by {diff} (relative)");

        // Off the fused path (what a GPU runs): each matrix goes to the device once, in its own
        // dtype, and is widened there for each product.
        let off = values(kernels::with_fallback(|| stored.logits(stored.forward(ids(&device), None, None, &Deltas::none()))));
        let diff = relative_diff(&off, &reference);
        assert!(diff < 1e-5, "{format}: logits off the fused path differ by {diff} (relative)");
        let dtype = if format == BlockFormat::F16 { DType::F16 } else { DType::BF16 };
        for linear in stored.linears() {
            let BaseWeight::Quantized(q) = &linear.weight else { panic!("{format}: {} is not 16-bit", linear.path) };
            let bytes = 2 * q.matrix.rows * q.matrix.cols;
            assert_eq!(q.resident(), Some((dtype, bytes)), "{format}: {} on the device", linear.path);
        }
    }
}

/// The rows and columns of [`small_matrix`].
const SMALL: (usize, usize) = (5, 64);

/// A [`SMALL`] matrix of varied values in `format`.
fn small_matrix(format: BlockFormat) -> replora::quantization::QuantizedMatrix {
    let (rows, cols) = SMALL;
    let weights: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
    replora::quantization::QuantizedMatrix::quantize(format, rows, cols, &weights, "w").unwrap()
}

/// Off the fused path, a product with a 16-bit or block-quantized matrix and its gradient with
/// respect to the input equal those of the widened f32 matrix, on the autodiff device as on the
/// plain one.
#[test]
fn off_the_fused_path_products_and_their_gradients_equal_the_widened_ones() {
    let (rows, cols) = SMALL;
    let inputs: Vec<f32> = (0..3 * cols).map(|i| ((i * 11 % 29) as f32 - 14.0) / 7.0).collect();
    for format in BlockFormat::QUANTIZABLE {
        let matrix = small_matrix(format);
        let device = Device::flex().autodiff();
        let frozen = replora::adapters::FrozenBlocks::new(matrix.clone(), &device);
        let dense = Tensor::<2>::from_data(TensorData::new(matrix.dequantize(), [rows, cols]), &device).transpose();
        let x = || Tensor::<2>::from_data(TensorData::new(inputs.clone(), [3, cols]), &device).require_grad();
        let (ours, ours_dx) = kernels::with_fallback(|| {
            let x = x();
            let y = frozen.product(x.clone());
            let grads = (y.clone() * y.clone()).sum().backward();
            (values(y), values(x.grad(&grads).unwrap()))
        });
        let x = x();
        let y = x.clone().matmul(dense);
        let grads = (y.clone() * y.clone()).sum().backward();
        let (reference, reference_dx) = (values(y), values(x.grad(&grads).unwrap()));
        assert!(relative_diff(&ours, &reference) < 1e-6, "{format}: products");
        assert!(relative_diff(&ours_dx, &reference_dx) < 1e-6, "{format}: gradients");
        // The plain device's product reads the same copy.
        let plain = kernels::with_fallback(|| values(frozen.valid().product(x.inner())));
        assert!(relative_diff(&plain, &reference) < 1e-6, "{format}: products on the plain device");
    }
}

/// Off the fused path (a GPU), a quantized base's f32 weight (DoRA's norms, merging, exporting) is
/// widened from the copy on the device, bit for bit what the host widens, so that a training step
/// uploads no widened matrix from the host.
#[test]
fn off_the_fused_path_the_dense_weight_comes_from_the_device_copy() {
    for format in BlockFormat::QUANTIZABLE {
        let frozen = replora::adapters::FrozenBlocks::new(small_matrix(format), &Device::flex().autodiff());
        let weight = BaseWeight::Quantized(frozen.clone());
        let host = weight.dense().into_data();
        assert_eq!(frozen.resident(), None, "{format}: the fused path widens on the host");
        let from_device = kernels::with_fallback(|| weight.dense().into_data());
        assert!(frozen.resident().is_some(), "{format}: the weight did not come from the device copy");
        assert_eq!(from_device, host, "{format}");
    }
}
