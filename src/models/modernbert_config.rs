//! The `config.json` of ModernBERT ([`super::modernbert`]): which layers attend globally and
//! which in a sliding window, their two RoPE bases, the window, and the biases the checkpoint
//! has. transformers 4 writes `global_attn_every_n_layers`, `global_rope_theta` and
//! `local_rope_theta`; transformers 5 also writes `layer_types` and `rope_parameters`, which
//! win where both are present (as in transformers).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::files::read_json;

/// The `model_type` of ModernBERT checkpoints.
pub const MODEL_TYPE: &str = "modernbert";

/// transformers' defaults (`ModernBertConfig`).
const GLOBAL_EVERY: usize = 3;
const GLOBAL_THETA: f64 = 160_000.0;
const LOCAL_THETA: f64 = 10_000.0;

/// A Hugging Face ModernBERT `config.json`. Keys this model does not use stay in `extra`, so a
/// saved config still carries them (`architectures`, labels, dropouts, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModernBertConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_act")]
    pub hidden_activation: String,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub norm_bias: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub classifier_bias: bool,
    #[serde(default = "default_act")]
    pub classifier_activation: String,
    /// The sliding window in tokens: a local layer's query sees keys at most half of it away.
    #[serde(default = "default_window")]
    pub local_attention: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_attn_every_n_layers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_rope_theta: Option<f64>,
    /// `full_attention` or `sliding_attention` per layer (transformers 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// `{"full_attention": {"rope_theta": .., "rope_type": "default"}, "sliding_attention": ..}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<BTreeMap<String, Value>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_max_positions() -> usize {
    8192
}
fn default_eps() -> f64 {
    1e-5
}
fn default_window() -> usize {
    128
}

const FULL: &str = "full_attention";
const SLIDING: &str = "sliding_attention";

impl ModernBertConfig {
    /// Reads and checks `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let config: Self =
            serde_json::from_value(read_json(path)?).map_err(|e| Error::format(path, format!("ModernBERT model config: {e}")))?;
        config.validate().map_err(|m| Error::format(path, m))?;
        Ok(config)
    }

    /// Whether layer `i` attends in the sliding window (else to every token).
    pub fn is_local(&self, i: usize) -> bool {
        match &self.layer_types {
            Some(types) => types[i] == SLIDING,
            None => !i.is_multiple_of(self.global_attn_every_n_layers.unwrap_or(GLOBAL_EVERY)),
        }
    }

    /// The RoPE base of the local layers (`local: true`) or of the global ones.
    pub fn rope_base(&self, local: bool) -> f64 {
        let (kind, old, default) =
            if local { (SLIDING, self.local_rope_theta, LOCAL_THETA) } else { (FULL, self.global_rope_theta, GLOBAL_THETA) };
        let new = self.rope_parameters.as_ref().and_then(|p| p.get(kind)?.get("rope_theta")?.as_f64());
        new.or(old).unwrap_or(default)
    }

    /// How far (in positions, each side) a local layer's query sees: `local_attention / 2`.
    pub fn half_window(&self) -> usize {
        self.local_attention / 2
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) || !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "hidden_size {} must be an even multiple of num_attention_heads {} (rotary embeddings rotate pairs)",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(format!("norm_eps must be a positive number, got {}", self.norm_eps));
        }
        if self.global_attn_every_n_layers == Some(0) {
            return Err("global_attn_every_n_layers must be at least 1".into());
        }
        for (key, act) in [("hidden_activation", &self.hidden_activation), ("classifier_activation", &self.classifier_activation)] {
            if act != "gelu" {
                return Err(format!("{key} {act:?} is not supported (only \"gelu\", the exact GELU)"));
            }
        }
        if let Some(types) = &self.layer_types {
            if types.len() != self.num_hidden_layers {
                return Err(format!("layer_types lists {} layers, num_hidden_layers is {}", types.len(), self.num_hidden_layers));
            }
            if let Some(other) = types.iter().find(|t| *t != FULL && *t != SLIDING) {
                return Err(format!("layer_types: {other:?} is neither {FULL:?} nor {SLIDING:?}"));
            }
        }
        for (kind, params) in self.rope_parameters.iter().flatten() {
            match params.get("rope_type").and_then(Value::as_str) {
                None | Some("default") => {}
                Some(other) => return Err(format!("rope_parameters.{kind}.rope_type {other:?} is not supported (only \"default\")")),
            }
        }
        Ok(())
    }
}
