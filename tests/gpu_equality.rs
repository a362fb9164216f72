//! The GPU path computes what the CPU does: on tiny BERT, LLaMA and ViT models, for every tuning
//! method, one training batch's loss (the forward pass), every parameter's gradient and every
//! parameter after one AdamW step are the same on `--device wgpu` as on `flex`, and a run
//! trained on wgpu evaluates on the CPU to the scores it reported.
//!
//! Needs a wgpu device: `scripts/gpu-lavapipe` installs Mesa's lavapipe (Vulkan on the CPU) and
//! runs this file (docs/gpu.md).
#![cfg(feature = "wgpu")]

mod support;

use std::path::Path;

use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use replora::adapters::{AdapterConfig, TargetModules};
use replora::device::{Backend, DeviceSpec};
use replora::models::Architecture;
use replora::models::bert::Bert;
use replora::models::dinov2::Dinov2;
use replora::models::llama::Llama;
use replora::run::{self, Start};
use replora::tasks::classification::ClassificationSpec;
use replora::tasks::image_classification::ImageClassificationSpec;
use replora::tasks::multiple_choice::MultipleChoiceSpec;
use replora::tasks::{Classification, ImageClassification, MultipleChoice, Task, Tuning};
use replora::training::TrainConfig;
use replora::training::trainer::{Objective, optimizer, step};

/// Each tensor may differ from the CPU's by this share of its largest magnitude, plus
/// [`ABSOLUTE`] (f32 sums run in another order on the GPU).
const RELATIVE: f64 = 1e-4;
const ABSOLUTE: f64 = 1e-6;

const METHODS: [&str; 6] = ["lora", "dora", "replora", "adapter", "prefix", "full"];

fn wgpu() -> Device {
    DeviceSpec { backend: Backend::Wgpu, index: None }.open().expect("a wgpu device (scripts/gpu-lavapipe installs lavapipe)")
}

fn host<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().try_into_vec_as::<f32>().unwrap()
}

/// Every float parameter's values and, where `grads` has one, its gradient, in module order.
#[derive(Default)]
struct Snapshot {
    values: Vec<Vec<f32>>,
    grads: Vec<Option<Vec<f32>>>,
}

struct Collect<'a> {
    grads: Option<&'a GradientsParams>,
    out: Snapshot,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out.values.push(host(&param.val()));
        self.out.grads.push(self.grads.and_then(|g| g.get::<D>(param.id)).map(|g| host(&g)));
    }
}

fn snapshot<M: Module>(model: &M, grads: Option<&GradientsParams>) -> Snapshot {
    let mut collect = Collect { grads, out: Snapshot::default() };
    model.visit(&mut collect);
    collect.out
}

/// The largest difference of `a` from `b` in units of the allowed one (pass: <= 1).
fn excess(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max);
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
    diff / (RELATIVE * scale + ABSOLUTE)
}

/// The worst tensor of two snapshots: (excess, which tensor).
fn worst(gpu: &[Vec<f32>], cpu: &[Vec<f32>]) -> (f64, usize) {
    assert_eq!(gpu.len(), cpu.len(), "the same parameters on both devices");
    gpu.iter().zip(cpu).map(|(g, c)| excess(g, c)).enumerate().map(|(i, e)| (e, i)).fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// Loss, gradients and parameters after one AdamW step of `spec`'s first training batch.
fn one_step<T: Task>(spec: &T::Spec, device: &Device) -> (f32, Snapshot, Snapshot) {
    let device = device.clone().autodiff();
    let task = T::open(spec.clone(), &device).unwrap();
    let data = task.data().unwrap();
    let model = task.build(&data).unwrap();
    let batch = task.train_batches(&data, 0).into_iter().next().expect("a training batch");
    let loss = model.loss(&batch, &device);
    let value = host(&loss)[0];
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let before = snapshot(&model, Some(&grads));
    let cfg = TrainConfig { lr: 1e-2, ..TrainConfig::default() };
    let mut optim = optimizer(&cfg, model.decay_exempt());
    let after = snapshot(&step(&mut optim, cfg.lr, model, grads), None);
    (value, before, after)
}

/// Compares one step on wgpu with one on the CPU; returns the worst excess, for the report.
fn check<T: Task>(what: &str, spec: T::Spec, gpu: &Device) -> f64 {
    let (cpu_loss, cpu_before, cpu_after) = one_step::<T>(&spec, &Device::flex());
    let (gpu_loss, gpu_before, gpu_after) = one_step::<T>(&spec, gpu);
    let loss = excess(&[gpu_loss], &[cpu_loss]);
    assert!(loss <= 1.0, "{what}: loss {gpu_loss} on wgpu, {cpu_loss} on the CPU");
    let trained = |s: &Snapshot| s.grads.iter().flatten().cloned().collect::<Vec<_>>();
    let (cpu_grads, gpu_grads) = (trained(&cpu_before), trained(&gpu_before));
    assert!(!cpu_grads.is_empty(), "{what}: no parameter has a gradient");
    let presence = |s: &Snapshot| s.grads.iter().map(Option::is_some).collect::<Vec<_>>();
    assert_eq!(presence(&gpu_before), presence(&cpu_before), "{what}: the same parameters train");
    let (grad, gi) = worst(&gpu_grads, &cpu_grads);
    assert!(grad <= 1.0, "{what}: gradient {gi} differs by {grad:.2} x the tolerance");
    let (param, pi) = worst(&gpu_after.values, &cpu_after.values);
    assert!(param <= 1.0, "{what}: parameter {pi} after the step differs by {param:.2} x the tolerance");
    let changed = cpu_after.values.iter().zip(&cpu_before.values).any(|(a, b)| a != b);
    assert!(changed, "{what}: the step changed no parameter, so the comparison shows nothing");
    eprintln!("{what}: loss {cpu_loss:.6}; worst excess (1 = tolerance): loss {loss:.3}, gradient {grad:.3}, updated parameter {param:.3}");
    loss.max(grad).max(param)
}

/// `method` with the architecture's default targets, as the CLI chooses them.
fn tuning<A: Architecture>(method: &str) -> Tuning {
    if method == "full" {
        return Tuning::Full;
    }
    let method = method.parse().unwrap();
    let targets = A::default_targets(method).iter().map(|t| t.to_string()).collect();
    Tuning::Adapter(AdapterConfig { target_modules: TargetModules::Names(targets), ..AdapterConfig::new(method) })
}

fn train_config() -> TrainConfig {
    TrainConfig { batch_size: 4, epochs: 1, ..TrainConfig::default() }
}

fn bert_spec(dir: &Path, method: &str) -> ClassificationSpec {
    ClassificationSpec {
        model: dir.join("bert").to_str().unwrap().into(),
        data: dir.join("data.jsonl").to_str().unwrap().into(),
        max_len: 16,
        head_dropout: 0.0,
        tuning: tuning::<Bert>(method),
        train: train_config(),
        ..ClassificationSpec::default()
    }
}

fn bert_files(dir: &Path) {
    support::tiny_bert_model(&dir.join("bert"));
    support::word_dataset(&dir.join("data.jsonl"), 3, 10);
}

#[test]
fn bert_classification_steps_equal_the_cpu_for_every_method() {
    let (gpu, dir) = (wgpu(), tempfile::tempdir().unwrap());
    bert_files(dir.path());
    for method in METHODS {
        check::<Classification>(&format!("BERT {method}"), bert_spec(dir.path(), method), &gpu);
    }
}

#[test]
fn llama_multiple_choice_steps_equal_the_cpu_for_every_method() {
    let (gpu, dir) = (wgpu(), tempfile::tempdir().unwrap());
    support::tiny_llama_model(&dir.path().join("llama"));
    support::choice_task(&dir.path().join("task.json"), 16);
    for method in METHODS {
        let spec = MultipleChoiceSpec {
            model: dir.path().join("llama").to_str().unwrap().into(),
            tasks: vec![dir.path().join("task.json").to_str().unwrap().into()],
            eval_tasks: vec![],
            sizes: [8, 4, 4],
            // A prefix takes 10 of the tiny model's 16 positions.
            max_len: if method == "prefix" { 6 } else { 16 },
            exact_match: false,
            tuning: tuning::<Llama>(method),
            train: train_config(),
            ..MultipleChoiceSpec::default()
        };
        check::<MultipleChoice>(&format!("LLaMA {method}"), spec, &gpu);
    }
}

#[test]
fn vit_image_classification_steps_equal_the_cpu_for_every_method() {
    let (gpu, dir) = (wgpu(), tempfile::tempdir().unwrap());
    support::tiny_dinov2(&dir.path().join("vit"));
    support::image_folder(&dir.path().join("images"), &["red", "green", "blue"], 6);
    for method in METHODS {
        let spec = ImageClassificationSpec {
            model: dir.path().join("vit").to_str().unwrap().into(),
            data: dir.path().join("images").to_str().unwrap().into(),
            image_size: 16,
            images: [9, 3, 6],
            augment: false,
            tuning: tuning::<Dinov2>(method),
            train: train_config(),
            ..ImageClassificationSpec::default()
        };
        check::<ImageClassification>(&format!("ViT {method}"), spec, &gpu);
    }
}

#[test]
fn a_run_trained_on_wgpu_scores_the_same_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    bert_files(dir.path());
    let out = dir.path().join("run");
    let spec = ClassificationSpec { train: TrainConfig { epochs: 2, ..train_config() }, ..bert_spec(dir.path(), "lora") };
    let trained = run::train::<Classification>(&spec, &out, Start::New, &[wgpu()]).unwrap();
    let rescored = run::evaluate::<Classification>(&out, None, &Device::flex()).unwrap();
    assert_eq!(trained.test.accuracy, rescored.test.accuracy);
    let loss = excess(&[rescored.test.loss as f32], &[trained.test.loss as f32]);
    assert!(loss <= 1.0, "test loss {} on wgpu, {} re-scored on the CPU", trained.test.loss, rescored.test.loss);
}

#[test]
fn a_missing_wgpu_device_is_named() {
    let count = burn::tensor::Device::enumerate(burn::tensor::DeviceType::Wgpu).into_vec().len();
    let e = DeviceSpec { backend: Backend::Wgpu, index: Some(count) }.open().unwrap_err().to_string();
    assert!(e.contains(&format!("no device {count}; this machine has {count} wgpu device(s)")), "{e}");
}
