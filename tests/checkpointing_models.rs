//! Activation checkpointing on every task besides the decoder's (tests/checkpointing.rs): text
//! classification on BERT and ModernBERT, image classification on a ViT, video classification
//! and visual question answering. For every adapter method and full fine-tuning, a training pass
//! that recomputes each layer in the backward pass gives the loss and the gradients of the
//! ordinary pass (debug builds also check each recomputed layer against its first pass).

use std::path::Path;

use burn::prelude::*;
use replora::adapters::{AdapterConfig, Method, TargetModules};
use replora::data::images::ImageBatch;
use replora::data::tokenize::Batch;
use replora::data::video::VideoBatch;
use replora::models::Architecture;
use replora::models::bert::Pooling;
use replora::models::dinov2::Dinov2;
use replora::models::encoder::Encoder;
use replora::models::llama::Llama;
use replora::models::video_vit::VideoVit;
use replora::models::vision_language::{Projector, ProjectorKind};
use replora::tasks::choice_model::LmSequence;
use replora::tasks::heads::SequenceClassifier;
use replora::tasks::image_classification::{ImageClassifier, ImagePooling};
use replora::tasks::tuning::Tuning;
use replora::tasks::video_classification::VideoClassifier;
use replora::tasks::vqa_model::{VqaBatch, VqaModel};
use replora::training::Objective;

mod support;

/// flex draws every random number from one generator: tests that seed it take turns.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn generator() -> std::sync::MutexGuard<'static, ()> {
    GENERATOR.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every method at its default targets on `model`, and full fine-tuning.
fn tunings(model: &impl Architecture) -> Vec<(String, Tuning)> {
    tunings_with(model, |_| &[])
}

/// [`tunings`], each method also at `more(method)`.
fn tunings_with(model: &impl Architecture, more: fn(Method) -> &'static [&'static str]) -> Vec<(String, Tuning)> {
    let adapters = Method::ALL.iter().map(|&method| {
        let targets = [model.targets_of(method), more(method)].concat().iter().map(|t| t.to_string()).collect();
        let config =
            AdapterConfig { method: method.defaults(), r: 2, target_modules: TargetModules::Names(targets), seed: 3, ..Default::default() };
        (method.to_string(), Tuning::Adapter(config))
    });
    adapters.chain([("full".to_string(), Tuning::Full)]).collect()
}

/// One micro-batch's loss and gradients with and without checkpointing are equal.
fn assert_checkpointing_changes_nothing<M: Objective>(name: &str, model: &M, batch: &M::Batch, device: &Device) {
    const { assert!(M::CHECKPOINTS) };
    let [(loss, plain), (checkpointed_loss, checkpointed)] = [false, true].map(|checkpoint| {
        device.seed(11);
        let (loss, grads) = model.loss_and_gradients(batch, device, 0.5, checkpoint);
        (loss.into_scalar::<f32>(), support::gradient_values(model, &grads))
    });
    assert!((loss - checkpointed_loss).abs() <= 1e-5 * loss.abs().max(1.0), "{name}: loss {loss} vs {checkpointed_loss}");
    support::assert_same_gradients(name, &plain, &checkpointed);
}

/// Two sentences of different lengths (the shorter padded), two labels.
fn text_batch() -> Batch {
    let (ids, seq) = ([[2, 17, 9, 30, 5, 3], [2, 44, 8, 3, 0, 0]], 6);
    let mask = ids.iter().flat_map(|row| row.iter().map(|&id| f32::from(id != 0))).collect();
    Batch { input_ids: ids.concat(), token_type_ids: vec![0; 2 * seq], attention_mask: mask, batch: 2, seq, labels: vec![1, 0] }
}

fn text_classifiers(dir: &Path, device: &Device) {
    let base = Encoder::load(dir, "", device).unwrap();
    for (name, tuning) in tunings(&base) {
        let model = SequenceClassifier::new(tuning.wrap(base.clone()).unwrap(), 3, Pooling::Cls, 0.0, 4);
        assert_checkpointing_changes_nothing(&format!("{} {name}", dir.display()), &model, &text_batch(), device);
    }
}

#[test]
fn bert_and_modernbert_classifiers_checkpoint_exactly() {
    let _turn = generator();
    let device = Device::flex().autodiff();
    let tmp = tempfile::tempdir().unwrap();
    support::tiny_bert(tmp.path(), "", false, true);
    text_classifiers(tmp.path(), &device);
    text_classifiers(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoder-families/modernbert/model"), &device);
}

/// Deterministic pixel values in [-1, 1].
fn pixels(n: usize, seed: u64) -> Vec<f32> {
    (0..n).map(|i| ((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0 - 1.0).collect()
}

#[test]
fn vit_classifiers_checkpoint_exactly() {
    let _turn = generator();
    let device = Device::flex().autodiff();
    let tmp = tempfile::tempdir().unwrap();
    support::tiny_dinov2(tmp.path());
    let base = Dinov2::load(tmp.path(), "", &device).unwrap();
    let batch = ImageBatch { pixels: pixels(2 * 3 * 16 * 16, 1), size: 16, labels: vec![0, 2] };
    for (name, tuning) in tunings(&base) {
        let model = ImageClassifier::new(tuning.wrap(base.clone()).unwrap(), 3, ImagePooling::ClsMean, 5);
        assert_checkpointing_changes_nothing(&format!("vit {name}"), &model, &batch, &device);
    }
}

#[test]
fn video_classifiers_checkpoint_exactly() {
    let _turn = generator();
    let device = Device::flex().autodiff();
    let tmp = tempfile::tempdir().unwrap();
    support::tiny_dinov2(tmp.path());
    let base = VideoVit::from_image(Dinov2::load(tmp.path(), "", &device).unwrap(), 3);
    let batch = VideoBatch { pixels: pixels(2 * 3 * 3 * 16 * 16, 2), frames: 3, size: 16, labels: vec![1, 0] };
    // With temporal adapters (`--temporal-adapters`), so that each temporal block trains too.
    for (name, tuning) in tunings_with(&base, |method| VideoVit::temporal_targets(method.sites())) {
        let model = VideoClassifier::new(tuning.wrap(base.clone()).unwrap(), 2, 6, false);
        assert_checkpointing_changes_nothing(&format!("video {name}"), &model, &batch, &device);
    }
}

#[test]
fn vqa_models_checkpoint_exactly() {
    let _turn = generator();
    let device = Device::flex().autodiff();
    let c = support::tiny_llama_config(2);
    let base = Llama::from_tensors(c.clone(), &mut support::llama_checkpoint(&c), Path::new("tiny"), &device).unwrap();
    let (visual_tokens, width) = (3, 5);
    let sequences =
        [LmSequence { tokens: vec![5, 17, 3, 29, 11], answer_start: 3 }, LmSequence { tokens: vec![9, 4, 30], answer_start: 2 }];
    let batch = VqaBatch {
        visual: pixels(2 * visual_tokens * width, 3),
        visual_tokens,
        visual_width: width,
        text: replora::tasks::choice_model::LmBatch::pad(&sequences.iter().collect::<Vec<_>>(), 0),
    };
    for (name, tuning) in tunings(&base) {
        let projector = Projector::new(ProjectorKind::Mlp, width, c.hidden_size, 1.0, 0.02, 7, &device);
        let model = VqaModel { decoder: tuning.wrap(base.clone()).unwrap(), projector };
        assert_checkpointing_changes_nothing(&format!("vqa {name}"), &model, &batch, &device);
    }
}

/// With LoRA dropout and head dropout, each layer's recomputation drops what its first pass
/// dropped (debug builds assert it inside the pass): the same seed gives the same gradients.
#[test]
fn encoder_dropout_masks_are_drawn_again_alike() {
    let _turn = generator();
    let device = Device::flex().autodiff();
    let tmp = tempfile::tempdir().unwrap();
    support::tiny_bert(tmp.path(), "", false, true);
    let base = Encoder::load(tmp.path(), "", &device).unwrap();
    let targets = TargetModules::Names(base.targets_of(Method::Lora).iter().map(|t| t.to_string()).collect());
    let config =
        AdapterConfig { method: Method::Lora.defaults(), r: 2, target_modules: targets, lora_dropout: 0.5, seed: 3, ..Default::default() };
    let model = SequenceClassifier::new(Tuning::Adapter(config).wrap(base).unwrap(), 3, Pooling::Cls, 0.2, 4);
    // One step first, so that B is not zero and the masks change the layers' outputs.
    device.seed(1);
    let (_, grads) = model.loss_and_gradients(&text_batch(), &device, 1.0, false);
    let model = burn::optim::AdamWConfig::new().init().step(1e-2, model, grads);
    let pass = |seed: u64| {
        device.seed(seed);
        let (loss, grads) = model.loss_and_gradients(&text_batch(), &device, 1.0, true);
        (loss.into_scalar::<f32>(), support::gradient_values(&model, &grads))
    };
    let (first, again, other) = (pass(5), pass(5), pass(6));
    assert!(first == again, "the same micro-batch seed gives the same loss and gradients");
    assert!(first.1 != other.1, "another seed draws other masks");
}
