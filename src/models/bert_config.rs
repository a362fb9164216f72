//! The `config.json` of the BERT-style encoders replora reads with one model file
//! ([`super::bert`]): BERT (MiniLM), RoBERTa, XLM-RoBERTa and DistilBERT. They share the layer
//! (post-norm attention and GELU feed-forward); [`Variant`] names what differs: RoBERTa's
//! position ids (counted from the padding id + 1, padding tokens kept at the padding id), its
//! module prefix and its pooler, which replora does not read; DistilBERT's own config keys and
//! tensor names ([`super::distilbert`]), with no token types and no pooler.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::adapters::{Method, Sites};
use crate::error::{Error, Result};
use crate::files::read_json;

/// Which of the BERT-style encoder families a config describes (its `model_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Bert,
    Roberta,
    XlmRoberta,
    DistilBert,
}

/// BERT's, RoBERTa's and XLM-R's default targets and sites (PEFT's for `bert` and `roberta`).
const BERT_QUERY_VALUE: &[&str] = &["query", "value"];
const BERT_SITES: &[&str] = &["attention.output.dense", "output.dense"];
const BERT_KEYS: &[&str] = &["key"];
/// DistilBERT's (PEFT's `distilbert` targets are `q_lin`, `v_lin`).
const DISTILBERT_QUERY_VALUE: &[&str] = &["q_lin", "v_lin"];
const DISTILBERT_SITES: &[&str] = &["attention.out_lin", "ffn.lin2"];
const DISTILBERT_KEYS: &[&str] = &["k_lin"];

impl Variant {
    /// The `model_type` values read with this model file.
    pub const MODEL_TYPES: [&'static str; 4] = ["bert", "roberta", "xlm-roberta", "distilbert"];

    /// The variant of a `model_type`; older BERT checkpoints' configs name none.
    pub fn of(model_type: Option<&str>) -> Option<Self> {
        match model_type.unwrap_or("bert") {
            "bert" => Some(Variant::Bert),
            "roberta" => Some(Variant::Roberta),
            "xlm-roberta" => Some(Variant::XlmRoberta),
            "distilbert" => Some(Variant::DistilBert),
            _ => None,
        }
    }

    /// The variant of `model` (a directory with `config.json`; an asset name or anything
    /// unreadable is BERT, whose loader then reports what is wrong).
    pub fn detect(model: &str) -> Self {
        let config = Path::new(model).join("config.json");
        let model_type = read_json::<serde_json::Value>(&config).ok().and_then(|c| c.get("model_type")?.as_str().map(String::from));
        Self::of(model_type.as_deref()).unwrap_or(Variant::Bert)
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Bert => "BERT",
            Variant::Roberta => "RoBERTa",
            Variant::XlmRoberta => "XLM-RoBERTa",
            Variant::DistilBert => "DistilBERT",
        }
    }

    /// The encoder's module prefix inside transformers' task models (`base_model_prefix`).
    pub fn task_prefix(self) -> &'static str {
        match self {
            Variant::Bert => "bert.",
            Variant::Roberta | Variant::XlmRoberta => "roberta.",
            Variant::DistilBert => "distilbert.",
        }
    }

    /// transformers' class of the bare encoder.
    pub fn bare_architecture(self) -> &'static str {
        match self {
            Variant::Bert => "BertModel",
            Variant::Roberta => "RobertaModel",
            Variant::XlmRoberta => "XLMRobertaModel",
            Variant::DistilBert => "DistilBertModel",
        }
    }

    /// Whether position ids count from the padding id + 1 and padding tokens sit at the
    /// padding id (transformers' `create_position_ids_from_input_ids`).
    pub fn positions_after_padding(self) -> bool {
        matches!(self, Variant::Roberta | Variant::XlmRoberta)
    }

    /// Whether the pooler is read: RoBERTa's `*ForSequenceClassification` heads do not use it
    /// (and its pre-training, without next-sentence prediction, did not train it).
    pub fn reads_pooler(self) -> bool {
        self == Variant::Bert
    }

    /// The default targets of `method`, as PEFT names them for this family.
    pub fn default_targets(self, method: Method) -> &'static [&'static str] {
        let distil = self == Variant::DistilBert;
        match (method.sites(), distil) {
            (Sites::QueryValue, false) => BERT_QUERY_VALUE,
            (Sites::Outputs, false) => BERT_SITES,
            (Sites::KeyProjections, false) => BERT_KEYS,
            (Sites::QueryValue, true) => DISTILBERT_QUERY_VALUE,
            (Sites::Outputs, true) => DISTILBERT_SITES,
            (Sites::KeyProjections, true) => DISTILBERT_KEYS,
        }
    }
}

/// The feed-forward non-linearity (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    /// Exact GELU, `x * Phi(x)` with erf.
    #[serde(rename = "gelu")]
    Gelu,
}

/// A Hugging Face BERT-style `config.json` (DistilBERT's keys translated, see
/// [`super::distilbert`]). Keys this model does not use are kept in `extra`, so a saved config
/// still carries them (`architectures`, labels, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// `bert` (also when absent), `roberta`, `xlm-roberta` or `distilbert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: HiddenAct,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// 0 for DistilBERT, which has no token-type table.
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

pub(super) fn default_act() -> HiddenAct {
    HiddenAct::Gelu
}
pub(super) fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Reads and checks `config.json` (any [`Variant`]'s).
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_value(read_json(path)?, path)
    }

    /// The config of a `config.json` value, checked; `source` names errors.
    pub fn from_value(value: serde_json::Value, source: &Path) -> Result<Self> {
        let model_type = value.get("model_type").and_then(serde_json::Value::as_str);
        let config = match Variant::of(model_type) {
            None => return Err(Error::format(source, unknown_model_type(model_type.unwrap_or_default()))),
            Some(Variant::DistilBert) => super::distilbert::from_value(value).map_err(|e| Error::format(source, e))?,
            Some(_) => serde_json::from_value(value).map_err(|e| Error::format(source, format!("model config: {e}")))?,
        };
        config.validate().map_err(|m| Error::format(source, m))?;
        Ok(config)
    }

    /// `config.json` as transformers reads it (DistilBERT's in its own keys).
    pub fn to_value(&self) -> serde_json::Value {
        match self.variant() {
            Variant::DistilBert => super::distilbert::to_value(self),
            _ => serde_json::to_value(self).expect("configs serialize"),
        }
    }

    /// The family this config is read as (a `model_type` no variant reads is refused on reading).
    pub fn variant(&self) -> Variant {
        Variant::of(self.model_type.as_deref()).unwrap_or(Variant::Bert)
    }

    /// The padding id position ids count from, for RoBERTa (transformers' default 1).
    pub fn position_padding(&self) -> Option<usize> {
        self.variant().positions_after_padding().then(|| self.pad_token_id.unwrap_or(1))
    }

    /// Longest input in tokens: the position table, less RoBERTa's `padding id + 1` offset.
    pub fn max_positions(&self) -> usize {
        self.max_position_embeddings.saturating_sub(self.position_padding().map_or(0, |pad| pad + 1))
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let mut sizes = vec![
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if self.variant() != Variant::DistilBert {
            sizes.push(("type_vocab_size", self.type_vocab_size));
        }
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_attention_heads));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!("layer_norm_eps must be a positive number, got {}", self.layer_norm_eps));
        }
        if let Some(pad) = self.position_padding()
            && pad + 1 >= self.max_position_embeddings
        {
            return Err(format!(
                "pad_token_id {pad}: {} position ids start after it, which leaves no room in max_position_embeddings {}",
                self.variant().name(),
                self.max_position_embeddings
            ));
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

/// The error for a `model_type` no encoder variant reads: the families replora reads.
fn unknown_model_type(model_type: &str) -> String {
    format!(
        "model_type {model_type:?} is not an encoder replora reads (encoders: {}; every family: {})",
        Variant::MODEL_TYPES.join(", "),
        super::known_model_types()
    )
}
