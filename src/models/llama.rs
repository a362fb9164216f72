//! LLaMA-style decoders (LLaMA and SmolLM2, Qwen2/2.5, Qwen3, Mistral) read from Hugging Face
//! checkpoints or (LLaMA) GGUF files.
//!
//! RMSNorm, rotary position embeddings (`rotate_half` convention, configurable base), SwiGLU
//! feed-forward, grouped-query attention, causal mask, tied or untied output embeddings, and a
//! key/value cache for generation; what the families change is in [`LlamaConfig`]: Qwen2's
//! query/key/value biases, Qwen3's per-head query and key norms, Mistral's sliding window. Every linear is an [`AdaptedLinear`] named by its Hugging Face
//! module path (`model.layers.0.self_attn.q_proj`), so PEFT adapter files line up.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;

use super::layers::{ReadLayers, RmsNorm, TokenEmbedding, attention};
pub use super::llama_config::{LlamaConfig, Variant};
use crate::adapters::base_weight::Quantize;
use crate::adapters::{Adaptable, AdaptedLinear, BaseWeight, Deltas, FrozenBlocks};
use crate::error::{Error, Result};
use crate::files::write_json;
use crate::kernels;
use crate::quantization::BlockFormat;
use crate::weights::Reader;
use crate::weights::gguf::Gguf;
use crate::weights::tensors::{self, HostTensor};

const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";

/// Cached keys and values of every layer.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    /// Tokens already processed.
    pub len: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }
}

/// One layer's keys and values: buffers `[batch, kv_heads, capacity, head_dim]` whose first
/// `len` positions are filled. A new position is written in place (burn writes into a buffer
/// nobody else holds) instead of the whole cache being copied by a concatenation each step,
/// which at batch 8 moved some 120 MB per generated token; the capacity doubles when full.
#[derive(Clone, Debug)]
struct LayerKv {
    k: Tensor<4>,
    v: Tensor<4>,
    len: usize,
}

impl LayerKv {
    /// Appends `k` and `v` (`[batch, kv_heads, t, head_dim]`, `past` the cache so far) and
    /// returns the cache with every position, and views of all its keys and values.
    fn append(past: Option<Self>, k: Tensor<4>, v: Tensor<4>) -> (Self, Tensor<4>, Tensor<4>) {
        let [b, h, t, d] = k.dims();
        let mut cache = past.unwrap_or_else(|| {
            let empty = || Tensor::zeros([b, h, 0, d], &k.device());
            Self { k: empty(), v: empty(), len: 0 }
        });
        let end = cache.len + t;
        if end > cache.k.dims()[2] {
            let grown = |old: Tensor<4>| {
                Tensor::zeros([b, h, end.next_power_of_two(), d], &k.device())
                    .slice_assign([0..b, 0..h, 0..cache.len, 0..d], old.slice([0..b, 0..h, 0..cache.len, 0..d]))
            };
            cache.k = grown(cache.k);
            cache.v = grown(cache.v);
        }
        let (new, all) = ([0..b, 0..h, cache.len..end, 0..d], [0..b, 0..h, 0..end, 0..d]);
        cache.k = cache.k.slice_assign(new.clone(), k);
        cache.v = cache.v.slice_assign(new, v);
        cache.len = end;
        let (k, v) = (cache.k.clone().slice(all.clone()), cache.v.clone().slice(all));
        (cache, k, v)
    }
}

/// Self-attention with grouped-query heads.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    pub q_proj: AdaptedLinear,
    pub k_proj: AdaptedLinear,
    pub v_proj: AdaptedLinear,
    pub o_proj: AdaptedLinear,
    /// Qwen3: RMS norms over each head of the queries and keys, before the rotary embedding.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
}

/// The SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    pub gate_proj: AdaptedLinear,
    pub up_proj: AdaptedLinear,
    pub down_proj: AdaptedLinear,
}

#[derive(Module, Debug)]
pub struct LlamaLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: LlamaAttention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: LlamaMlp,
}

/// What a layer needs besides its input: the rotary tables for the current positions and the
/// additive attention mask.
struct Context<'a> {
    /// `[t, head_dim]` each.
    cos: Tensor<2>,
    sin: Tensor<2>,
    /// `[batch, 1, t, keys]`: 0 where a query may look, very negative elsewhere.
    mask: Tensor<4>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    deltas: &'a Deltas,
}

impl LlamaLayer {
    linear_fields!(self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, self_attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj);

    fn forward(&self, x: Tensor<3>, ctx: &Context, mut cache: Option<&mut Option<LayerKv>>) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (heads, kv_heads, d) = (ctx.heads, ctx.kv_heads, ctx.head_dim);
        let attn = &self.self_attn;
        let h = self.input_layernorm.forward(x.clone());
        let split = |y: Tensor<3>, n: usize, norm: &Option<RmsNorm>| {
            let y = y.reshape([b, t, n, d]);
            match norm {
                Some(norm) => norm.forward(y),
                None => y,
            }
            .swap_dims(1, 2)
        };
        let q = kernels::rope(split(attn.q_proj.forward(h.clone(), ctx.deltas), heads, &attn.q_norm), &ctx.cos, &ctx.sin);
        let k = kernels::rope(split(attn.k_proj.forward(h.clone(), ctx.deltas), kv_heads, &attn.k_norm), &ctx.cos, &ctx.sin);
        let v = split(attn.v_proj.forward(h, ctx.deltas), kv_heads, &None);
        // The prefix goes in front once: a cache that holds keys holds it already.
        let past = cache.as_mut().and_then(|slot| slot.take());
        let (k, v) = match ctx.deltas.prefix(&attn.k_proj.path) {
            Some(prefix) if past.is_none() => prefix.prepend(k, v),
            _ => (k, v),
        };
        let (k, v) = match cache {
            Some(slot) => {
                let (kept, k, v) = LayerKv::append(past, k, v);
                *slot = Some(kept);
                (k, v)
            }
            None => (k, v),
        };
        let q = q.mul_scalar(1.0 / (d as f64).sqrt());
        let context = attention(q, k, v, ctx.mask.clone()).swap_dims(1, 2).reshape([b, t, heads * d]);
        let x = x + attn.o_proj.forward(context, ctx.deltas);
        let h = self.post_attention_layernorm.forward(x.clone());
        let m = &self.mlp;
        let gated = kernels::swiglu(m.gate_proj.forward(h.clone(), ctx.deltas), m.up_proj.forward(h, ctx.deltas));
        x + m.down_proj.forward(gated, ctx.deltas)
    }
}

/// A LLaMA decoder with its language-model head.
#[derive(Module, Debug)]
pub struct Llama {
    pub embed_tokens: TokenEmbedding,
    pub layers: Vec<LlamaLayer>,
    pub norm: RmsNorm,
    /// The output projection in burn layout, `[hidden, vocab]`; `None` for tied embeddings.
    pub lm_head: Option<BaseWeight>,
    #[module(skip)]
    pub config: LlamaConfig,
}

impl Llama {
    /// Loads a model from a Hugging Face directory (`config.json` + `model.safetensors`), a
    /// `.gguf` file, or a directory holding exactly one `.gguf` file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        match find_gguf(path)? {
            Some(file) => Self::from_gguf(&Gguf::open(&file)?, &file, device),
            None => {
                let config = LlamaConfig::read(&path.join(CONFIG_FILE))?;
                let file = path.join(WEIGHTS_FILE);
                let (mut tensors, _) = tensors::read(&file)?;
                Self::from_tensors(config, &mut tensors, &file, device)
            }
        }
    }

    /// Builds the model from a parsed GGUF file: block-quantized matrices (the linears and the
    /// embedding table) stay quantized and frozen, the rest is widened to f32.
    pub fn from_gguf(gguf: &Gguf, file: &Path, device: &Device) -> Result<Self> {
        let config = LlamaConfig::from_value(gguf.llama_config()?, file)?;
        let (mut tensors, mut quantized) = gguf.llama_weights(true)?;
        Self::from_reader(config, Reader::new(&mut tensors, file, device).with_quantized(&mut quantized))
    }

    /// Builds the model from tensors under Hugging Face names, taking them out of `tensors`.
    pub fn from_tensors(config: LlamaConfig, tensors: &mut BTreeMap<String, HostTensor>, file: &Path, device: &Device) -> Result<Self> {
        Self::from_reader(config, Reader::new(tensors, file, device))
    }

    fn from_reader(config: LlamaConfig, mut r: Reader) -> Result<Self> {
        let device = &r.device().clone();
        let c = &config;
        let (h, q, kv, m) = (c.hidden_size, c.num_attention_heads * c.head_dim(), c.kv_heads() * c.head_dim(), c.intermediate_size);
        let bias = c.qkv_bias();
        let head_norm = |r: &mut Reader, name: &str| match c.qk_norm() {
            true => rms_norm(r, name, c.head_dim(), c.rms_norm_eps).map(Some),
            false => Ok(None),
        };
        let embed = match r.take_quantized("model.embed_tokens.weight", c.vocab_size, h)? {
            Some(m) => TokenEmbedding::Quantized(FrozenBlocks::new(m, device)),
            None => TokenEmbedding::Dense(Param::from_tensor(r.take("model.embed_tokens.weight", [c.vocab_size, h])?.to_tensor(device))),
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}.");
                Ok(LlamaLayer {
                    input_layernorm: rms_norm(&mut r, &format!("{p}input_layernorm"), h, c.rms_norm_eps)?,
                    self_attn: LlamaAttention {
                        q_proj: r.linear(&format!("{p}self_attn.q_proj"), h, q, bias)?,
                        k_proj: r.linear(&format!("{p}self_attn.k_proj"), h, kv, bias)?,
                        v_proj: r.linear(&format!("{p}self_attn.v_proj"), h, kv, bias)?,
                        o_proj: r.linear(&format!("{p}self_attn.o_proj"), q, h, c.attention_bias)?,
                        q_norm: head_norm(&mut r, &format!("{p}self_attn.q_norm"))?,
                        k_norm: head_norm(&mut r, &format!("{p}self_attn.k_norm"))?,
                    },
                    post_attention_layernorm: rms_norm(&mut r, &format!("{p}post_attention_layernorm"), h, c.rms_norm_eps)?,
                    mlp: LlamaMlp {
                        gate_proj: r.linear(&format!("{p}mlp.gate_proj"), h, m, false)?,
                        up_proj: r.linear(&format!("{p}mlp.up_proj"), h, m, false)?,
                        down_proj: r.linear(&format!("{p}mlp.down_proj"), m, h, false)?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = rms_norm(&mut r, "model.norm", h, c.rms_norm_eps)?;
        let head = if c.tie_word_embeddings {
            r.discard("lm_head.weight");
            None
        } else {
            Some(match r.take_quantized("lm_head.weight", c.vocab_size, h)? {
                Some(m) => BaseWeight::Quantized(FrozenBlocks::new(m, device)),
                None => BaseWeight::Dense(Param::from_tensor(r.take("lm_head.weight", [c.vocab_size, h])?.transpose().to_tensor(device))),
            })
        };
        r.reject_extra_layers("model.layers.", c.num_hidden_layers)?;
        Ok(Self { embed_tokens: embed, layers, norm, lm_head: head, config })
    }

    /// Every base weight stored as `format` (quantized from its values), or as f32 for `None`:
    /// the linears, the embedding table and an untied output head.
    pub fn converted(self, format: Option<BlockFormat>) -> Result<Self> {
        let mut failed = None;
        let model = self.map_linears(&mut |mut l| {
            let what = format!("weight {}", l.path);
            match l.weight.clone().converted(format, &what) {
                Ok(w) => l.weight = w,
                Err(e) => failed = Some(e),
            }
            l
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let lm_head = model.lm_head.clone().map(|h| h.converted(format, "the output head")).transpose()?;
        Ok(Self { embed_tokens: model.embed_tokens.clone().converted(format)?, lm_head, ..model })
    }

    /// The model with its frozen weights held as `quantize` says (`--quantize`).
    pub fn quantized(self, quantize: Quantize) -> Result<Self> {
        match quantize.target() {
            None => Ok(self),
            Some(format) => self.converted(format),
        }
    }

    /// What a merge of this model into f32 files says of its base: empty when the linears are
    /// f32, else which block formats were widened (as PEFT merges into a quantized base:
    /// dequantized, then merged).
    pub fn widening_note(&self) -> String {
        let mut names: Vec<&'static str> = self.linears().iter().filter_map(|l| l.weight.format()).map(BlockFormat::name).collect();
        names.sort_unstable();
        names.dedup();
        match names.is_empty() {
            true => String::new(),
            false => format!("; the base's {} blocks are written as f32", names.join(", ")),
        }
    }

    /// Bytes of weights one generated token reads: every linear and the output head (the
    /// embedding table when tied), as stored.
    pub fn decode_weight_bytes(&self) -> usize {
        let head = self.lm_head.as_ref().map_or_else(|| self.embed_tokens.stored_bytes(), BaseWeight::stored_bytes);
        self.linears().iter().map(|l| l.weight.stored_bytes()).sum::<usize>() + head
    }

    /// Keeps only the first `n` layers (a cheap model slice for tests and quick checks).
    pub fn truncate_layers(mut self, n: usize) -> Self {
        self.layers.truncate(n);
        self.config.num_hidden_layers = self.layers.len();
        self
    }

    /// Writes `config.json` and `model.safetensors` in the Hugging Face layout.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_json(&dir.join(CONFIG_FILE), &self.config)?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        tensors::write(&dir.join(WEIGHTS_FILE), &self.tensors(), Some(metadata))
    }

    /// Every weight under its Hugging Face name, linears in PyTorch's `[out, in]` layout.
    pub fn tensors(&self) -> BTreeMap<String, HostTensor> {
        let mut out = BTreeMap::new();
        out.insert("model.embed_tokens.weight".to_string(), HostTensor::from_tensor(&self.embed_tokens.dense()));
        if let Some(head) = &self.lm_head {
            out.insert("lm_head.weight".to_string(), HostTensor::from_tensor(&head.dense()).transpose());
        }
        out.insert("model.norm.weight".to_string(), HostTensor::from_tensor(&self.norm.weight.val()));
        for (i, layer) in self.layers.iter().enumerate() {
            let attn = &layer.self_attn;
            let norms = [
                ("input_layernorm", Some(&layer.input_layernorm)),
                ("post_attention_layernorm", Some(&layer.post_attention_layernorm)),
                ("self_attn.q_norm", attn.q_norm.as_ref()),
                ("self_attn.k_norm", attn.k_norm.as_ref()),
            ];
            for (name, norm) in norms.into_iter().filter_map(|(n, norm)| Some((n, norm?))) {
                out.insert(format!("model.layers.{i}.{name}.weight"), HostTensor::from_tensor(&norm.weight.val()));
            }
        }
        for linear in self.linears() {
            linear.put(&mut out);
        }
        out
    }

    /// The final-norm hidden states `[batch, t, hidden]` of `input_ids` (`[batch, t]`).
    ///
    /// `attention_mask` (`[batch, t]`, 1 for real tokens) hides padded keys; without a cache
    /// positions start at 0. With a cache the new tokens follow the cached ones (batch 1 or a
    /// batch without padding) and the cache is extended. A prefix (prefix tuning) takes the
    /// first positions, as in PEFT with transformers: the tokens then start at position `p`.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2>>,
        cache: Option<&mut KvCache>,
        deltas: &Deltas,
    ) -> Tensor<3> {
        self.forward_embeddings(self.embed(input_ids), attention_mask, cache, deltas)
    }

    /// The input embeddings `[batch, t, hidden]` of `input_ids` (`[batch, t]`).
    pub fn embed(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        self.embed_tokens.lookup(input_ids)
    }

    /// [`Llama::forward`] from input embeddings `[batch, t, hidden]` rather than token ids: a
    /// sequence whose first vectors come from elsewhere (a vision-language model's visual
    /// tokens, projected into the embedding space) followed by embedded tokens. Positions,
    /// masking, the cache and a prefix work as in [`Llama::forward`].
    pub fn forward_embeddings(
        &self,
        embeddings: Tensor<3>,
        attention_mask: Option<Tensor<2>>,
        mut cache: Option<&mut KvCache>,
        deltas: &Deltas,
    ) -> Tensor<3> {
        let [b, t, _] = embeddings.dims();
        let device = embeddings.device();
        let prefix = deltas.prefix_len();
        let offset = match cache.as_ref() {
            Some(c) if c.len > 0 => c.len,
            _ => prefix,
        };
        let attention_mask = match attention_mask {
            Some(m) if prefix > 0 => Some(Tensor::cat(vec![Tensor::ones([b, prefix], &device), m], 1)),
            m => m,
        };
        let keys = offset + t;
        assert!(
            keys <= self.config.max_position_embeddings,
            "{keys} positions exceed max_position_embeddings {}",
            self.config.max_position_embeddings
        );
        let (cos, sin) = rope_tables(&self.config, offset, t, &device);
        let c = &self.config;
        let mask = causal_mask(b, t, offset, c.window(), attention_mask, &device);
        let ctx = Context { cos, sin, mask, heads: c.num_attention_heads, kv_heads: c.kv_heads(), head_dim: c.head_dim(), deltas };
        let mut x = embeddings;
        if let Some(cache) = cache.as_deref_mut() {
            cache.layers.resize(self.layers.len(), None);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &ctx, slot);
        }
        if let Some(cache) = cache {
            cache.len = keys;
        }
        self.norm.forward(x)
    }

    /// Next-token scores from hidden states (`[.., hidden]` -> `[.., vocab]`).
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match &self.lm_head {
            Some(head) => head.forward(hidden, None),
            None => self.embed_tokens.scores(hidden),
        }
    }
}

/// The `.gguf` file `path` names: the file itself, or the only one in a directory without a
/// `config.json`. `None` for a Hugging Face directory.
pub fn find_gguf(path: &Path) -> Result<Option<std::path::PathBuf>> {
    if path.is_file() {
        return Ok(Some(path.to_path_buf()));
    }
    if !path.is_dir() {
        let e = std::io::Error::new(std::io::ErrorKind::NotFound, "no such model file or directory");
        return Err(Error::io(path, e));
    }
    if path.join(CONFIG_FILE).is_file() {
        return Ok(None);
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    let ggufs: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "gguf")).collect();
    match ggufs.as_slice() {
        [one] => Ok(Some(one.clone())),
        [] => Err(Error::format(path, "neither config.json + model.safetensors nor a .gguf file")),
        many => Err(Error::format(path, format!("{} .gguf files; name one of them", many.len()))),
    }
}

/// `cos` and `sin` of the rotary angles for positions `offset..offset + t`, `[t, head_dim]`,
/// laid out for `rotate_half` (each frequency twice: first half, second half).
fn rope_tables(c: &LlamaConfig, offset: usize, t: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let d = c.head_dim();
    let (mut cos, mut sin) = (Vec::with_capacity(t * d), Vec::with_capacity(t * d));
    for p in offset..offset + t {
        for i in 0..d {
            let freq = c.rope_theta.powf(-((2 * (i % (d / 2))) as f64) / d as f64);
            let angle = p as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let table = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [t, d]), device);
    (table(cos), table(sin))
}

/// The additive mask `[b, 1, t, offset + t]`: query `i` (at position `offset + i`) sees keys
/// `0..=offset + i` that are not padding, and with a sliding `window` only the last `window` of
/// them (itself included).
fn causal_mask(b: usize, t: usize, offset: usize, window: Option<usize>, padding: Option<Tensor<2>>, device: &Device) -> Tensor<4> {
    let keys = offset + t;
    let mut values = vec![0f32; t * keys];
    for i in 0..t {
        let seen = window.map_or(0, |w| (offset + i + 1).saturating_sub(w))..=offset + i;
        for k in (0..keys).filter(|k| !seen.contains(k)) {
            values[i * keys + k] = f32::MIN;
        }
    }
    let causal = Tensor::<2>::from_data(TensorData::new(values, [t, keys]), device).reshape([1, 1, t, keys]);
    match padding {
        // f32::MIN + f32::MIN is -inf; softmax still gives exactly 0 there as long as a row has a
        // real key, which every row has (its own position, or the first real token).
        Some(mask) => causal + mask.neg().add_scalar(1.0).mul_scalar(f32::MIN).reshape([b, 1, 1, keys]),
        None => causal,
    }
}

/// An RMS norm `{name}.weight` through the shared [`Reader`].
fn rms_norm(r: &mut Reader, name: &str, width: usize, eps: f64) -> Result<RmsNorm> {
    Ok(RmsNorm { weight: r.param(&format!("{name}.weight"), [width])?, eps })
}

impl Adaptable for Llama {
    fn linears(&self) -> Vec<&AdaptedLinear> {
        self.layers.iter().flat_map(|l| l.linears()).collect()
    }

    fn map_linears(self, f: &mut dyn FnMut(AdaptedLinear) -> AdaptedLinear) -> Self {
        let layers = self.layers.into_iter().map(|l| l.map_linears(f)).collect();
        Self { layers, ..self }
    }

    fn widened(self) -> Self {
        let model = self.map_linears(&mut |mut l| {
            l.weight = l.weight.widened();
            l
        });
        Self { embed_tokens: model.embed_tokens.widened(), lm_head: model.lm_head.map(BaseWeight::widened), ..model }
    }
}

impl crate::models::Architecture for Llama {
    const DEFAULT_TARGETS: &'static [&'static str] = &["q_proj", "v_proj"];
    const ADAPTER_SITES: &'static [&'static str] = &["o_proj", "down_proj"];
    const KEY_PROJECTIONS: &'static [&'static str] = &["k_proj"];
    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{} decoder, {} layers, hidden {}, {} heads / {} key-value heads, FFN {}, vocab {}, RoPE base {}{}",
            c.variant().name(),
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.kv_heads(),
            c.intermediate_size,
            c.vocab_size,
            c.rope_theta,
            if c.tie_word_embeddings { ", tied embeddings" } else { "" }
        )
    }
    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }
    fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }
    fn save(&self, dir: &Path) -> Result<()> {
        Llama::save(self, dir)
    }
}
