//! Mixed precision (`--precision bf16|f16`): off the fused CPU kernels (the path a GPU runs) the
//! linears' products run in the chosen dtype and the rest stays f32, so a decoder's logits and a
//! LoRA step come out within the 16-bit rounding of the f32 ones, with trainable parameters and
//! gradients f32; the CPU and training in f16 are refused by name.
//!
//! The precision is process-wide, so the tests here take turns (`PRECISION`).

use std::path::Path;
use std::sync::Mutex;

use burn::prelude::*;
use burn::tensor::DType;
use replora::adapters::{AdapterConfig, Deltas, Method, PeftModel, TargetModules};
use replora::choice::Choice;
use replora::device::{DeviceSpec, check_precision};
use replora::kernels;
use replora::models::llama::Llama;
use replora::precision::{self, Precision};
use replora::quantization::BlockFormat;
use replora::tasks::choice_model::CausalLm;
use replora::training::Objective;

mod support;

static PRECISION: Mutex<()> = Mutex::new(());

/// `f` with the products in `precision` and the fused kernels off, as on a GPU.
fn in_precision<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    let _turn = PRECISION.lock().unwrap_or_else(|e| e.into_inner());
    precision::set(precision);
    let out = kernels::with_fallback(f);
    precision::set(Precision::F32);
    out
}

fn tiny_llama(device: &Device) -> Llama {
    let c = support::tiny_llama_config(2);
    Llama::from_tensors(c.clone(), &mut support::llama_checkpoint(&c), Path::new("tiny"), device).unwrap()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// The largest difference relative to the largest magnitude of `b`.
fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    support::max_abs_diff(a, b) / scale
}

fn logits(m: &Llama, device: &Device) -> Tensor<3> {
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![5i64, 17, 3, 29, 11, 8, 40, 63], [1, 8]), device);
    m.logits(m.forward(ids, None, None, &Deltas::none()))
}

/// bf16 keeps 8 bits of mantissa (a relative step of 2^-8 = 3.9e-3), f16 11 (4.9e-4): each
/// product rounds its operands and result, and two layers of them and of attention compound
/// (measured here: 1.2-2.5e-2 for bf16, 2.3-4.8e-3 for f16; 1.7-2.0e-2 and 2.1-3.5e-3 with
/// attention in f32; the bounds leave 1.6 times that).
fn tolerance(precision: Precision) -> f32 {
    if precision == Precision::Bf16 { 4e-2 } else { 8e-3 }
}

#[test]
fn logits_in_16_bit_products_are_the_f32_logits_within_their_rounding() {
    let device = Device::flex();
    for base in [None, Some(BlockFormat::Q4_1), Some(BlockFormat::Bf16)] {
        let model = match base {
            None => tiny_llama(&device),
            Some(format) => tiny_llama(&device).converted(Some(format)).unwrap(),
        };
        let reference = in_precision(Precision::F32, || values(logits(&model, &device)));
        for precision in [Precision::Bf16, Precision::F16] {
            let ours = in_precision(precision, || logits(&model, &device));
            assert_eq!(ours.dtype(), DType::F32, "{precision:?} on {base:?}: the logits come back f32");
            let diff = relative_diff(&values(ours), &reference);
            eprintln!("{precision:?} products on {base:?}: logits within {diff:.2e} of f32's (relative to the largest)");
            // Within the rounding, and not f32's own result: the products did run in 16 bits.
            assert!(diff < tolerance(precision), "{precision:?} on {base:?}: logits differ by {diff} (relative)");
            assert!(diff > 1e-6, "{precision:?} on {base:?}: the logits are f32's to {diff}; the products did not round");
        }
    }
}

/// Attention runs in the precision too, as under PyTorch's autocast: its output comes back f32,
/// within the 16-bit rounding of f32's and different from it. A query row that a mask's
/// `f32::MIN` covers everywhere (a padding position's, which nothing reads) stays finite, though
/// that value rounds to a 16-bit `-inf`.
#[test]
fn attention_in_16_bits_is_the_f32_attention_within_its_rounding() {
    let device = Device::flex();
    let sample = |seed: usize| {
        let values: Vec<f32> = (0..2 * 4 * 6 * 8).map(|i| ((i * seed % 97) as f32 - 48.0) / 40.0).collect();
        Tensor::<4>::from_data(TensorData::new(values, [2, 4, 6, 8]), &device)
    };
    let (q, k, v) = (sample(7), sample(13), sample(29));
    // Batch 1 masks its last two keys for every query, and every key for query 0.
    let masked_everywhere = |batch: usize, query: usize| batch == 1 && query == 0;
    let mut mask = vec![0f32; 2 * 6 * 6];
    for (at, m) in mask.iter_mut().enumerate().skip(36) {
        let (query, key) = ((at - 36) / 6, (at - 36) % 6);
        if key >= 4 || masked_everywhere(1, query) {
            *m = f32::MIN;
        }
    }
    let bias = Tensor::<4>::from_data(TensorData::new(mask, [2, 1, 6, 6]), &device).expand([2, 4, 6, 6]);
    let attend = || replora::models::layers::attention(q.clone(), k.clone(), v.clone(), bias.clone());
    // The output rows `[batch, head, query]` of 8 values, split by whether a key was visible.
    let split = |out: Vec<f32>| -> (Vec<f32>, Vec<f32>) {
        let (mut seen, mut unseen) = (vec![], vec![]);
        for (row, values) in out.chunks(8).enumerate() {
            let part = if masked_everywhere(row / 24, row % 6) { &mut unseen } else { &mut seen };
            part.extend_from_slice(values);
        }
        (seen, unseen)
    };
    let (f32_seen, _) = split(values(in_precision(Precision::F32, attend)));
    for precision in [Precision::Bf16, Precision::F16] {
        let out = in_precision(precision, attend);
        assert_eq!(out.dtype(), DType::F32, "{precision}");
        let (seen, unseen) = split(values(out));
        assert!(unseen.iter().all(|v| v.is_finite()), "{precision}: {unseen:?}");
        let diff = relative_diff(&seen, &f32_seen);
        eprintln!("{precision} attention: {diff:.2e} from f32's (relative)");
        assert!(diff > 0.0 && diff < tolerance(precision), "{precision}: {diff}");
    }
}

fn lora_model(device: &Device) -> CausalLm {
    CausalLm { decoder: PeftModel::new(tiny_llama(device), &support::tiny_lora()).unwrap() }
}

/// The losses of six AdamW steps of LoRA.
fn train(device: &Device) -> Vec<f32> {
    use burn::optim::{AdamWConfig, GradientsParams};
    let mut model = lora_model(device);
    let mut optim = AdamWConfig::new().init();
    let mut losses = vec![];
    for _ in 0..6 {
        let loss = model.loss(&support::tiny_lm_batch(), device);
        losses.push(values(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    losses
}

/// The first step's gradient of one adapter's `B` (`A`'s is zero while `B` is).
fn first_gradient(device: &Device) -> Tensor<2> {
    let model = lora_model(device);
    let grads = model.loss(&support::tiny_lm_batch(), device).backward();
    let b = model.decoder.adapters.deltas(false).get("model.layers.1.mlp.down_proj").unwrap().b.clone();
    b.grad(&grads).expect("B trains")
}

/// The gradients of the trainable parameters come back f32 and within bf16's rounding of the
/// f32 ones, and training follows the f32 run's losses. (The trained parameters themselves are
/// not compared: AdamW's first steps move each by about the learning rate in the sign of its
/// gradient, so a gradient near zero may step either way in either run.)
#[test]
fn lora_trains_in_bf16_products_with_f32_gradients_to_the_f32_losses() {
    let device = Device::flex().autodiff();
    let (reference, reference_grad) = in_precision(Precision::F32, || (train(&device), first_gradient(&device)));
    let (losses, grad) = in_precision(Precision::Bf16, || (train(&device), first_gradient(&device)));
    assert!(losses[5] < losses[0] - 0.05, "LoRA did not learn in bf16: {losses:?}");
    let diff = relative_diff(&losses, &reference);
    eprintln!("bf16 products: six LoRA losses within {diff:.2e} of f32's");
    assert!(diff < 4e-2, "bf16 losses {losses:?} vs f32 {reference:?}");
    assert!(diff > 1e-7, "the bf16 losses are f32's: the products did not round");
    assert_eq!(grad.dtype(), DType::F32, "a trainable parameter's gradient is f32");
    let diff = relative_diff(&values(grad), &values(reference_grad));
    eprintln!("bf16 products: B's first gradient within {diff:.2e} of f32's");
    // Measured: 4.5e-2 (2.3e-2 with attention in f32): the gradient passes back through every
    // rounded product and attention.
    assert!(diff < 8e-2, "B's first gradient differs by {diff} (relative)");
}

#[test]
fn a_precision_the_devices_cannot_run_is_refused_by_name() {
    let cpu = [DeviceSpec::CPU];
    let devices = [Device::flex()];
    assert!(check_precision(Precision::F32, &cpu, &devices).is_ok());
    for precision in [Precision::Bf16, Precision::F16] {
        let message = check_precision(precision, &cpu, &devices).unwrap_err().to_string();
        let name = precision.name();
        let named = [format!("--precision {name}"), "--device cpu".into(), format!("--quantize {name}")];
        assert!(named.iter().all(|n| message.contains(n.as_str())), "{message}");
    }
}

/// A LoRA run in f16 products scales its loss, logging the scale and the steps skipped with
/// every metrics line: each overflow skips its step and halves the scale (2^16 overflows this
/// tiny model's first step, whose gradients times 2^16 pass f16's 65504), and the run ends near
/// the f32 run's test loss.
#[test]
fn f16_training_scales_the_loss_and_ends_where_the_f32_run_does() {
    use replora::run::{self, Start};
    use replora::tasks::multiple_choice::MultipleChoiceSpec;
    use replora::tasks::{MultipleChoice, Tuning};
    use replora::training::TrainConfig;
    let dir = tempfile::tempdir().unwrap();
    let lora = AdapterConfig {
        r: 4,
        target_modules: TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]),
        ..AdapterConfig::new(Method::Lora)
    };
    let spec = MultipleChoiceSpec {
        train: TrainConfig { batch_size: 2, epochs: 2, log_every: 1, ..TrainConfig::default() },
        ..support::tiny_choice_spec(dir.path(), Tuning::Adapter(lora))
    };
    let train = |precision: Precision, name: &str| {
        let out = dir.path().join(name);
        let summary = in_precision(precision, || run::train::<MultipleChoice>(&spec, &out, Start::New, &[Device::flex()]).unwrap());
        let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let metrics: Vec<serde_json::Value> =
            lines.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|v: &serde_json::Value| v.get("loss").is_some()).collect();
        assert_eq!(
            summary.precision.as_deref(),
            (precision != Precision::F32).then(|| precision.name()),
            "the summary names the precision"
        );
        (summary.test.loss, metrics)
    };
    let (f32_loss, f32_lines) = train(Precision::F32, "f32");
    let (f16_loss, f16_lines) = train(Precision::F16, "f16");
    assert_eq!(f16_lines.len(), 8, "a metrics line per step: {f16_lines:?}");
    for line in &f16_lines {
        // No growth within 8 steps: each skipped step halved the scale.
        let skipped = line["skipped_steps"].as_u64().unwrap();
        assert_eq!(line["loss_scale"].as_f64().unwrap(), 65536.0 / 2f64.powi(skipped as i32), "{line}");
    }
    let skipped = f16_lines.last().unwrap()["skipped_steps"].as_u64().unwrap();
    assert!(skipped < 4, "most steps were taken: {skipped} of 8 skipped");
    assert!(f32_lines.iter().all(|l| l.get("loss_scale").is_none()), "an f32 run does not scale its loss");
    let diff = ((f16_loss - f32_loss) / f32_loss).abs();
    eprintln!("f16 products: test loss {f16_loss} against f32's {f32_loss} ({diff:.2e} relative)");
    // Measured: 1.5e-2 (two of the eight steps skipped for an overflow, so fewer taken).
    assert!(diff < 5e-2 && diff > 0.0, "test loss {f16_loss} in f16 products, {f32_loss} in f32");
}
