//! LLaMA-style decoders (LLaMA and SmolLM2, Qwen2/2.5, Qwen3, Mistral, Gemma 3, Phi-3) read from
//! Hugging Face checkpoints or (LLaMA, Gemma 3) GGUF files.
//!
//! RMSNorm, rotary position embeddings (`rotate_half` convention, configurable base), SwiGLU
//! feed-forward, grouped-query attention, causal mask, tied or untied output embeddings, and a
//! key/value cache for generation; what the families change is in [`LlamaConfig`]: Qwen2's
//! query/key/value biases, Qwen3's per-head query and key norms, Mistral's sliding window, Gemma
//! 3's norms, GeGLU, scaled embeddings and local/global layers, Phi-3's partial rotary embedding.
//! Every linear is an [`AdaptedLinear`] named by its Hugging Face module path
//! (`model.layers.0.self_attn.q_proj`), so PEFT adapter files line up. Phi-3 stores the query,
//! key and value projections as one `qkv_proj` and the gate and up projections as one
//! `gate_up_proj`: they are read split into the LLaMA linears (each a block of rows of the fused
//! one, [`crate::adapters::FusedRows`]), so every method targets them as in LLaMA, and joined
//! again when saved; PEFT files name the fused linears ([`crate::formats::peft`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation;

use super::layers::{ReadLayers, RmsNorm, TokenEmbedding, attention};
pub use super::llama_config::{LlamaConfig, Variant};
pub use super::llama_positions::KvCache;
use super::llama_positions::{LayerKv, Positions};
use crate::adapters::base_weight::Quantize;
use crate::adapters::{Adaptable, AdaptedLinear, BaseWeight, Deltas, FrozenBlocks};
use crate::error::{Error, Result};
use crate::files::write_json;
use crate::kernels;
use crate::quantization::BlockFormat;
use crate::weights::Reader;
use crate::weights::gguf::Gguf;
use crate::weights::tensors::{self, HostTensor};

mod recompute;
pub use recompute::CheckpointedPass;

const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";
/// The prefix of the blocks' tensor names, `model.layers.{i}.`.
const LAYERS: &str = "model.layers.";

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

/// The gated feed-forward: `down(act(gate(x)) * up(x))`, SwiGLU (`act` SiLU) or Gemma's GeGLU
/// (tanh-approximated GELU).
#[derive(Module, Debug)]
pub struct LlamaMlp {
    pub gate_proj: AdaptedLinear,
    pub up_proj: AdaptedLinear,
    pub down_proj: AdaptedLinear,
}

/// One decoder layer. LLaMA norms the input of attention (`input_layernorm`) and of the
/// feed-forward (`post_attention_layernorm`); Gemma norms both inputs and both outputs, its
/// `post_attention_layernorm` being the attention output's norm (Hugging Face's names).
#[derive(Module, Debug)]
pub struct LlamaLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: LlamaAttention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: LlamaMlp,
    /// Gemma: the feed-forward's input and output norms.
    pub pre_feedforward_layernorm: Option<RmsNorm>,
    pub post_feedforward_layernorm: Option<RmsNorm>,
}

/// What a layer needs besides its input and its [`Positions`].
struct Context<'a> {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// The leading dimensions of each head the rotary embedding turns (Phi-3's partial rotary
    /// embedding: fewer than `head_dim`).
    rotary_dim: usize,
    /// Queries are multiplied by it before their products with the keys.
    scale: f64,
    /// GeGLU (tanh GELU) instead of SwiGLU.
    gelu_gate: bool,
    deltas: &'a Deltas,
}

impl LlamaLayer {
    linear_fields!(self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, self_attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj);

    fn forward(&self, x: Tensor<3>, ctx: &Context, at: &Positions, mut cache: Option<&mut Option<LayerKv>>) -> Tensor<3> {
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
        let rope = |x: Tensor<4>| match ctx.rotary_dim < d {
            true => {
                let turned = kernels::rope(x.clone().narrow(3, 0, ctx.rotary_dim), &at.cos, &at.sin);
                Tensor::cat(vec![turned, x.narrow(3, ctx.rotary_dim, d - ctx.rotary_dim)], 3)
            }
            false => kernels::rope(x, &at.cos, &at.sin),
        };
        let q = rope(split(attn.q_proj.forward(h.clone(), ctx.deltas), heads, &attn.q_norm));
        let k = rope(split(attn.k_proj.forward(h.clone(), ctx.deltas), kv_heads, &attn.k_norm));
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
        let q = q.mul_scalar(ctx.scale);
        let context = attention(q, k, v, at.mask.clone()).swap_dims(1, 2).reshape([b, t, heads * d]);
        let attended = attn.o_proj.forward(context, ctx.deltas);
        let (x, mlp_norm) = match &self.pre_feedforward_layernorm {
            Some(pre) => (x + self.post_attention_layernorm.forward(attended), pre),
            None => (x + attended, &self.post_attention_layernorm),
        };
        let h = mlp_norm.forward(x.clone());
        let m = &self.mlp;
        let (gate, up) = (m.gate_proj.forward(h.clone(), ctx.deltas), m.up_proj.forward(h, ctx.deltas));
        let gated = if ctx.gelu_gate { activation::gelu_approximate(gate) * up } else { kernels::swiglu(gate, up) };
        let out = m.down_proj.forward(gated, ctx.deltas);
        x + match &self.post_feedforward_layernorm {
            Some(norm) => norm.forward(out),
            None => out,
        }
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
    /// `.gguf` file, or a directory holding exactly one `.gguf` file. Quantized and 16-bit
    /// matrices stay as stored.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_as(path, Quantize::Stored, device)
    }

    /// [`Llama::load`] with the frozen weights held as `quantize` says (`--quantize`): a Hugging
    /// Face directory's matrices are converted as they are read, a GGUF's blocks after.
    pub fn load_as(path: &Path, quantize: Quantize, device: &Device) -> Result<Self> {
        Self::load_keeping(path, None, quantize, device)
    }

    /// [`Llama::load_as`] with only the first `keep_layers` blocks (`--keep-layers`): the
    /// others are never read from the file.
    pub fn load_keeping(path: &Path, keep_layers: Option<usize>, quantize: Quantize, device: &Device) -> Result<Self> {
        let model = match find_gguf(path)? {
            Some(file) => Self::from_gguf_keeping(&Gguf::open(&file)?, &file, keep_layers, device)?,
            None => {
                let config = LlamaConfig::read(&path.join(CONFIG_FILE))?.keeping(keep_layers);
                let mut checkpoint = crate::weights::open_model_dir(path)?;
                let mut r = Reader::mapped(&mut checkpoint, quantize.matrices(), device);
                // Only blocks `--keep-layers` drops go unread: others beyond the config are refused.
                if keep_layers.is_some() {
                    r.discard_layers(LAYERS, config.num_hidden_layers);
                }
                Self::from_reader(config, r)?
            }
        };
        model.quantized(quantize)
    }

    /// Builds the model from a parsed GGUF file: block-quantized matrices (the linears and the
    /// embedding table) stay quantized and frozen, the rest is widened to f32.
    pub fn from_gguf(gguf: &Gguf, file: &Path, device: &Device) -> Result<Self> {
        Self::from_gguf_keeping(gguf, file, None, device)
    }

    /// [`Llama::from_gguf`] with only the first `keep_layers` blocks, the others never read.
    pub fn from_gguf_keeping(gguf: &Gguf, file: &Path, keep_layers: Option<usize>, device: &Device) -> Result<Self> {
        let config = LlamaConfig::from_value(gguf.llama_config()?, file)?.keeping(keep_layers);
        let (mut tensors, mut quantized) = gguf.llama_weights(true, keep_layers.map(|_| config.num_hidden_layers))?;
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
        let norm = |r: &mut Reader, name: &str, width: usize| -> Result<RmsNorm> {
            Ok(RmsNorm { weight: r.param(&format!("{name}.weight"), [width])?, eps: c.rms_norm_eps, unit_offset: c.is_gemma() })
        };
        let optional = |r: &mut Reader, name: &str, width: usize, present: bool| present.then(|| norm(r, name, width)).transpose();
        let embed = match r.take_quantized("model.embed_tokens.weight", c.vocab_size, h)? {
            Some(m) => TokenEmbedding::Quantized(FrozenBlocks::new(m, device)),
            None => TokenEmbedding::Dense(Param::from_tensor(r.take("model.embed_tokens.weight", [c.vocab_size, h])?.into_tensor(device))),
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}.");
                let ([q_proj, k_proj, v_proj], [gate_proj, up_proj]) = match c.is_fused() {
                    false => (
                        [
                            r.linear(&format!("{p}self_attn.q_proj"), h, q, bias)?,
                            r.linear(&format!("{p}self_attn.k_proj"), h, kv, bias)?,
                            r.linear(&format!("{p}self_attn.v_proj"), h, kv, bias)?,
                        ],
                        [r.linear(&format!("{p}mlp.gate_proj"), h, m, false)?, r.linear(&format!("{p}mlp.up_proj"), h, m, false)?],
                    ),
                    true => {
                        let qkv = [("q_proj", q), ("k_proj", kv), ("v_proj", kv)];
                        let attention = r.fused_linears(&format!("{p}self_attn.qkv_proj"), h, &qkv, bias)?;
                        let gate_up = r.fused_linears(&format!("{p}mlp.gate_up_proj"), h, &[("gate_proj", m), ("up_proj", m)], false)?;
                        (attention.try_into().expect("three blocks were asked for"), gate_up.try_into().expect("two blocks were asked for"))
                    }
                };
                Ok(LlamaLayer {
                    input_layernorm: norm(&mut r, &format!("{p}input_layernorm"), h)?,
                    self_attn: LlamaAttention {
                        q_proj,
                        k_proj,
                        v_proj,
                        o_proj: r.linear(&format!("{p}self_attn.o_proj"), q, h, c.output_bias())?,
                        q_norm: optional(&mut r, &format!("{p}self_attn.q_norm"), c.head_dim(), c.qk_norm())?,
                        k_norm: optional(&mut r, &format!("{p}self_attn.k_norm"), c.head_dim(), c.qk_norm())?,
                    },
                    post_attention_layernorm: norm(&mut r, &format!("{p}post_attention_layernorm"), h)?,
                    mlp: LlamaMlp { gate_proj, up_proj, down_proj: r.linear(&format!("{p}mlp.down_proj"), m, h, false)? },
                    pre_feedforward_layernorm: optional(&mut r, &format!("{p}pre_feedforward_layernorm"), h, c.is_gemma())?,
                    post_feedforward_layernorm: optional(&mut r, &format!("{p}post_feedforward_layernorm"), h, c.is_gemma())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = norm(&mut r, "model.norm", h)?;
        let head = if c.tie_word_embeddings {
            // Some checkpoints store the tied head as well; it must be the table itself.
            let differs = match &embed {
                TokenEmbedding::Dense(table) => {
                    r.take_if_present("lm_head.weight")?.is_some_and(|s| s != HostTensor::from_tensor(&table.val()))
                }
                TokenEmbedding::Quantized(table) => {
                    r.take_quantized("lm_head.weight", c.vocab_size, h)?.is_some_and(|s| s != *table.matrix)
                }
            };
            if differs {
                return Err(Error::format(
                    r.file(),
                    "lm_head.weight differs from model.embed_tokens.weight, but config.json says tie_word_embeddings: true",
                ));
            }
            r.discard("lm_head.weight");
            None
        } else {
            Some(match r.take_quantized("lm_head.weight", c.vocab_size, h)? {
                Some(m) => BaseWeight::Quantized(FrozenBlocks::new(m, device)),
                None => BaseWeight::Dense(Param::from_tensor(r.take("lm_head.weight", [c.vocab_size, h])?.transpose().into_tensor(device))),
            })
        };
        r.reject_extra_layers(LAYERS, c.num_hidden_layers)?;
        Ok(Self { embed_tokens: embed, layers, norm, lm_head: head, config })
    }

    /// Every base weight stored as `format` (quantized from its values), or as f32 for `None`:
    /// the linears, the embedding table and an untied output head.
    pub fn converted(self, format: Option<BlockFormat>) -> Result<Self> {
        let model = crate::adapters::convert_linears(self, format)?;
        let lm_head = model.lm_head.clone().map(|h| h.converted(format, "the output head")).transpose()?;
        Ok(Self { embed_tokens: model.embed_tokens.clone().converted(format)?, lm_head, ..model })
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
        self.config = self.config.keeping(Some(n));
        self
    }

    /// Writes `config.json` and `model.safetensors` in the Hugging Face layout.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_json(&dir.join(CONFIG_FILE), &self.config)?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        tensors::write(&dir.join(WEIGHTS_FILE), &self.tensors(), Some(metadata))
    }

    /// Every weight under its Hugging Face name, linears in PyTorch's `[out, in]` layout (Phi-3's
    /// blocks joined into its fused `qkv_proj` and `gate_up_proj`).
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
                ("pre_feedforward_layernorm", layer.pre_feedforward_layernorm.as_ref()),
                ("post_feedforward_layernorm", layer.post_feedforward_layernorm.as_ref()),
            ];
            for (name, norm) in norms.into_iter().filter_map(|(n, norm)| Some((n, norm?))) {
                out.insert(format!("model.layers.{i}.{name}.weight"), HostTensor::from_tensor(&norm.weight.val()));
            }
        }
        crate::adapters::put_linears(&self.linears(), &mut out);
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

    /// The input embeddings `[batch, t, hidden]` of `input_ids` (`[batch, t]`); Gemma's scaled by
    /// `sqrt(hidden_size)` (as an f32, as transformers multiplies).
    pub fn embed(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let table = self.embed_tokens.lookup(input_ids);
        match self.config.is_gemma() {
            true => table.mul_scalar((self.config.hidden_size as f64).sqrt() as f32),
            false => table,
        }
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
        let offset = match cache.as_ref() {
            Some(c) if c.len > 0 => c.len,
            _ => deltas.prefix_len(),
        };
        let kinds = self.positions(b, t, offset, deltas.prefix_len(), attention_mask, &embeddings.device());
        let ctx = self.context(deltas);
        let mut x = embeddings;
        if let Some(cache) = cache.as_deref_mut() {
            cache.layers.resize(self.layers.len(), None);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &ctx, self.positions_of(&kinds, i), slot);
        }
        if let Some(cache) = cache {
            cache.len = offset + t;
        }
        self.norm.forward(x)
    }

    /// The positions of each kind of layer the model has (global, sliding-window) for `t` new
    /// tokens of `b` rows after `offset` earlier ones; `prefix` positions (prefix tuning) join
    /// the padding mask in front.
    fn positions(
        &self,
        b: usize,
        t: usize,
        offset: usize,
        prefix: usize,
        mask: Option<Tensor<2>>,
        device: &Device,
    ) -> [Option<Positions>; 2] {
        let mask = match mask {
            Some(m) if prefix > 0 => Some(Tensor::cat(vec![Tensor::ones([b, prefix], device), m], 1)),
            m => m,
        };
        let keys = offset + t;
        let c = &self.config;
        assert!(keys <= c.max_position_embeddings, "{keys} positions exceed max_position_embeddings {}", c.max_position_embeddings);
        [false, true].map(|sliding| {
            (0..self.layers.len())
                .any(|i| c.is_sliding(i) == sliding)
                .then(|| Positions::new(c, sliding, b, t, offset, mask.clone(), device))
        })
    }

    /// Layer `i`'s positions among those [`Llama::positions`] made.
    fn positions_of<'a>(&self, kinds: &'a [Option<Positions>; 2], i: usize) -> &'a Positions {
        kinds[self.config.is_sliding(i) as usize].as_ref().expect("positions are made for every kind of layer present")
    }

    /// What every layer of a pass with `deltas` reads besides its input and positions.
    fn context<'a>(&self, deltas: &'a Deltas) -> Context<'a> {
        let c = &self.config;
        Context {
            heads: c.num_attention_heads,
            kv_heads: c.kv_heads(),
            head_dim: c.head_dim(),
            rotary_dim: c.rotary_dim(),
            scale: c.attention_scale(),
            gelu_gate: c.is_gemma(),
            deltas,
        }
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

impl Adaptable for Llama {
    fn base_converted(self, format: Option<BlockFormat>) -> Result<Self> {
        self.converted(format)
    }

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
            "{} decoder, {} layers{}, hidden {}, {} heads / {} key-value heads, FFN {}, vocab {}, RoPE base {}{}{}",
            c.variant().name(),
            c.num_hidden_layers,
            match (0..c.num_hidden_layers).filter(|&i| c.is_sliding(i)).count() {
                0 => String::new(),
                n => format!(" ({n} with a {}-token window)", c.sliding_window.unwrap_or(0)),
            },
            c.hidden_size,
            c.num_attention_heads,
            c.kv_heads(),
            c.intermediate_size,
            c.vocab_size,
            c.rope_theta,
            match c.rotary_dim() < c.head_dim() {
                true => format!(" on {} of {} head dimensions", c.rotary_dim(), c.head_dim()),
                false => String::new(),
            },
            if c.tie_word_embeddings { ", tied embeddings" } else { "" },
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
