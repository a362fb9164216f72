//! The encoders classification runs on, behind one type: the BERT-style families
//! ([`super::bert`]) and ModernBERT ([`super::modernbert`]), chosen by `config.json`'s
//! `model_type`. An enum rather than a trait the task is generic over: the task, its run files
//! and its Hugging Face layouts stay one type, and each arm is the model's own code.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use burn::tensor::Gradients;

use super::bert::{Bert, Pooling, Variant, pool};
use super::modernbert::ModernBert;
use super::modernbert_config::MODEL_TYPE;
use crate::adapters::base_weight::Quantize;
use crate::adapters::{Adaptable, AdaptedLinear, Deltas, Method};
use crate::data::tokenize::EncoderInput;
use crate::error::Result;
use crate::models::recompute::TaskLoss;
use crate::weights::HostTensor;

/// A run holds one encoder, so the variants' size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Encoder {
    Bert(Bert),
    ModernBert(ModernBert),
}

/// Whether `model` (a directory) holds a ModernBERT checkpoint.
pub fn is_modernbert(model: &Path) -> bool {
    let config = crate::files::read_json::<serde_json::Value>(&model.join("config.json")).ok();
    config.and_then(|c| c.get("model_type")?.as_str().map(|t| t == MODEL_TYPE)).unwrap_or(false)
}

/// The default targets of `method` on `model` (a directory or an asset name), before loading it.
pub fn default_targets(model: &str, method: Method) -> &'static [&'static str] {
    use crate::models::Architecture;
    match is_modernbert(Path::new(model)) {
        true => ModernBert::default_targets(method),
        false => Variant::detect(model).default_targets(method),
    }
}

impl Encoder {
    /// Loads the encoder in `dir` with module paths under `prefix`.
    pub fn load(dir: &Path, prefix: &str, device: &Device) -> Result<Self> {
        Self::load_as(dir, prefix, Quantize::Stored, device)
    }

    /// [`Encoder::load`] with the base weights held as `quantize` says.
    pub fn load_as(dir: &Path, prefix: &str, quantize: Quantize, device: &Device) -> Result<Self> {
        match is_modernbert(dir) {
            true => Ok(Encoder::ModernBert(ModernBert::load_as(dir, prefix, quantize, device)?)),
            false => Ok(Encoder::Bert(Bert::load_as(dir, prefix, quantize, device)?)),
        }
    }

    /// Loads the encoder in `dir` with module paths as in its transformers task models, its base
    /// weights held as `quantize` says.
    pub fn load_in_task(dir: &Path, quantize: Quantize, device: &Device) -> Result<Self> {
        match is_modernbert(dir) {
            true => Ok(Encoder::ModernBert(ModernBert::load_in_task(dir, quantize, device)?)),
            false => Ok(Encoder::Bert(Bert::load_in_task(dir, quantize, device)?)),
        }
    }

    /// The last hidden state, `[batch, seq, hidden]`.
    pub fn forward(&self, input: &EncoderInput, deltas: &Deltas) -> Tensor<3> {
        match self {
            Encoder::Bert(m) => m.forward(input, deltas),
            Encoder::ModernBert(m) => m.forward(input, deltas),
        }
    }

    /// `task.loss` of [`Encoder::forward`], recomputing activations in the backward pass
    /// ([`crate::models::recompute`]); the gradients are handed to `collect`.
    pub fn checkpointed_backward(&self, input: &EncoderInput, task: TaskLoss<'_, 3>, collect: impl FnMut(Gradients)) -> Tensor<1> {
        match self {
            Encoder::Bert(m) => m.checkpointed_backward(input, task, collect),
            Encoder::ModernBert(m) => m.checkpointed_backward(input, task, collect),
        }
    }

    /// What the classifier reads, `[batch, hidden]`: the pooled state, through the checkpoint's
    /// task head where transformers' classifier uses it (BERT's pooler on CLS; ModernBERT's
    /// `head` on either pooling).
    pub fn classifier_input(&self, hidden: Tensor<3>, mask: Tensor<2>, pooling: Pooling, deltas: &Deltas) -> Tensor<2> {
        let through_head = match (self, pooling) {
            (Encoder::Bert(m), Pooling::Cls) => m.pooler_output(hidden.clone(), deltas),
            (Encoder::Bert(_), Pooling::Mean) => None,
            (Encoder::ModernBert(m), _) => m.head_output(hidden.clone(), mask.clone(), pooling, deltas),
        };
        through_head.unwrap_or_else(|| pool(hidden, mask, pooling))
    }

    /// Whether transformers' sequence classifier of this checkpoint computes what
    /// [`Encoder::classifier_input`] does for `pooling`.
    pub fn task_head_pools(&self, pooling: Pooling) -> bool {
        match self {
            Encoder::Bert(m) => m.pooler.is_some() && pooling == Pooling::Cls,
            Encoder::ModernBert(m) => m.head.is_some(),
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            Encoder::Bert(m) => m.config.hidden_size,
            Encoder::ModernBert(m) => m.config.hidden_size,
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Encoder::Bert(m) => m.embeddings.word.device(),
            Encoder::ModernBert(m) => m.tok_embeddings.device(),
        }
    }

    /// The prefix of the encoder's module paths (`bert.`, `model.`, or none).
    pub fn prefix(&self) -> &str {
        match self {
            Encoder::Bert(m) => &m.prefix,
            Encoder::ModernBert(m) => &m.prefix,
        }
    }

    /// `config.json` as transformers reads it.
    pub fn config_value(&self) -> serde_json::Value {
        match self {
            Encoder::Bert(m) => m.config.to_value(),
            Encoder::ModernBert(m) => serde_json::to_value(&m.config).expect("configs serialize"),
        }
    }

    /// transformers' class of the bare encoder and of its sequence classifier.
    pub fn architectures(&self) -> (&'static str, &'static str) {
        match self {
            Encoder::Bert(m) => (m.config.variant().bare_architecture(), "BertForSequenceClassification"),
            Encoder::ModernBert(_) => ("ModernBertModel", "ModernBertForSequenceClassification"),
        }
    }

    /// The encoder's weights as a bare model's (no prefix, no task head).
    pub fn bare_tensors(&self) -> BTreeMap<String, HostTensor> {
        let prefix = self.prefix().to_string();
        let all = match self {
            Encoder::Bert(m) => m.tensors(),
            Encoder::ModernBert(m) => m.tensors().into_iter().filter(|(k, _)| !k.starts_with("head.")).collect(),
        };
        all.into_iter().map(|(k, v)| (k.strip_prefix(prefix.as_str()).unwrap_or(&k).to_string(), v)).collect()
    }

    /// The encoder's weights as in its transformers sequence classifier (less the classifier).
    pub fn task_tensors(&self) -> BTreeMap<String, HostTensor> {
        let mut out: BTreeMap<String, HostTensor> = match self {
            Encoder::Bert(_) => self.bare_tensors().into_iter().map(|(k, v)| (format!("bert.{k}"), v)).collect(),
            Encoder::ModernBert(_) => {
                self.bare_tensors().into_iter().map(|(k, v)| (format!("{}{k}", super::modernbert::TASK_PREFIX), v)).collect()
            }
        };
        if let Encoder::ModernBert(m) = self {
            out.extend(m.tensors().into_iter().filter(|(k, _)| k.starts_with("head.")));
        }
        out
    }
}

impl Adaptable for Encoder {
    fn linears(&self) -> Vec<&AdaptedLinear> {
        match self {
            Encoder::Bert(m) => m.linears(),
            Encoder::ModernBert(m) => m.linears(),
        }
    }

    fn map_linears(self, f: &mut dyn FnMut(AdaptedLinear) -> AdaptedLinear) -> Self {
        match self {
            Encoder::Bert(m) => Encoder::Bert(m.map_linears(f)),
            Encoder::ModernBert(m) => Encoder::ModernBert(m.map_linears(f)),
        }
    }
}

impl crate::models::Architecture for Encoder {
    const DEFAULT_TARGETS: &'static [&'static str] = Bert::DEFAULT_TARGETS;
    const ADAPTER_SITES: &'static [&'static str] = Bert::ADAPTER_SITES;
    const KEY_PROJECTIONS: &'static [&'static str] = Bert::KEY_PROJECTIONS;
    fn targets_of(&self, method: Method) -> &'static [&'static str] {
        match self {
            Encoder::Bert(m) => m.targets_of(method),
            Encoder::ModernBert(m) => m.targets_of(method),
        }
    }
    fn describe(&self) -> String {
        match self {
            Encoder::Bert(m) => m.describe(),
            Encoder::ModernBert(m) => m.describe(),
        }
    }
    fn max_positions(&self) -> usize {
        match self {
            Encoder::Bert(m) => m.max_positions(),
            Encoder::ModernBert(m) => m.max_positions(),
        }
    }
    fn num_layers(&self) -> usize {
        match self {
            Encoder::Bert(m) => m.num_layers(),
            Encoder::ModernBert(m) => m.num_layers(),
        }
    }
    fn save(&self, dir: &Path) -> Result<()> {
        match self {
            Encoder::Bert(m) => m.save(dir),
            Encoder::ModernBert(m) => m.save(dir),
        }
    }
}
