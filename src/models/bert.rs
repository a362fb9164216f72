//! BERT-family encoders (BERT, MiniLM, ...) read from and written to Hugging Face checkpoints.
//!
//! Every linear is an [`AdaptedLinear`] named by its Hugging Face module path, e.g.
//! `encoder.layer.0.attention.self.query`, behind a caller-given prefix (`""` for a bare
//! `BertModel`, `"bert."` inside `BertForSequenceClassification`), so PEFT adapter files line up.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::embedding;
use serde::{Deserialize, Serialize};

use super::layers::{LayerNorm, ReadLayers, attention};
use crate::adapters::{Adaptable, AdaptedLinear, Deltas};
use crate::data::tokenize::EncoderInput;
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::kernels;
use crate::weights::Reader;
use crate::weights::tensors::{self, HostTensor};

const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";

/// The feed-forward non-linearity (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    /// Exact GELU, `x * Phi(x)` with erf.
    #[serde(rename = "gelu")]
    Gelu,
}

/// A Hugging Face BERT `config.json`. Keys this model does not use are kept in `extra`, so a
/// saved config still carries them (`architectures`, `model_type`, labels, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: HiddenAct,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<usize>,
    /// Only `"absolute"` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_embedding_type: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn default_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let config: Self = read_json(path)?;
        config.validate().map_err(|m| Error::format(path, m))?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_attention_heads));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!("layer_norm_eps must be a positive number, got {}", self.layer_norm_eps));
        }
        match self.position_embedding_type.as_deref() {
            None | Some("absolute") => Ok(()),
            Some(other) => Err(format!("position_embedding_type {other:?} is not supported (only \"absolute\")")),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Word, position and token-type embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word: Param<Tensor<2>>,
    pub position: Param<Tensor<2>>,
    pub token_type: Param<Tensor<2>>,
    pub norm: LayerNorm,
}

impl BertEmbeddings {
    fn forward(&self, input: &EncoderInput) -> Tensor<3> {
        let [_, seq] = input.input_ids.dims();
        let max = self.position.shape()[0];
        assert!(seq <= max, "sequence of {seq} tokens is longer than max_position_embeddings {max}");
        let positions = self.position.val().narrow(0, 0, seq).unsqueeze::<3>();
        let words = embedding(self.word.val(), input.input_ids.clone());
        let types = embedding(self.token_type.val(), input.token_type_ids.clone());
        self.norm.forward(words + types + positions)
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
    /// Prepended to every module path and tensor name (`""` or `"bert."`).
    #[module(skip)]
    pub prefix: String,
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` from `dir`. Tensor names may carry a `bert.`
    /// prefix or none; module paths get `prefix`.
    pub fn load(dir: &Path, prefix: &str, device: &Device) -> Result<Self> {
        let (mut tensors, file) = crate::weights::read_model_dir(dir)?;
        Self::from_tensors(BertConfig::read(&dir.join(CONFIG_FILE))?, &mut tensors, &file, prefix, device)
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
        let stored = stored_prefix(tensors, prefix);
        let mut r = Reader::new(tensors, file, device).with_prefixes(&stored, prefix);
        let (h, c) = (config.hidden_size, &config);
        let embeddings = BertEmbeddings {
            word: r.param("embeddings.word_embeddings.weight", [c.vocab_size, h])?,
            position: r.param("embeddings.position_embeddings.weight", [c.max_position_embeddings, h])?,
            token_type: r.param("embeddings.token_type_embeddings.weight", [c.type_vocab_size, h])?,
            norm: r.layer_norm("embeddings.LayerNorm", h, c.layer_norm_eps)?,
        };
        let layers = (0..c.num_hidden_layers).map(|i| r.layer(i, c)).collect::<Result<Vec<_>>>()?;
        let pooler = if r.has("pooler.dense.weight") { Some(r.linear("pooler.dense", h, h, true)?) } else { None };
        r.reject_extra_layers("encoder.layer.", c.num_hidden_layers)?;
        Ok(Self { embeddings, layers, pooler, config, prefix: prefix.to_string() })
    }

    /// Writes `config.json` and `model.safetensors` (PyTorch layout, tensor names with this
    /// model's prefix) that [`Bert::load`] and Hugging Face `transformers` read.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_json(&dir.join(CONFIG_FILE), &self.config)?;
        // transformers refuses safetensors files without this metadata.
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        tensors::write(&dir.join(WEIGHTS_FILE), &self.tensors(), Some(metadata))
    }

    /// Every weight under its Hugging Face name, linears transposed to PyTorch's `[out, in]`.
    pub fn tensors(&self) -> BTreeMap<String, HostTensor> {
        let p = &self.prefix;
        let mut out = BTreeMap::new();
        let e = &self.embeddings;
        out.insert(format!("{p}embeddings.word_embeddings.weight"), HostTensor::from_tensor(&e.word.val()));
        out.insert(format!("{p}embeddings.position_embeddings.weight"), HostTensor::from_tensor(&e.position.val()));
        out.insert(format!("{p}embeddings.token_type_embeddings.weight"), HostTensor::from_tensor(&e.token_type.val()));
        e.norm.put(&mut out, &format!("{p}embeddings.LayerNorm"));
        for (i, layer) in self.layers.iter().enumerate() {
            layer.attention_norm.put(&mut out, &format!("{p}encoder.layer.{i}.attention.output.LayerNorm"));
            layer.output_norm.put(&mut out, &format!("{p}encoder.layer.{i}.output.LayerNorm"));
        }
        for linear in self.linears() {
            linear.put(&mut out);
        }
        out
    }

    /// The last hidden state, `[batch, seq, hidden]`. Padded keys (mask 0) get no attention.
    ///
    /// # Panics
    /// If `seq` exceeds `max_position_embeddings`.
    pub fn forward(&self, input: &EncoderInput, deltas: &Deltas) -> Tensor<3> {
        let [b, t] = input.attention_mask.dims();
        // (1 - mask) * f32::MIN, as transformers does: exp() of it is exactly 0.
        let mask_bias = input.attention_mask.clone().neg().add_scalar(1.0).mul_scalar(f32::MIN).reshape([b, 1, 1, t]);
        let mut x = self.embeddings.forward(input);
        for layer in &self.layers {
            x = layer.forward(x, &mask_bias, self.config.num_attention_heads, deltas);
        }
        x
    }

    /// The pooler output `tanh(dense(hidden[:, 0]))`, `[batch, hidden]`; `None` without a pooler.
    pub fn pooler_output(&self, hidden: Tensor<3>, deltas: &Deltas) -> Option<Tensor<2>> {
        let pooler = self.pooler.as_ref()?;
        Some(pooler.forward(hidden.narrow(1, 0, 1).squeeze_dim::<2>(1), deltas).tanh())
    }
}

/// The prefix the checkpoint's tensor names carry: the model's own, none, or `bert.`.
fn stored_prefix(tensors: &BTreeMap<String, HostTensor>, prefix: &str) -> String {
    let candidates = [prefix, "", "bert."];
    let found = candidates.iter().find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")));
    found.unwrap_or(&prefix).to_string()
}

/// Bert's blocks, read through the shared [`Reader`].
trait BertReader {
    fn layer(&mut self, i: usize, c: &BertConfig) -> Result<BertLayer>;
}

impl BertReader for Reader<'_> {
    fn layer(&mut self, i: usize, c: &BertConfig) -> Result<BertLayer> {
        let (h, m, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let p = format!("encoder.layer.{i}.");
        Ok(BertLayer {
            query: self.linear(&format!("{p}attention.self.query"), h, h, true)?,
            key: self.linear(&format!("{p}attention.self.key"), h, h, true)?,
            value: self.linear(&format!("{p}attention.self.value"), h, h, true)?,
            attention_output: self.linear(&format!("{p}attention.output.dense"), h, h, true)?,
            attention_norm: self.layer_norm(&format!("{p}attention.output.LayerNorm"), h, eps)?,
            intermediate: self.linear(&format!("{p}intermediate.dense"), h, m, true)?,
            output: self.linear(&format!("{p}output.dense"), m, h, true)?,
            output_norm: self.layer_norm(&format!("{p}output.LayerNorm"), h, eps)?,
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
    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "BERT encoder, {} layers, hidden {}, {} heads, FFN {}, vocab {}{}",
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size,
            c.vocab_size,
            if self.pooler.is_some() { ", pooler" } else { "" }
        )
    }
    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }
    fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }
    fn save(&self, dir: &Path) -> Result<()> {
        Bert::save(self, dir)
    }
}
