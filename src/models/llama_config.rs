//! The `config.json` of the LLaMA-style decoders replora reads with one model file
//! ([`super::llama`]): LLaMA (SmolLM2), Qwen2/2.5, Qwen3, Mistral, Gemma 3 and Phi-3. They differ
//! in a few switches, which [`Variant`] names: Qwen2's query/key/value biases, Qwen3's per-head
//! RMS norms of queries and keys (and a head size of its own), Mistral's sliding attention window,
//! Gemma 3's many: `(1 + w)` RMS norms, four of them per layer (around attention and the
//! feed-forward), embeddings scaled by `sqrt(hidden)`, GeGLU (tanh GELU), q/k norms, an attention
//! scale of its own, and sliding-window layers between global ones, each kind with its own RoPE
//! base; and Phi-3's fused `qkv_proj` and `gate_up_proj` (held split, [`LlamaConfig::is_fused`]),
//! its sliding window and its partial rotary embedding (`partial_rotary_factor`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::read_json;

/// Which of the LLaMA-style families a config describes (its `model_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Llama,
    Qwen2,
    Qwen3,
    Mistral,
    Gemma3,
    Phi3,
}

impl Variant {
    /// The `model_type` values read with this model file.
    pub const MODEL_TYPES: [&'static str; 6] = ["llama", "qwen2", "qwen3", "mistral", "gemma3_text", "phi3"];

    fn of(model_type: Option<&str>) -> Option<Self> {
        match model_type.unwrap_or("llama") {
            "llama" => Some(Variant::Llama),
            "qwen2" => Some(Variant::Qwen2),
            "qwen3" => Some(Variant::Qwen3),
            "mistral" => Some(Variant::Mistral),
            "gemma3_text" => Some(Variant::Gemma3),
            "phi3" => Some(Variant::Phi3),
            _ => None,
        }
    }

    /// transformers' causal-LM class of the family (what a saved directory loads as).
    pub fn causal_lm_class(self) -> &'static str {
        match self {
            Variant::Llama => "LlamaForCausalLM",
            Variant::Qwen2 => "Qwen2ForCausalLM",
            Variant::Qwen3 => "Qwen3ForCausalLM",
            Variant::Mistral => "MistralForCausalLM",
            Variant::Gemma3 => "Gemma3ForCausalLM",
            Variant::Phi3 => "Phi3ForCausalLM",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Llama => "LLaMA",
            Variant::Qwen2 => "Qwen2",
            Variant::Qwen3 => "Qwen3",
            Variant::Mistral => "Mistral",
            Variant::Gemma3 => "Gemma 3",
            Variant::Phi3 => "Phi-3",
        }
    }
}

/// A Hugging Face LLaMA-style `config.json`. Unused keys are kept in `extra` and written back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `llama` (also when absent), `qwen2`, `qwen3`, `mistral`, `gemma3_text` or `phi3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (no grouping).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// One id or a list (newer checkpoints); see [`LlamaConfig::eos_ids`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// Biases on all four attention projections (LLaMA, Qwen3); Qwen2 has them on the query,
    /// key and value projections whatever this says, Phi-3 on none.
    #[serde(default)]
    pub attention_bias: bool,
    /// The size of one attention head, where it is not `hidden_size / num_attention_heads`
    /// (Qwen3 gives it always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Mistral, Phi-3: each token attends to at most this many tokens, itself included (none: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Gemma 3: queries are scaled by `query_pre_attn_scalar^-1/2` instead of `head_dim^-1/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma's name for `hidden_act` (`gelu_pytorch_tanh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_activation: Option<String>,
    /// Gemma 3: `sliding_attention` or `full_attention` per layer (without it, every sixth layer
    /// is global, as transformers derives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// Gemma 3 before transformers 5: the RoPE base of the sliding-window layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_local_base_freq: Option<f64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Gemma 3's default: layers `5, 11, 17, ...` attend globally, the others through the window.
const GEMMA_GLOBAL_EVERY: usize = 6;
/// Gemma 3's RoPE base of its sliding-window layers where a config does not give one.
const GEMMA_LOCAL_ROPE_BASE: f64 = 10_000.0;

fn default_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_positions() -> usize {
    2048
}

impl LlamaConfig {
    /// The config of the model's first `keep` blocks (all of them for `None`).
    pub fn keeping(mut self, keep: Option<usize>) -> Self {
        let n = keep.map_or(self.num_hidden_layers, |n| n.min(self.num_hidden_layers));
        self.num_hidden_layers = n;
        if let Some(types) = &mut self.layer_types {
            types.truncate(n);
        }
        self
    }

    /// The family this config is read as (a `model_type` no variant reads is refused on reading).
    pub fn variant(&self) -> Variant {
        Variant::of(self.model_type.as_deref()).unwrap_or(Variant::Llama)
    }

    /// Whether the query, key and value projections have biases.
    pub fn qkv_bias(&self) -> bool {
        match self.variant() {
            Variant::Qwen2 => true,
            Variant::Phi3 => false,
            _ => self.attention_bias,
        }
    }

    /// Whether the attention output projection has a bias.
    pub fn output_bias(&self) -> bool {
        self.attention_bias && self.variant() != Variant::Phi3
    }

    /// Phi-3's checkpoint layout: the query, key and value projections are one linear,
    /// `self_attn.qkv_proj` (rows: queries, keys, values), and the feed-forward's gate and up
    /// projections one, `mlp.gate_up_proj` (rows: gate, up). replora holds them split.
    pub fn is_fused(&self) -> bool {
        self.variant() == Variant::Phi3
    }

    /// Phi-3's `partial_rotary_factor` (in `rope_parameters`, or at the top level in older
    /// configs): the share of each head's dimensions the rotary embedding turns; 1 elsewhere
    /// (transformers' other families here ignore the key).
    pub fn partial_rotary_factor(&self) -> f64 {
        if self.variant() != Variant::Phi3 {
            return 1.0;
        }
        let nested = self.extra.get("rope_parameters").and_then(|r| r.get("partial_rotary_factor")?.as_f64());
        nested.or_else(|| self.extra.get("partial_rotary_factor")?.as_f64()).unwrap_or(1.0)
    }

    /// The leading dimensions of each head that the rotary embedding turns (transformers'
    /// `int(head_dim * partial_rotary_factor)`); the rest pass through unchanged.
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim() as f64 * self.partial_rotary_factor()) as usize
    }

    /// Whether queries and keys are RMS-normalised per head before the rotary embedding.
    pub fn qk_norm(&self) -> bool {
        matches!(self.variant(), Variant::Qwen3 | Variant::Gemma3)
    }

    /// Gemma's layout: RMS norms scale by `1 + w` (their stored weights are offsets from 1), the
    /// attention and feed-forward outputs are normed before their residual additions (four norms
    /// a layer), token embeddings are scaled by `sqrt(hidden_size)`, and the feed-forward gate is
    /// tanh-approximated GELU instead of SiLU.
    pub fn is_gemma(&self) -> bool {
        self.variant() == Variant::Gemma3
    }

    /// Whether layer `layer` attends through the sliding window (Mistral: every layer; Gemma 3:
    /// the local ones; Qwen's only with `use_sliding_window`, which is refused).
    pub fn is_sliding(&self, layer: usize) -> bool {
        match self.variant() {
            Variant::Mistral | Variant::Phi3 => self.sliding_window.is_some(),
            Variant::Gemma3 => match &self.layer_types {
                Some(types) => types.get(layer).is_some_and(|t| t == "sliding_attention"),
                None => !(layer + 1).is_multiple_of(self.gemma_global_every()),
            },
            _ => false,
        }
    }

    fn gemma_global_every(&self) -> usize {
        let pattern = ["sliding_window_pattern", "_sliding_window_pattern"].iter().find_map(|k| self.extra.get(*k)?.as_u64());
        pattern.map_or(GEMMA_GLOBAL_EVERY, |p| p.max(1) as usize)
    }

    /// The RoPE base of the global layers (`sliding: false`) or the sliding-window ones.
    pub fn rope_base(&self, sliding: bool) -> f64 {
        if !(sliding && self.is_gemma()) {
            return self.rope_theta;
        }
        let nested = self.extra.get("rope_parameters").and_then(|r| r.get("sliding_attention")?.get("rope_theta")?.as_f64());
        nested.or(self.rope_local_base_freq).unwrap_or(GEMMA_LOCAL_ROPE_BASE)
    }

    /// The factor queries are scaled by before their products with the keys.
    pub fn attention_scale(&self) -> f64 {
        1.0 / self.query_pre_attn_scalar.unwrap_or(self.head_dim() as f64).sqrt()
    }

    pub fn read(path: &Path) -> Result<Self> {
        let config: Self = read_json(path)?;
        config.checked().map_err(|m| Error::format(path, m))
    }

    /// The config from a `config.json` value (a file's or one built from GGUF metadata), checked;
    /// `source` names errors.
    pub fn from_value(value: serde_json::Value, source: &Path) -> Result<Self> {
        let config: Self = serde_json::from_value(value).map_err(|e| Error::format(source, format!("model config: {e}")))?;
        config.checked().map_err(|m| Error::format(source, m))
    }

    /// The config validated, with transformers 5's `rope_parameters` (which replaced the
    /// top-level `rope_theta`) read into `rope_theta`.
    fn checked(mut self) -> std::result::Result<Self, String> {
        if let Some(rope) = self.extra.get("rope_parameters").filter(|v| !v.is_null()) {
            // Gemma 3 gives one set of parameters per layer type; the global layers' base is
            // `rope_theta`, the sliding ones' is read by `rope_base`.
            let kinds: Vec<(&str, &serde_json::Value)> = match rope.get("full_attention").is_some() {
                true => ["full_attention", "sliding_attention"].into_iter().filter_map(|k| Some((k, rope.get(k)?))).collect(),
                false => vec![("", rope)],
            };
            for (kind, params) in &kinds {
                match params.get("rope_type").and_then(serde_json::Value::as_str).unwrap_or("default") {
                    "default" => {}
                    other => {
                        let key = if kind.is_empty() { String::new() } else { format!("{kind}.") };
                        return Err(format!("rope_parameters.{key}rope_type {other:?} is not supported (only \"default\")"));
                    }
                }
            }
            if let Some(theta) = kinds.first().and_then(|(_, p)| p.get("rope_theta")?.as_f64()) {
                self.rope_theta = theta;
            }
        }
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if Variant::of(self.model_type.as_deref()).is_none() {
            let known = Variant::MODEL_TYPES.join(", ");
            return Err(format!(
                "model_type {:?} is not a LLaMA-style decoder replora reads ({known})",
                self.model_type.as_deref().unwrap_or("")
            ));
        }
        if self.extra.get("use_sliding_window").and_then(serde_json::Value::as_bool) == Some(true) {
            return Err("use_sliding_window: Qwen's sliding-window layers are not supported".into());
        }
        if self.sliding_window == Some(0) {
            return Err("sliding_window must be at least 1".into());
        }
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_dim()),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_attention_heads));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!("head dimension {} must be even for rotary embeddings", self.head_dim()));
        }
        let (act_key, act, expected) = match self.is_gemma() {
            true => ("hidden_activation", self.hidden_activation.as_deref().or(self.hidden_act.as_deref()), "gelu_pytorch_tanh"),
            false => ("hidden_act", self.hidden_act.as_deref(), "silu"),
        };
        if let Some(act) = act.filter(|a| *a != expected) {
            return Err(format!("{act_key} {act:?} is not supported (only {expected:?})"));
        }
        for key in ["final_logit_softcapping", "attn_logit_softcapping"] {
            if self.extra.get(key).is_some_and(|v| !v.is_null()) {
                return Err(format!("{key} is not supported (Gemma 2's soft-capping; Gemma 3 has none)"));
            }
        }
        if self.extra.get("use_bidirectional_attention").and_then(serde_json::Value::as_bool) == Some(true) {
            return Err("use_bidirectional_attention: only causal decoders are read".into());
        }
        if let Some(types) = &self.layer_types {
            if types.len() != self.num_hidden_layers {
                return Err(format!("layer_types lists {} layers, num_hidden_layers is {}", types.len(), self.num_hidden_layers));
            }
            if let Some(other) = types.iter().find(|t| !matches!(t.as_str(), "sliding_attention" | "full_attention")) {
                return Err(format!("layer_types: {other:?} is not a layer type replora reads (sliding_attention, full_attention)"));
            }
            if self.is_gemma() && self.sliding_window.is_none() && types.iter().any(|t| t == "sliding_attention") {
                return Err("layer_types has sliding_attention layers but sliding_window is missing".into());
            }
        }
        if self.query_pre_attn_scalar.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
            return Err("query_pre_attn_scalar must be a positive number".into());
        }
        if let Some(scaling) = self.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            let kind = ["rope_type", "type"].iter().find_map(|k| scaling.get(*k)?.as_str()).unwrap_or("?");
            return Err(format!(
                "rope_scaling of type {kind:?} is not supported (only the default RoPE; Phi-3's long-context longrope/su scaling is not implemented)"
            ));
        }
        if self.variant() == Variant::Phi3 {
            self.validate_phi3()?;
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!("rms_norm_eps must be a positive number, got {}", self.rms_norm_eps));
        }
        Ok(())
    }

    /// What Phi-3 adds: a partial rotary embedding that turns an even number of dimensions, and
    /// no residual or attention dropout (transformers drops there while training; replora does
    /// not, so a run would train another model).
    fn validate_phi3(&self) -> std::result::Result<(), String> {
        let factor = self.partial_rotary_factor();
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(format!("partial_rotary_factor must be in (0, 1], got {factor}"));
        }
        let dim = self.rotary_dim();
        if dim == 0 || !dim.is_multiple_of(2) {
            return Err(format!(
                "partial_rotary_factor {factor} turns {dim} of the {} dimensions of a head; rotary embeddings need an even number, at least 2",
                self.head_dim()
            ));
        }
        for key in ["resid_pdrop", "attention_dropout"] {
            if let Some(p) = self.extra.get(key).and_then(serde_json::Value::as_f64).filter(|p| *p != 0.0) {
                return Err(format!(
                    "{key} = {p}: replora trains Phi-3 without residual or attention dropout, so training would differ from transformers' (released Phi-3 checkpoints have 0)"
                ));
            }
        }
        Ok(())
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The end-of-sequence ids (`eos_token_id` may be one id or a list).
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect(),
            _ => vec![],
        }
    }
}
