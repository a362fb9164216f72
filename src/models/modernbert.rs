//! ModernBERT (`model_type` modernbert), read from and written to Hugging Face checkpoints.
//!
//! What differs from BERT ([`super::bert`]): no position or token-type tables (rotary
//! embeddings, with one base for the global layers and another for the local ones); pre-norm
//! layers (layer 0's attention input is not normed) and a final norm; LayerNorms and linears
//! without biases by default (`norm_bias`, `attention_bias`, `mlp_bias`); a GeGLU feed-forward
//! (`mlp.Wi` gives the input half, then the gate half; exact GELU); every
//! `global_attn_every_n_layers`-th layer attends to every token, the others only to keys at most
//! `local_attention / 2` positions away; task checkpoints' `head` (dense, GELU, norm) before
//! the classifier, on the CLS token or the mean (`classifier_pooling`).
//!
//! The fused `attn.Wqkv` is held as three linears, `attn.query`, `attn.key`, `attn.value`, each
//! a block of its rows ([`crate::adapters::FusedRows`], as Phi-3's `qkv_proj`), so that each
//! method adapts the query and the value on their own (RepLoRA generates their factors
//! together); `--targets Wqkv` names all three, and it is written back fused, in checkpoints and
//! PEFT adapters ([`crate::formats::peft`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Gradients;
use burn::tensor::module::embedding;

use super::bert::{Pooling, pool};
use super::layers::{LayerNorm, ReadLayers, attention};
use super::llama_positions::rope_tables;
pub use super::modernbert_config::ModernBertConfig;
use crate::adapters::base_weight::Quantize;
use crate::adapters::{Adaptable, AdaptedLinear, Deltas, put_linears};
use crate::data::tokenize::EncoderInput;
use crate::error::{Error, Result};
use crate::files::write_json;
use crate::kernels;
use crate::models::recompute::{LayerPasses, TaskLoss, checkpointed_backward};
use crate::weights::Reader;
use crate::weights::tensors::{self, HostTensor};

const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";
/// The encoder's module prefix inside transformers' task models (`base_model_prefix`).
pub const TASK_PREFIX: &str = "model.";

/// One pre-norm encoder layer.
#[derive(Module, Debug)]
pub struct ModernBertLayer {
    /// `None` in layer 0, whose input is the normed embeddings.
    pub attn_norm: Option<LayerNorm>,
    /// `attn.Wqkv`, split by rows.
    pub query: AdaptedLinear,
    pub key: AdaptedLinear,
    pub value: AdaptedLinear,
    /// `attn.Wo`
    pub attn_output: AdaptedLinear,
    pub mlp_norm: LayerNorm,
    /// `mlp.Wi`: the input half, then the gate half.
    pub mlp_in: AdaptedLinear,
    /// `mlp.Wo`
    pub mlp_out: AdaptedLinear,
}

/// The rotary tables and additive mask of one kind of layer (global or local).
struct Positions {
    cos: Tensor<2>,
    sin: Tensor<2>,
    /// `[batch, 1, t, t]`
    mask: Tensor<4>,
}

impl ModernBertLayer {
    linear_fields!(query, key, value, attn_output, mlp_in, mlp_out);

    fn forward(&self, x: Tensor<3>, at: &Positions, heads: usize, deltas: &Deltas) -> Tensor<3> {
        let [b, t, hidden] = x.dims();
        let head_dim = hidden / heads;
        let h = match &self.attn_norm {
            Some(norm) => norm.forward(x.clone()),
            None => x.clone(),
        };
        let split = |y: Tensor<3>| y.reshape([b, t, heads, head_dim]).swap_dims(1, 2);
        let q = kernels::rope(split(self.query.forward(h.clone(), deltas)), &at.cos, &at.sin);
        let k = kernels::rope(split(self.key.forward(h.clone(), deltas)), &at.cos, &at.sin);
        let v = split(self.value.forward(h, deltas));
        let (k, v, mask) = deltas.with_prefix(&self.key.path, k, v, at.mask.clone());
        let q = q.mul_scalar(1.0 / (head_dim as f64).sqrt());
        let context = attention(q, k, v, mask).swap_dims(1, 2).reshape([b, t, hidden]);
        let x = x + self.attn_output.forward(context, deltas);
        let both = self.mlp_in.forward(self.mlp_norm.forward(x.clone()), deltas);
        let m = both.dims()[2] / 2;
        let gated = kernels::gelu(both.clone().narrow(2, 0, m)) * both.narrow(2, m, m);
        x + self.mlp_out.forward(gated, deltas)
    }
}

/// Task checkpoints' `head`: `norm(gelu(dense(pooled)))`, before the classifier.
#[derive(Module, Debug)]
pub struct PredictionHead {
    pub dense: AdaptedLinear,
    pub norm: LayerNorm,
}

/// A ModernBERT encoder: token embeddings and their norm, the layers, the final norm and, in
/// task checkpoints, the prediction head.
#[derive(Module, Debug)]
pub struct ModernBert {
    pub tok_embeddings: Param<Tensor<2>>,
    pub embedding_norm: LayerNorm,
    pub layers: Vec<ModernBertLayer>,
    pub final_norm: LayerNorm,
    pub head: Option<PredictionHead>,
    #[module(skip)]
    pub config: ModernBertConfig,
    /// Prepended to the encoder's module paths and tensor names (`""` or `"model."`); the head
    /// sits beside the encoder (`head.dense`), outside it.
    #[module(skip)]
    pub prefix: String,
}

impl ModernBert {
    /// Loads `config.json` and `model.safetensors` from `dir`; tensor names may carry `model.`
    /// or not, module paths get `prefix`.
    /// A file's F16 and BF16 linears stay 16-bit (see [`crate::adapters::FrozenBlocks`]).
    pub fn load(dir: &Path, prefix: &str, device: &Device) -> Result<Self> {
        Self::load_as(dir, prefix, Quantize::Stored, device)
    }

    /// [`ModernBert::load`] with the base weights held as `quantize` says (`--quantize`), each
    /// linear converted as it is read.
    pub fn load_as(dir: &Path, prefix: &str, quantize: Quantize, device: &Device) -> Result<Self> {
        let config = ModernBertConfig::read(&dir.join(CONFIG_FILE))?;
        let mut checkpoint = crate::weights::open_model_dir(dir)?;
        Self::from_reader(config, Reader::mapped(&mut checkpoint, quantize.matrices(), device), prefix)?.quantized(quantize)
    }

    /// [`ModernBert::load_as`] with module paths as in transformers' task models (`model.`).
    pub fn load_in_task(dir: &Path, quantize: Quantize, device: &Device) -> Result<Self> {
        Self::load_as(dir, TASK_PREFIX, quantize, device)
    }

    /// Builds the model from an already read checkpoint, removing the tensors it uses.
    pub fn from_tensors(
        config: ModernBertConfig,
        tensors: &mut BTreeMap<String, HostTensor>,
        file: &Path,
        prefix: &str,
        device: &Device,
    ) -> Result<Self> {
        Self::from_reader(config, Reader::new(tensors, file, device), prefix)
    }

    /// Builds the model from `r`'s tensors (under no prefix yet), module paths under `prefix`.
    fn from_reader(config: ModernBertConfig, r: Reader, prefix: &str) -> Result<Self> {
        let word = "embeddings.tok_embeddings.weight";
        let stored = [prefix, "", TASK_PREFIX].into_iter().find(|p| r.has(&format!("{p}{word}"))).unwrap_or(prefix);
        let c = &config;
        let h = c.hidden_size;
        let mut r = r.with_prefixes(stored, prefix);
        let tok_embeddings = r.param(word, [c.vocab_size, h])?;
        let embedding_norm = norm(&mut r, "embeddings.norm", c)?;
        let layers = (0..c.num_hidden_layers).map(|i| read_layer(&mut r, i, c)).collect::<Result<Vec<_>>>()?;
        let final_norm = norm(&mut r, "final_norm", c)?;
        r.reject_extra_layers("layers.", c.num_hidden_layers)?;
        // The task head's names carry no prefix, in the file or in the model.
        let mut r = r.with_prefixes("", "");
        let head = match r.has("head.dense.weight") {
            true => Some(PredictionHead { dense: r.linear("head.dense", h, h, c.classifier_bias)?, norm: norm(&mut r, "head.norm", c)? }),
            false => None,
        };
        Ok(Self { tok_embeddings, embedding_norm, layers, final_norm, head, config, prefix: prefix.to_string() })
    }

    /// Writes `config.json` and `model.safetensors` (`Wqkv` fused again) that
    /// [`ModernBert::load`] and transformers read.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_json(&dir.join(CONFIG_FILE), &serde_json::to_value(&self.config).expect("configs serialize"))?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        tensors::write(&dir.join(WEIGHTS_FILE), &self.tensors(), Some(metadata))
    }

    /// Every weight under its Hugging Face name (the encoder's with this model's prefix),
    /// linears in PyTorch's `[out, in]`, the query, key and value fused as `attn.Wqkv`.
    pub fn tensors(&self) -> BTreeMap<String, HostTensor> {
        let p = &self.prefix;
        let mut out = BTreeMap::new();
        out.insert(format!("{p}embeddings.tok_embeddings.weight"), HostTensor::from_tensor(&self.tok_embeddings.val()));
        self.embedding_norm.put(&mut out, &format!("{p}embeddings.norm"));
        self.final_norm.put(&mut out, &format!("{p}final_norm"));
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(norm) = &layer.attn_norm {
                norm.put(&mut out, &format!("{p}layers.{i}.attn_norm"));
            }
            layer.mlp_norm.put(&mut out, &format!("{p}layers.{i}.mlp_norm"));
            put_linears(&layer.linears(), &mut out);
        }
        if let Some(head) = &self.head {
            head.dense.put(&mut out);
            head.norm.put(&mut out, "head.norm");
        }
        out
    }

    /// The last hidden state (after the final norm), `[batch, seq, hidden]`. Padded keys (mask
    /// 0) get no attention.
    ///
    /// # Panics
    /// If `seq` exceeds `max_position_embeddings`.
    pub fn forward(&self, input: &EncoderInput, deltas: &Deltas) -> Tensor<3> {
        let c = &self.config;
        let positions = self.positions(&input.attention_mask);
        let mut x = self.embed(input);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, &positions[c.is_local(i) as usize], c.num_attention_heads, deltas);
        }
        self.final_norm.forward(x)
    }

    /// `task.loss` of [`ModernBert::forward`], its gradients handed to `collect`, recomputing
    /// each layer's activations in the backward pass ([`crate::models::recompute`]).
    pub fn checkpointed_backward(&self, input: &EncoderInput, task: TaskLoss<'_, 3>, collect: impl FnMut(Gradients)) -> Tensor<1> {
        let c = &self.config;
        let (plain, frozen) = (self.valid(), (task.deltas)().without_autodiff());
        // The tables on both devices, as the fused kernels take all their inputs on one.
        let plain_positions = plain.positions(&input.attention_mask.clone().inner());
        let positions = self.positions(&input.attention_mask);
        let passes = LayerPasses {
            embeddings: self.embed(input),
            embed_again: &|| self.embed(input),
            layers: self.layers.len(),
            plain_layer: &|i, x| plain.layers[i].forward(x, &plain_positions[c.is_local(i) as usize], c.num_attention_heads, &frozen),
            tracked_layer: &|i, x| self.layers[i].forward(x, &positions[c.is_local(i) as usize], c.num_attention_heads, &(task.deltas)()),
            loss: &|x| (task.loss)(self.final_norm.forward(x)),
            scale: task.scale,
        };
        checkpointed_backward(passes, collect)
    }

    /// The normed token embeddings, layer 0's input.
    fn embed(&self, input: &EncoderInput) -> Tensor<3> {
        self.embedding_norm.forward(embedding(self.tok_embeddings.val(), input.input_ids.clone()))
    }

    /// The global layers' positions, then the local layers', on `attention_mask`'s device.
    fn positions(&self, attention_mask: &Tensor<2>) -> [Positions; 2] {
        let c = &self.config;
        let [b, t] = attention_mask.dims();
        assert!(
            t <= c.max_position_embeddings,
            "sequence of {t} tokens is longer than the {} positions of the model",
            c.max_position_embeddings
        );
        let device = attention_mask.device();
        [false, true].map(|local| {
            let (cos, sin) = rope_tables(c.head_dim(), c.rope_base(local), 0, t, &device);
            let half = if local { c.half_window() } else { t };
            Positions { cos, sin, mask: mask(attention_mask, b, t, half) }
        })
    }

    /// `norm(gelu(dense(pooled)))` of the pooled last hidden state, as transformers'
    /// `ModernBertForSequenceClassification` feeds its classifier; `None` without a head.
    pub fn head_output(&self, hidden: Tensor<3>, mask: Tensor<2>, pooling: Pooling, deltas: &Deltas) -> Option<Tensor<2>> {
        let head = self.head.as_ref()?;
        Some(head.norm.forward(kernels::gelu(head.dense.forward(pool(hidden, mask, pooling), deltas))))
    }
}

/// The additive mask `[b, 1, t, t]`: query `i` sees the real keys at most `half` positions away
/// (transformers' sliding window: `|i - j| <= local_attention / 2`). One `f32::MIN` per hidden
/// key (not a sum of two), so a padded query with no real key in its window attends uniformly,
/// as transformers' eager attention does, instead of giving NaN.
fn mask(attention_mask: &Tensor<2>, b: usize, t: usize, half: usize) -> Tensor<4> {
    let window: Vec<f32> = (0..t * t).map(|n| f32::from((n / t).abs_diff(n % t) <= half)).collect();
    let window = Tensor::<2>::from_data(TensorData::new(window, [t, t]), &attention_mask.device()).reshape([1, 1, t, t]);
    let seen = window * attention_mask.clone().reshape([b, 1, 1, t]);
    seen.neg().add_scalar(1.0).mul_scalar(f32::MIN)
}

/// A LayerNorm with or without its bias, as the config says (`norm_bias`).
fn norm(r: &mut Reader, name: &str, c: &ModernBertConfig) -> Result<LayerNorm> {
    match c.norm_bias {
        true => r.layer_norm(name, c.hidden_size, c.norm_eps),
        false => r.layer_norm_without_bias(name, c.hidden_size, c.norm_eps),
    }
}

fn read_layer(r: &mut Reader, i: usize, c: &ModernBertConfig) -> Result<ModernBertLayer> {
    let (h, m) = (c.hidden_size, c.intermediate_size);
    let p = format!("layers.{i}.");
    let qkv = r.fused_linears(&format!("{p}attn.Wqkv"), h, &[("query", h), ("key", h), ("value", h)], c.attention_bias)?;
    let [query, key, value] = qkv.try_into().expect("three blocks were asked for");
    Ok(ModernBertLayer {
        attn_norm: if i == 0 { None } else { Some(norm(r, &format!("{p}attn_norm"), c)?) },
        query,
        key,
        value,
        attn_output: r.linear(&format!("{p}attn.Wo"), h, h, c.attention_bias)?,
        mlp_norm: norm(r, &format!("{p}mlp_norm"), c)?,
        mlp_in: r.linear(&format!("{p}mlp.Wi"), h, 2 * m, c.mlp_bias)?,
        mlp_out: r.linear(&format!("{p}mlp.Wo"), m, h, c.mlp_bias)?,
    })
}

impl Adaptable for ModernBert {
    fn linears(&self) -> Vec<&AdaptedLinear> {
        let layers = self.layers.iter().flat_map(|l| l.linears());
        layers.chain(self.head.as_ref().map(|h| &h.dense)).collect()
    }

    fn map_linears(self, f: &mut dyn FnMut(AdaptedLinear) -> AdaptedLinear) -> Self {
        let layers = self.layers.into_iter().map(|l| l.map_linears(f)).collect();
        let head = self.head.map(|h| PredictionHead { dense: f(h.dense), ..h });
        Self { layers, head, ..self }
    }
}

impl crate::models::Architecture for ModernBert {
    const DEFAULT_TARGETS: &'static [&'static str] = &["query", "value"];
    const ADAPTER_SITES: &'static [&'static str] = &["attn.Wo", "mlp.Wo"];
    const KEY_PROJECTIONS: &'static [&'static str] = &["key"];
    fn describe(&self) -> String {
        let c = &self.config;
        let local = (0..c.num_hidden_layers).filter(|&i| c.is_local(i)).count();
        format!(
            "ModernBERT encoder, {} layers ({} local, window {}), hidden {}, {} heads, FFN {} (GeGLU), vocab {}{}",
            c.num_hidden_layers,
            local,
            c.local_attention,
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size,
            c.vocab_size,
            if self.head.is_some() { ", head" } else { "" }
        )
    }
    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }
    fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }
    fn save(&self, dir: &Path) -> Result<()> {
        ModernBert::save(self, dir)
    }
}
