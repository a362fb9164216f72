//! Classification heads: the [`ClassifierModel`] contract (class scores from a batch), its
//! loss and evaluation, and [`SequenceClassifier`]: an adapted BERT encoder, pooling, and a
//! trainable linear head (`classifier`, as in Hugging Face `BertForSequenceClassification`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Distribution, Gradients};

use super::hf_layout::{self, HfLayout};
use crate::adapters::init::Init;
use crate::adapters::{AdaptedLinear, Deltas, PeftModel};
use crate::data::Batch;
use crate::data::tokenize::EncoderInput;
use crate::error::{Error, Result};
use crate::models::bert::Pooling;
use crate::models::encoder::Encoder;
use crate::models::recompute::TaskLoss;
use crate::progress::{Bar, Kind};
use crate::training::EvalMetrics;
use crate::weights::tensors::scalar;
use crate::weights::{HostTensor, tensors};

/// The head's module path and tensor names.
pub const HEAD: &str = "classifier";

#[derive(Module, Debug)]
pub struct SequenceClassifier {
    pub encoder: PeftModel<Encoder>,
    pub head: AdaptedLinear,
    #[module(skip)]
    pub pooling: Pooling,
    /// Dropout on the pooled representation during training.
    pub dropout: f64,
}

/// A fresh linear head `classifier`: `N(0, 0.02)` weights, zero bias, as transformers
/// initialises one; `seed` is the task's mix of the run seed.
pub fn new_head(d_in: usize, num_labels: usize, seed: u64, device: &Device) -> AdaptedLinear {
    let w: Param<Tensor<2>> = Init::new(seed, device).normal([d_in, num_labels], 0.02);
    AdaptedLinear::new(HEAD, w.val().detach(), Some(Tensor::zeros([num_labels], device)))
}

/// A head's tensors in PyTorch layout (`classifier.weight` `[labels, d_in]`, `.bias`).
pub fn head_tensors(head: &AdaptedLinear) -> BTreeMap<String, HostTensor> {
    let mut out = BTreeMap::new();
    out.insert(format!("{HEAD}.weight"), HostTensor::from_tensor(&head.weight.dense()).transpose());
    let bias = head.bias.as_ref().expect("a head has a bias");
    out.insert(format!("{HEAD}.bias"), HostTensor::from_tensor(&bias.val()));
    out
}

/// A run's head must score exactly the labels its labels file lists; a mismatch names both
/// files (rather than the head's shape alone).
pub fn check_head_labels(head_file: &Path, labels_file: &Path, labels: usize) -> Result<()> {
    let (t, _) = tensors::read(head_file)?;
    match t.get(&format!("{HEAD}.bias")).map(|b| b.shape.as_slice()) {
        Some(&[scored]) if scored != labels => Err(Error::format(
            labels_file,
            format!(
                "lists {labels} labels, but the head in {} scores {scored}: the two files no longer match (was one of them edited or replaced?)",
                head_file.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// `head` with its weights replaced by `classifier.weight` / `.bias` (PyTorch layout) from `t`,
/// checked to fit, trainable only if `head` was; `file` names errors.
pub fn read_head(head: &AdaptedLinear, mut t: BTreeMap<String, HostTensor>, file: &Path) -> Result<AdaptedLinear> {
    let (d_in, labels) = (head.d_in(), head.d_out());
    let w = tensors::take(&mut t, file, &format!("{HEAD}.weight"), &[labels, d_in])?.transpose();
    let b = tensors::take(&mut t, file, &format!("{HEAD}.bias"), &[labels])?;
    let device = head.weight.device();
    let read = AdaptedLinear::new(HEAD, w.to_tensor(&device), Some(b.to_tensor(&device)));
    Ok(if head.weight.is_require_grad() { read } else { read.no_grad() })
}

impl SequenceClassifier {
    /// A fresh head (see [`new_head`]).
    pub fn new(encoder: PeftModel<Encoder>, num_labels: usize, pooling: Pooling, dropout: f64, seed: u64) -> Self {
        let hidden = encoder.model.hidden_size();
        let head = new_head(hidden, num_labels, seed ^ 0x5ee_d0fc_1a55, &encoder.model.device());
        Self { encoder, head, pooling, dropout }
    }

    pub fn num_labels(&self) -> usize {
        self.head.d_out()
    }

    /// The head's tensors in PyTorch layout (`classifier.weight` `[labels, hidden]`, `.bias`).
    pub fn head_tensors(&self) -> BTreeMap<String, HostTensor> {
        head_tensors(&self.head)
    }

    pub fn save_head(&self, path: &Path) -> Result<()> {
        tensors::write(path, &self.head_tensors(), None)
    }

    /// Replaces the head by the one saved in `path`, checking it fits.
    pub fn load_head(self, path: &Path) -> Result<Self> {
        let (t, _) = tensors::read(path)?;
        self.with_head(t, path)
    }

    /// Replaces the head by `classifier.weight` / `.bias` (PyTorch layout) from `t`, checking
    /// they fit; `file` names errors.
    pub fn with_head(mut self, t: BTreeMap<String, HostTensor>, file: &Path) -> Result<Self> {
        self.head = read_head(&self.head, t, file)?;
        Ok(self)
    }

    /// The Hugging Face form this classifier is merged and exported in ([`HfLayout`]).
    pub fn hf_layout(&self) -> HfLayout {
        match self.encoder.model.task_head_pools(self.pooling) {
            true => HfLayout::SequenceClassification,
            false => HfLayout::SentenceTransformers,
        }
    }

    /// Writes the adapter merged into the encoder, plus the head, as one plain model directory
    /// that loads without adapter code into the same predictions: `BertForSequenceClassification`
    /// for CLS pooling through the pooler, else the sentence-transformers layout (see
    /// [`super::hf_layout`]). `max_len` is the run's truncation length.
    pub fn save_merged(&self, dir: &Path, labels: &[String], max_len: usize) -> Result<HfLayout> {
        let merged = if self.encoder.is_merged() || self.encoder.is_full_finetune() {
            self.encoder.clone()
        } else {
            self.encoder.clone().merge()?
        };
        let layout = self.hf_layout();
        match layout {
            HfLayout::SequenceClassification => {
                hf_layout::write_sequence_classification(dir, &merged.model, self.head_tensors(), labels, self.pooling)?
            }
            HfLayout::SentenceTransformers => {
                hf_layout::write_sentence_transformers(dir, &merged.model, &self.head_tensors(), labels, self.pooling, max_len)?
            }
        }
        Ok(layout)
    }

    /// The class scores of the encoder's last hidden state.
    fn head_logits(&self, hidden: Tensor<3>, input: &EncoderInput, deltas: &Deltas, training: bool) -> Tensor<2> {
        // As transformers' sequence classifiers: BERT's pooler on CLS, ModernBERT's head.
        let mut pooled = self.encoder.model.classifier_input(hidden, input.attention_mask.clone(), self.pooling, deltas);
        if training && self.dropout > 0.0 {
            let keep = 1.0 - self.dropout;
            pooled = pooled.clone() * pooled.random_like(Distribution::Bernoulli(keep)).div_scalar(keep);
        }
        self.head.forward(pooled, &Deltas::none())
    }
}

impl ClassifierModel for SequenceClassifier {
    type Input = EncoderInput;
    fn logits(&self, input: &EncoderInput, training: bool) -> Tensor<2> {
        let deltas = if training { self.encoder.training_deltas() } else { self.encoder.deltas() };
        self.head_logits(self.encoder.model.forward(input, &deltas), input, &deltas, training)
    }
    fn checkpointed_backward(
        &self,
        input: &EncoderInput,
        loss: &dyn Fn(Tensor<2>) -> Tensor<1>,
        scale: f64,
        collect: impl FnMut(Gradients),
    ) -> Tensor<1> {
        let deltas = || self.encoder.training_deltas();
        let loss = |hidden| loss(self.head_logits(hidden, input, &deltas(), true));
        self.encoder.model.checkpointed_backward(input, TaskLoss { deltas: &deltas, loss: &loss, scale }, collect)
    }
}

/// [`Objective`] for a classifier: cross-entropy of `self.logits` on the batch's labels, with
/// the update norm, learning-rate group, decay exemptions and diagnostics of the adapted model
/// in `self.$adapted` and the chance loss of `self.head`. Text, image and video classifiers differ
/// only in their batch, input and example unit.
macro_rules! classifier_objective {
    ($model:ty, $batch:ty, $adapted:ident, $unit:literal) => {
        impl $crate::training::Objective for $model {
            type Batch = $batch;
            const EXAMPLE_UNIT: &'static str = $unit;
            fn loss(&self, batch: &$batch, device: &Device) -> Tensor<1> {
                use $crate::tasks::heads::LabelledBatch;
                $crate::tasks::heads::cross_entropy(self.logits(&batch.input(device), true), batch.labels_tensor(device))
            }
            fn loss_and_gradients(
                &self,
                batch: &$batch,
                device: &Device,
                scale: f64,
                checkpoint_activations: bool,
            ) -> (Tensor<1>, burn::optim::GradientsParams) {
                use $crate::tasks::heads::{ClassifierModel, LabelledBatch, cross_entropy};
                if !checkpoint_activations {
                    return $crate::training::trainer::ordinary_pass(self, batch, device, scale);
                }
                let labels = batch.labels_tensor(device);
                let loss = |logits| cross_entropy(logits, labels.clone());
                $crate::models::recompute::summed_gradients(self, |collect| {
                    self.checkpointed_backward(&batch.input(device), &loss, scale, collect)
                })
            }
            const CHECKPOINTS: bool = true;
            fn examples(batch: &$batch) -> usize {
                $crate::tasks::heads::LabelledBatch::labels(batch).len()
            }
            fn update_norm(&self) -> Option<f64> {
                self.$adapted.relative_update_norm()
            }
            fn chance_loss(&self) -> Option<f64> {
                $crate::training::collapse::chance_loss(self.head.d_out())
            }
            fn lr_group(&self) -> Option<$crate::adapters::LrGroup> {
                self.$adapted.adapters.lr_group()
            }
            fn decay_exempt(&self) -> Vec<burn::module::ParamId> {
                [$crate::training::trainer::vector_params(self), self.$adapted.adapters.decay_exempt()].concat()
            }
            fn diagnostics(&self, grads: &burn::optim::GradientsParams) -> serde_json::Map<String, serde_json::Value> {
                self.$adapted.diagnostics(grads)
            }
        }
    };
}
pub(crate) use classifier_objective;

classifier_objective!(SequenceClassifier, Batch, encoder, "ex");

/// A model that scores classes.
pub trait ClassifierModel: Module {
    /// What one forward pass takes: tokens, pixels.
    type Input;
    /// Class scores `[batch, classes]`; `training` switches dropout (and augmentation-time
    /// behaviour) on.
    fn logits(&self, input: &Self::Input, training: bool) -> Tensor<2>;
    /// `loss` of the training logits, recomputing activations in the backward pass
    /// (`--checkpoint-activations`, [`crate::models::recompute`]); the gradients of `scale`
    /// times it are handed to `collect` one graph at a time.
    fn checkpointed_backward(
        &self,
        input: &Self::Input,
        loss: &dyn Fn(Tensor<2>) -> Tensor<1>,
        scale: f64,
        collect: impl FnMut(Gradients),
    ) -> Tensor<1>;
}

/// A host-side batch of labelled examples.
pub trait LabelledBatch {
    type Input;
    fn input(&self, device: &Device) -> Self::Input;
    fn labels(&self) -> &[usize];
    fn labels_tensor(&self, device: &Device) -> Tensor<1, Int> {
        let labels: Vec<i64> = self.labels().iter().map(|&l| l as i64).collect();
        Tensor::from_data(TensorData::new(labels, [self.labels().len()]), device)
    }
}

impl LabelledBatch for Batch {
    type Input = EncoderInput;
    fn input(&self, device: &Device) -> EncoderInput {
        self.to_input(device)
    }
    fn labels(&self) -> &[usize] {
        &self.labels
    }
}

/// Mean cross-entropy of `logits` against `labels`.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [b, _] = logits.dims();
    log_softmax(logits, 1).gather(1, labels.reshape([b, 1])).mean().neg()
}

/// Loss, accuracy and macro-F1 of `model` on `batches` (no gradients, no dropout); `progress`
/// shows a bar (not during training, whose own bar is on screen).
pub fn evaluate<M: ClassifierModel, B: LabelledBatch<Input = M::Input>>(
    model: &M,
    batches: &[B],
    num_classes: usize,
    device: &Device,
    progress: bool,
) -> (EvalMetrics, Vec<usize>) {
    let model = model.valid();
    let device = device.clone().inner();
    // The loss sum stays on the device: one read per batch (the predictions), one at the end.
    let (mut predictions, mut labels, mut loss_sum) = (vec![], vec![], None::<Tensor<1>>);
    // Scoring thousands of images takes a minute: show it (hidden when stderr is no terminal).
    let bar = if progress { Bar::new(Kind::Batches, batches.len() as u64, "evaluating") } else { Bar::hidden() };
    for batch in batches {
        bar.inc(1);
        let logits = model.logits(&batch.input(&device), false);
        let batch_loss = cross_entropy(logits.clone(), batch.labels_tensor(&device)).mul_scalar(batch.labels().len() as f64);
        loss_sum = Some(match loss_sum {
            Some(sum) => sum + batch_loss,
            None => batch_loss,
        });
        let argmax: Vec<i64> = logits.argmax(1).into_data().try_into_vec_as::<i64>().expect("int tensor");
        predictions.extend(argmax.into_iter().map(|p| p as usize));
        labels.extend_from_slice(batch.labels());
    }
    bar.finish();
    let loss = loss_sum.map_or(0.0, |sum| scalar(sum) / labels.len() as f64);
    (EvalMetrics::compute(&predictions, &labels, num_classes, loss), predictions)
}
