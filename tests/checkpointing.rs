//! Activation checkpointing (`--checkpoint-activations`): a decoder's training pass that keeps
//! only each layer's input and recomputes the layer in the backward pass gives the loss and the
//! gradients of the ordinary pass, for every adapter method, full fine-tuning and a quantized
//! base; with LoRA dropout each layer's recomputation draws the masks its first pass drew
//! (debug builds check the recomputed outputs against the first pass's).

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use replora::adapters::{AdapterConfig, Method, MethodConfig, PeftModel, TargetModules};
use replora::models::llama::{Llama, LlamaConfig};
use replora::quantization::BlockFormat;
use replora::tasks::choice_model::{CausalLm, LmBatch, LmSequence};
use replora::tasks::tuning::Tuning;
use replora::training::Objective;

mod support;

/// flex draws every random number from one generator: tests that seed it take turns.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn generator() -> std::sync::MutexGuard<'static, ()> {
    GENERATOR.lock().unwrap_or_else(|e| e.into_inner())
}

fn config() -> LlamaConfig {
    support::tiny_llama_config(3)
}

fn base(device: &Device) -> Llama {
    let c = config();
    Llama::from_tensors(c.clone(), &mut support::llama_checkpoint(&c), Path::new("tiny"), device).unwrap()
}

/// Two sequences of different lengths (the shorter padded), answers at the end.
fn batch() -> LmBatch {
    let a = LmSequence { tokens: vec![5, 17, 3, 29, 11, 8, 40], answer_start: 4 };
    let b = LmSequence { tokens: vec![9, 4, 30, 2, 33], answer_start: 3 };
    LmBatch::pad(&[&a, &b], 0)
}

fn adapter(method: MethodConfig, targets: &[&str], dropout: f64) -> Tuning {
    let target_modules = TargetModules::Names(targets.iter().map(|t| t.to_string()).collect());
    Tuning::Adapter(AdapterConfig { method, r: 4, target_modules, lora_dropout: dropout, seed: 3, ..Default::default() })
}

fn tunings() -> Vec<(&'static str, Tuning)> {
    let qv = ["q_proj", "v_proj"];
    vec![
        ("lora", adapter(Method::Lora.defaults(), &["q_proj", "v_proj", "down_proj"], 0.0)),
        ("replora", adapter(Method::Replora.defaults(), &qv, 0.0)),
        ("dora", adapter(Method::Dora.defaults(), &qv, 0.0)),
        ("adapter", adapter(Method::Houlsby.defaults(), &["o_proj", "down_proj"], 0.0)),
        ("prefix", adapter(Method::Prefix.defaults(), &["k_proj"], 0.0)),
        ("full", Tuning::Full),
    ]
}

/// The loss and gradients of one micro-batch, with and without checkpointing.
fn both_passes(model: &CausalLm, device: &Device) -> [(f32, BTreeMap<String, Vec<f32>>); 2] {
    [false, true].map(|checkpoint| {
        device.seed(11);
        let (loss, grads) = model.loss_and_gradients(&batch(), device, 0.5, checkpoint);
        (loss.into_scalar::<f32>(), support::gradient_values(model, &grads))
    })
}

#[test]
fn checkpointed_gradients_equal_the_ordinary_ones_for_every_method() {
    let _turn = generator();
    let device = Device::flex().autodiff();
    for (name, tuning) in tunings() {
        let model = CausalLm { decoder: tuning.wrap(base(&device)).unwrap() };
        let [(loss, plain), (checkpointed_loss, checkpointed)] = both_passes(&model, &device);
        assert!((loss - checkpointed_loss).abs() <= 1e-5 * loss.abs(), "{name}: loss {loss} vs {checkpointed_loss}");
        support::assert_same_gradients(name, &plain, &checkpointed);
    }
}

#[test]
fn checkpointed_gradients_on_a_quantized_base_equal_the_ordinary_ones() {
    let _turn = generator();
    let device = Device::flex().autodiff();
    let quantized = base(&device).converted(Some(BlockFormat::Q4_1)).unwrap();
    let model = CausalLm { decoder: PeftModel::new(quantized, &lora_config(0.0)).unwrap() };
    let [(loss, plain), (checkpointed_loss, checkpointed)] = both_passes(&model, &device);
    assert!((loss - checkpointed_loss).abs() <= 1e-5 * loss.abs(), "loss {loss} vs {checkpointed_loss}");
    support::assert_same_gradients("lora on q4_1", &plain, &checkpointed);
}

fn lora_config(dropout: f64) -> AdapterConfig {
    match adapter(Method::Lora.defaults(), &["q_proj", "v_proj"], dropout) {
        Tuning::Adapter(config) => config,
        _ => unreachable!(),
    }
}

/// With dropout the masks are drawn per layer: each layer's recomputation drops what its first
/// pass dropped (debug builds assert it inside the pass), so the same seed gives the same
/// gradients twice, and they are not those of a pass without dropout.
#[test]
fn dropout_masks_are_drawn_again_alike_in_the_recomputation() {
    let _turn = generator();
    let device = Device::flex().autodiff();
    let model = CausalLm { decoder: PeftModel::new(base(&device), &lora_config(0.5)).unwrap() };
    // One step first, so that B is not zero and the masks change the layers' outputs.
    device.seed(1);
    let (_, grads) = model.loss_and_gradients(&batch(), &device, 1.0, false);
    let model = burn::optim::AdamWConfig::new().init().step(1e-2, model, grads);
    let pass = |seed: u64| {
        device.seed(seed);
        let (loss, grads) = model.loss_and_gradients(&batch(), &device, 1.0, true);
        (loss.into_scalar::<f32>(), support::gradient_values(&model, &grads))
    };
    let (first, again, other) = (pass(5), pass(5), pass(6));
    assert!(first == again, "the same micro-batch seed gives the same loss and gradients");
    assert!(first.1 != other.1, "another seed draws other masks");
    assert!(first.1.values().flatten().all(|v| v.is_finite()));
}
