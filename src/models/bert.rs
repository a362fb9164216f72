//! BERT-style encoders (BERT, MiniLM; RoBERTa, XLM-RoBERTa; DistilBERT) read from and written
//! to Hugging Face checkpoints; what the families change is in [`super::bert_config`] (their
//! [`Variant`]) and [`super::distilbert`] (its names and config keys).
//!
//! Every linear is an [`AdaptedLinear`] named by its Hugging Face module path, e.g.
//! `encoder.layer.0.attention.self.query`, behind a caller-given prefix (`""` for a bare
//! `BertModel`, `"bert."` inside `BertForSequenceClassification`), so PEFT adapter files line up.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Gradients;
use burn::tensor::module::embedding;
use serde::{Deserialize, Serialize};

pub use super::bert_config::{BertConfig, HiddenAct, Variant};
use super::layers::{LayerNorm, ReadLayers, attention};
use crate::adapters::base_weight::Quantize;
use crate::adapters::{Adaptable, AdaptedLinear, Deltas};
use crate::data::tokenize::EncoderInput;
use crate::error::{Error, Result};
use crate::files::write_json;
use crate::kernels;
use crate::models::recompute::{LayerPasses, TaskLoss, checkpointed_backward};
use crate::weights::Reader;
use crate::weights::tensors::{self, HostTensor};

const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";

/// Where a family's checkpoint keeps each tensor: embeddings, then each layer's under
/// `{layers}{i}.` (BERT's and RoBERTa's here, DistilBERT's in [`super::distilbert::NAMES`]).
pub struct TensorNames {
    pub word: &'static str,
    pub position: &'static str,
    /// `None`: the family has no token types (DistilBERT).
    pub token_type: Option<&'static str>,
    pub embedding_norm: &'static str,
    pub layers: &'static str,
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_output: &'static str,
    pub attention_norm: &'static str,
    pub intermediate: &'static str,
    pub output: &'static str,
    pub output_norm: &'static str,
}

pub const BERT_NAMES: TensorNames = TensorNames {
    word: "embeddings.word_embeddings",
    position: "embeddings.position_embeddings",
    token_type: Some("embeddings.token_type_embeddings"),
    embedding_norm: "embeddings.LayerNorm",
    layers: "encoder.layer.",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_output: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

/// The tensor names of `variant`'s checkpoints.
pub fn names(variant: Variant) -> &'static TensorNames {
    match variant {
        Variant::DistilBert => &super::distilbert::NAMES,
        _ => &BERT_NAMES,
    }
}

/// Word, position and (except DistilBERT's) token-type embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word: Param<Tensor<2>>,
    pub position: Param<Tensor<2>>,
    pub token_type: Option<Param<Tensor<2>>>,
    pub norm: LayerNorm,
}

impl BertEmbeddings {
    fn forward(&self, input: &EncoderInput, config: &BertConfig) -> Tensor<3> {
        let [_, seq] = input.input_ids.dims();
        let max = config.max_positions();
        assert!(seq <= max, "sequence of {seq} tokens is longer than the {max} positions of the model");
        let positions = match config.position_padding() {
            None => self.position.val().narrow(0, 0, seq).unsqueeze::<3>(),
            // RoBERTa: real tokens count from pad + 1, padding tokens sit at pad.
            Some(pad) => {
                let real = input.input_ids.clone().not_equal_elem(pad as i64).int();
                embedding(self.position.val(), real.clone().cumsum(1).mul(real).add_scalar(pad as i64))
            }
        };
        let words = embedding(self.word.val(), input.input_ids.clone());
        let embedded = match &self.token_type {
            // A table of one row (RoBERTa's) is every token's: its tokenizers give no token types.
            Some(table) if table.shape()[0] == 1 => words + table.val().unsqueeze::<3>() + positions,
            Some(table) => words + embedding(table.val(), input.token_type_ids.clone()) + positions,
            None => words + positions,
        };
        self.norm.forward(embedded)
    }
}

/// One encoder block: self-attention and feed-forward, each with a residual and a LayerNorm.
#[derive(Module, Debug)]
pub struct BertLayer {
    pub query: AdaptedLinear,
    pub key: AdaptedLinear,
    pub value: AdaptedLinear,
    /// `attention.output.dense`
    pub attention_output: AdaptedLinear,
    pub attention_norm: LayerNorm,
    /// `intermediate.dense`
    pub intermediate: AdaptedLinear,
    /// `output.dense`
    pub output: AdaptedLinear,
    pub output_norm: LayerNorm,
}

impl BertLayer {
    linear_fields!(query, key, value, attention_output, intermediate, output);

    /// `x`: `[b, t, hidden]`; `mask_bias`: `[b, 1, 1, t]`, 0 for real keys, very negative for padding.
    fn forward(&self, x: Tensor<3>, mask_bias: &Tensor<4>, heads: usize, deltas: &Deltas) -> Tensor<3> {
        let [b, t, hidden] = x.dims();
        let head_dim = hidden / heads;
        let split = |y: Tensor<3>| y.reshape([b, t, heads, head_dim]).swap_dims(1, 2);
        // Scaling q (b*t*hidden values) is cheaper than scaling the scores (b*heads*t*t).
        let q = split(self.query.forward(x.clone(), deltas).mul_scalar(1.0 / (head_dim as f64).sqrt()));
        let k = split(self.key.forward(x.clone(), deltas));
        let v = split(self.value.forward(x.clone(), deltas));
        let (k, v, mask) = deltas.with_prefix(&self.key.path, k, v, mask_bias.clone());
        let context = attention(q, k, v, mask).swap_dims(1, 2).reshape([b, t, hidden]);
        let x = self.attention_norm.forward(self.attention_output.forward(context, deltas) + x);
        let h = kernels::gelu(self.intermediate.forward(x.clone(), deltas));
        self.output_norm.forward(self.output.forward(h, deltas) + x)
    }
}

/// A BERT encoder: embeddings, `num_hidden_layers` blocks and, if the checkpoint has one, the
/// pooler (`tanh(dense(h_CLS))`).
#[derive(Module, Debug)]
pub struct Bert {
    pub embeddings: BertEmbeddings,
    pub layers: Vec<BertLayer>,
    pub pooler: Option<AdaptedLinear>,
    #[module(skip)]
    pub config: BertConfig,
    /// Prepended to every module path and tensor name (`""`, or the family's task prefix:
    /// `"bert."`, `"roberta."`, `"distilbert."`).
    #[module(skip)]
    pub prefix: String,
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` from `dir`. Tensor names may carry the
    /// family's task prefix (`bert.`, `roberta.`, `distilbert.`) or none; module paths get `prefix`.
    /// A file's F16 and BF16 linears stay 16-bit (see [`crate::adapters::FrozenBlocks`]).
    pub fn load(dir: &Path, prefix: &str, device: &Device) -> Result<Self> {
        Self::load_as(dir, prefix, Quantize::Stored, device)
    }

    /// [`Bert::load`] with the base weights held as `quantize` says (`--quantize`), each linear
    /// converted as it is read.
    pub fn load_as(dir: &Path, prefix: &str, quantize: Quantize, device: &Device) -> Result<Self> {
        let config = BertConfig::read(&dir.join(CONFIG_FILE))?;
        let mut checkpoint = crate::weights::open_model_dir(dir)?;
        Self::from_reader(config, Reader::mapped(&mut checkpoint, quantize.matrices(), device), prefix)?.quantized(quantize)
    }

    /// [`Bert::load`] with module paths as in the family's transformers task models (`bert.`,
    /// `roberta.`, `distilbert.`), as a classifier's encoder.
    pub fn load_in_task(dir: &Path, quantize: Quantize, device: &Device) -> Result<Self> {
        let config = BertConfig::read(&dir.join(CONFIG_FILE))?;
        Self::load_as(dir, config.variant().task_prefix(), quantize, device)
    }

    /// Builds the model from an already read checkpoint, removing the tensors it uses from
    /// `tensors` (a task model takes its head from what is left). `file` names errors.
    pub fn from_tensors(
        config: BertConfig,
        tensors: &mut BTreeMap<String, HostTensor>,
        file: &Path,
        prefix: &str,
        device: &Device,
    ) -> Result<Self> {
        Self::from_reader(config, Reader::new(tensors, file, device), prefix)
    }

    /// Builds the model from `r`'s tensors (under no prefix yet), module paths under `prefix`.
    fn from_reader(config: BertConfig, r: Reader, prefix: &str) -> Result<Self> {
        let (variant, n) = (config.variant(), names(config.variant()));
        let stored = stored_prefix(&r, prefix, variant);
        let mut r = r.with_prefixes(&stored, prefix);
        let (h, c) = (config.hidden_size, &config);
        let embeddings = BertEmbeddings {
            word: r.param(&format!("{}.weight", n.word), [c.vocab_size, h])?,
            position: r.param(&format!("{}.weight", n.position), [c.max_position_embeddings, h])?,
            token_type: n.token_type.map(|t| r.param(&format!("{t}.weight"), [c.type_vocab_size, h])).transpose()?,
            norm: r.layer_norm(n.embedding_norm, h, c.layer_norm_eps)?,
        };
        let layers = (0..c.num_hidden_layers).map(|i| r.layer(i, c, n)).collect::<Result<Vec<_>>>()?;
        let pooler = match variant.reads_pooler() && r.has("pooler.dense.weight") {
            true => Some(r.linear("pooler.dense", h, h, true)?),
            false => None,
        };
        r.reject_extra_layers(n.layers, c.num_hidden_layers)?;
        Ok(Self { embeddings, layers, pooler, config, prefix: prefix.to_string() })
    }

    /// Writes `config.json` and `model.safetensors` (PyTorch layout, tensor names with this
    /// model's prefix) that [`Bert::load`] and Hugging Face `transformers` read.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_json(&dir.join(CONFIG_FILE), &self.config.to_value())?;
        // transformers refuses safetensors files without this metadata.
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        tensors::write(&dir.join(WEIGHTS_FILE), &self.tensors(), Some(metadata))
    }

    /// Every weight under its Hugging Face name, linears transposed to PyTorch's `[out, in]`.
    pub fn tensors(&self) -> BTreeMap<String, HostTensor> {
        let (p, n) = (&self.prefix, names(self.config.variant()));
        let mut out = BTreeMap::new();
        let e = &self.embeddings;
        out.insert(format!("{p}{}.weight", n.word), HostTensor::from_tensor(&e.word.val()));
        out.insert(format!("{p}{}.weight", n.position), HostTensor::from_tensor(&e.position.val()));
        if let (Some(name), Some(table)) = (n.token_type, &e.token_type) {
            out.insert(format!("{p}{name}.weight"), HostTensor::from_tensor(&table.val()));
        }
        e.norm.put(&mut out, &format!("{p}{}", n.embedding_norm));
        for (i, layer) in self.layers.iter().enumerate() {
            layer.attention_norm.put(&mut out, &format!("{p}{}{i}.{}", n.layers, n.attention_norm));
            layer.output_norm.put(&mut out, &format!("{p}{}{i}.{}", n.layers, n.output_norm));
        }
        for linear in self.linears() {
            linear.put(&mut out);
        }
        out
    }

    /// The last hidden state, `[batch, seq, hidden]`. Padded keys (mask 0) get no attention.
    ///
    /// # Panics
    /// If `seq` exceeds [`BertConfig::max_positions`].
    pub fn forward(&self, input: &EncoderInput, deltas: &Deltas) -> Tensor<3> {
        let mask_bias = mask_bias(&input.attention_mask);
        let mut x = self.embeddings.forward(input, &self.config);
        for layer in &self.layers {
            x = layer.forward(x, &mask_bias, self.config.num_attention_heads, deltas);
        }
        x
    }

    /// `task.loss` of [`Bert::forward`], its gradients handed to `collect`, recomputing each
    /// layer's activations in the backward pass ([`crate::models::recompute`]).
    pub fn checkpointed_backward(&self, input: &EncoderInput, task: TaskLoss<'_, 3>, collect: impl FnMut(Gradients)) -> Tensor<1> {
        let heads = self.config.num_attention_heads;
        let mask_bias = mask_bias(&input.attention_mask);
        let (plain, frozen, plain_mask) = (self.valid(), (task.deltas)().without_autodiff(), mask_bias.clone().inner());
        let passes = LayerPasses {
            embeddings: self.embeddings.forward(input, &self.config),
            embed_again: &|| self.embeddings.forward(input, &self.config),
            layers: self.layers.len(),
            plain_layer: &|i, x| plain.layers[i].forward(x, &plain_mask, heads, &frozen),
            tracked_layer: &|i, x| self.layers[i].forward(x, &mask_bias, heads, &(task.deltas)()),
            loss: task.loss,
            scale: task.scale,
        };
        checkpointed_backward(passes, collect)
    }

    /// The pooler output `tanh(dense(hidden[:, 0]))`, `[batch, hidden]`; `None` without a pooler.
    pub fn pooler_output(&self, hidden: Tensor<3>, deltas: &Deltas) -> Option<Tensor<2>> {
        let pooler = self.pooler.as_ref()?;
        Some(pooler.forward(hidden.narrow(1, 0, 1).squeeze_dim::<2>(1), deltas).tanh())
    }
}

/// The additive attention mask `[b, 1, 1, t]` of `attention_mask` `[b, t]`: `(1 - mask) *
/// f32::MIN`, as transformers does (exp() of it is exactly 0).
fn mask_bias(attention_mask: &Tensor<2>) -> Tensor<4> {
    let [b, t] = attention_mask.dims();
    attention_mask.clone().neg().add_scalar(1.0).mul_scalar(f32::MIN).reshape([b, 1, 1, t])
}

/// The prefix the checkpoint's tensor names carry: the model's own, none, or the family's
/// task prefix (`bert.`, `roberta.`, `distilbert.`).
fn stored_prefix(r: &Reader, prefix: &str, variant: Variant) -> String {
    let word = names(variant).word;
    let candidates = [prefix, "", variant.task_prefix()];
    let found = candidates.iter().find(|p| r.has(&format!("{p}{word}.weight")));
    found.unwrap_or(&prefix).to_string()
}

/// Bert's blocks, read through the shared [`Reader`] under the family's names.
trait BertReader {
    fn layer(&mut self, i: usize, c: &BertConfig, n: &TensorNames) -> Result<BertLayer>;
}

impl BertReader for Reader<'_> {
    fn layer(&mut self, i: usize, c: &BertConfig, n: &TensorNames) -> Result<BertLayer> {
        let (h, m, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let p = format!("{}{i}.", n.layers);
        Ok(BertLayer {
            query: self.linear(&format!("{p}{}", n.query), h, h, true)?,
            key: self.linear(&format!("{p}{}", n.key), h, h, true)?,
            value: self.linear(&format!("{p}{}", n.value), h, h, true)?,
            attention_output: self.linear(&format!("{p}{}", n.attention_output), h, h, true)?,
            attention_norm: self.layer_norm(&format!("{p}{}", n.attention_norm), h, eps)?,
            intermediate: self.linear(&format!("{p}{}", n.intermediate), h, m, true)?,
            output: self.linear(&format!("{p}{}", n.output), m, h, true)?,
            output_norm: self.layer_norm(&format!("{p}{}", n.output_norm), h, eps)?,
        })
    }
}

impl Adaptable for Bert {
    fn linears(&self) -> Vec<&AdaptedLinear> {
        let layers = self.layers.iter().flat_map(|l| l.linears());
        layers.chain(self.pooler.as_ref()).collect()
    }

    fn map_linears(self, f: &mut dyn FnMut(AdaptedLinear) -> AdaptedLinear) -> Self {
        let layers = self.layers.into_iter().map(|l| l.map_linears(f)).collect();
        Self { layers, pooler: self.pooler.map(f), ..self }
    }
}

crate::choice_enum! {
    /// How a sentence embedding is read off the last hidden state.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Pooling: "pooling" {
        /// The first (`[CLS]`) token's state.
        Cls => "cls",
        /// The mean over real (unmasked) tokens, as sentence-transformers.
        Mean => "mean",
    }
}

/// `[batch, seq, hidden]` -> `[batch, hidden]`. `mask` (`[batch, seq]`, 1 for real tokens)
/// limits the mean to real tokens; a row with no real token pools to 0.
pub fn pool(hidden: Tensor<3>, mask: Tensor<2>, pooling: Pooling) -> Tensor<2> {
    match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1).squeeze_dim(1),
        Pooling::Mean => {
            let mask = mask.unsqueeze_dim::<3>(2);
            let count = mask.clone().sum_dim(1).clamp_min(1e-9);
            (hidden * mask).sum_dim(1).div(count).squeeze_dim(1)
        }
    }
}

impl crate::models::Architecture for Bert {
    const DEFAULT_TARGETS: &'static [&'static str] = &["query", "value"];
    const ADAPTER_SITES: &'static [&'static str] = &["attention.output.dense", "output.dense"];
    const KEY_PROJECTIONS: &'static [&'static str] = &["key"];
    fn targets_of(&self, method: crate::adapters::Method) -> &'static [&'static str] {
        self.config.variant().default_targets(method)
    }
    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{} encoder, {} layers, hidden {}, {} heads, FFN {}, vocab {}{}",
            c.variant().name(),
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size,
            c.vocab_size,
            if self.pooler.is_some() { ", pooler" } else { "" }
        )
    }
    fn max_positions(&self) -> usize {
        self.config.max_positions()
    }
    fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }
    fn save(&self, dir: &Path) -> Result<()> {
        Bert::save(self, dir)
    }
}
