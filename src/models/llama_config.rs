//! The `config.json` of the LLaMA-style decoders replora reads with one model file
//! ([`super::llama`]): LLaMA (SmolLM2), Qwen2/2.5, Qwen3 and Mistral. They differ in a few
//! switches, which [`Variant`] names: Qwen2's query/key/value biases, Qwen3's per-head RMS norms
//! of queries and keys (and a head size of its own), Mistral's sliding attention window.

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
}

impl Variant {
    /// The `model_type` values read with this model file.
    pub const MODEL_TYPES: [&'static str; 4] = ["llama", "qwen2", "qwen3", "mistral"];

    fn of(model_type: Option<&str>) -> Option<Self> {
        match model_type.unwrap_or("llama") {
            "llama" => Some(Variant::Llama),
            "qwen2" => Some(Variant::Qwen2),
            "qwen3" => Some(Variant::Qwen3),
            "mistral" => Some(Variant::Mistral),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Llama => "LLaMA",
            Variant::Qwen2 => "Qwen2",
            Variant::Qwen3 => "Qwen3",
            Variant::Mistral => "Mistral",
        }
    }
}

/// A Hugging Face LLaMA-style `config.json`. Unused keys are kept in `extra` and written back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `llama` (also when absent), `qwen2`, `qwen3` or `mistral`.
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
    /// key and value projections whatever this says.
    #[serde(default)]
    pub attention_bias: bool,
    /// The size of one attention head, where it is not `hidden_size / num_attention_heads`
    /// (Qwen3 gives it always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Mistral: each token attends to at most this many tokens, itself included (none: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

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
    /// The family this config is read as (a `model_type` no variant reads is refused on reading).
    pub fn variant(&self) -> Variant {
        Variant::of(self.model_type.as_deref()).unwrap_or(Variant::Llama)
    }

    /// Whether the query, key and value projections have biases.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.variant() == Variant::Qwen2
    }

    /// Whether queries and keys are RMS-normalised per head before the rotary embedding.
    pub fn qk_norm(&self) -> bool {
        self.variant() == Variant::Qwen3
    }

    /// The attention window each token sees, where it is limited (Mistral's sliding window;
    /// Qwen's only when `use_sliding_window` is on, which is refused).
    pub fn window(&self) -> Option<usize> {
        match self.variant() {
            Variant::Mistral => self.sliding_window,
            _ => None,
        }
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
            match rope.get("rope_type").and_then(serde_json::Value::as_str).unwrap_or("default") {
                "default" => {}
                other => return Err(format!("rope_parameters.rope_type {other:?} is not supported (only \"default\")")),
            }
            if let Some(theta) = rope.get("rope_theta").and_then(serde_json::Value::as_f64) {
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
        if let Some(act) = self.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(format!("hidden_act {act:?} is not supported (only \"silu\")"));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err("rope_scaling is not supported".into());
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!("rms_norm_eps must be a positive number, got {}", self.rms_norm_eps));
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
