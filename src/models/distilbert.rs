//! DistilBERT, read with the BERT model file ([`super::bert`]): its layer computes what BERT's
//! does (post-norm attention, GELU feed-forward, LayerNorm eps 1e-12), under other names
//! (`transformer.layer.N.attention.q_lin`, `sa_layer_norm`, `ffn.lin1`, `output_layer_norm`) and
//! other config keys (`dim`, `n_layers`, `n_heads`, `hidden_dim`, `activation`). It has no
//! token-type table and no pooler: replora's classifier reads the first token's state (or the
//! mean), not transformers' `pre_classifier` + ReLU of `DistilBertForSequenceClassification`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bert::TensorNames;
use super::bert_config::{BertConfig, HiddenAct, default_act, default_max_positions};

/// Where a DistilBERT checkpoint keeps each tensor.
pub const NAMES: TensorNames = TensorNames {
    word: "embeddings.word_embeddings",
    position: "embeddings.position_embeddings",
    token_type: None,
    embedding_norm: "embeddings.LayerNorm",
    layers: "transformer.layer.",
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attention_output: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    intermediate: "ffn.lin1",
    output: "ffn.lin2",
    output_norm: "output_layer_norm",
};

/// transformers' fixed LayerNorm epsilon in DistilBERT (not a config key).
const LAYER_NORM_EPS: f64 = 1e-12;

/// DistilBERT's `config.json`; unused keys (`sinusoidal_pos_embds`, dropouts, ...) stay in
/// `extra` and are written back. A sinusoidal position table is read as the checkpoint stores it.
#[derive(Serialize, Deserialize)]
struct DistilBertConfig {
    model_type: String,
    vocab_size: usize,
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    hidden_dim: usize,
    #[serde(default = "default_act")]
    activation: HiddenAct,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pad_token_id: Option<usize>,
    #[serde(flatten)]
    extra: BTreeMap<String, serde_json::Value>,
}

/// The shared config of a DistilBERT `config.json` value.
pub(super) fn from_value(value: serde_json::Value) -> Result<BertConfig, String> {
    let c: DistilBertConfig = serde_json::from_value(value).map_err(|e| format!("DistilBERT model config: {e}"))?;
    Ok(BertConfig {
        model_type: Some(c.model_type),
        vocab_size: c.vocab_size,
        hidden_size: c.dim,
        num_hidden_layers: c.n_layers,
        num_attention_heads: c.n_heads,
        intermediate_size: c.hidden_dim,
        hidden_act: c.activation,
        max_position_embeddings: c.max_position_embeddings,
        type_vocab_size: 0,
        layer_norm_eps: LAYER_NORM_EPS,
        pad_token_id: c.pad_token_id,
        position_embedding_type: None,
        extra: c.extra,
    })
}

/// The DistilBERT `config.json` of a shared config read by [`from_value`].
pub(super) fn to_value(config: &BertConfig) -> serde_json::Value {
    let c = DistilBertConfig {
        model_type: "distilbert".into(),
        vocab_size: config.vocab_size,
        dim: config.hidden_size,
        n_layers: config.num_hidden_layers,
        n_heads: config.num_attention_heads,
        hidden_dim: config.intermediate_size,
        activation: config.hidden_act,
        max_position_embeddings: config.max_position_embeddings,
        pad_token_id: config.pad_token_id,
        extra: config.extra.clone(),
    };
    serde_json::to_value(c).expect("configs serialize")
}
