//! How a trained classifier leaves replora so that Hugging Face libraries load it into the same
//! predictions.
//!
//! transformers' `BertForSequenceClassification` (and PEFT's `SEQ_CLS` on top of it) classifies
//! `tanh(pooler(h_CLS))`: that is replora's `--pooling cls` on a checkpoint with a pooler, and
//! only that is written as one. Every other run (mean pooling, or CLS on a checkpoint without a
//! pooler) is written in the sentence-transformers layout: the merged encoder as a plain
//! `BertModel`, `1_Pooling` with the run's pooling and the head as a `2_Dense` module with
//! identity activation, so `SentenceTransformer(dir).encode(texts)` returns the logits. Its PEFT
//! export adapts the bare encoder (`FEATURE_EXTRACTION`) and carries the head beside it, with a
//! README.md holding the few lines of Python that reproduce replora's probabilities.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::json;

use super::heads::HEAD;
use crate::error::{Error, Result};
use crate::files::write_json;
use crate::formats::peft;
use crate::models::bert::Pooling;
use crate::models::encoder::Encoder;
use crate::weights::{HostTensor, tensors};

/// The Hugging Face form a trained classifier is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfLayout {
    /// `BertForSequenceClassification` (merge) / PEFT `SEQ_CLS` (export).
    SequenceClassification,
    /// sentence-transformers Transformer + Pooling + Dense (merge) / PEFT `FEATURE_EXTRACTION`
    /// with `head.safetensors` (export).
    SentenceTransformers,
}

impl HfLayout {
    /// The layout whose Hugging Face reading computes what replora trained.
    pub fn of(pooling: Pooling, has_pooler: bool) -> Self {
        match (pooling, has_pooler) {
            (Pooling::Cls, true) => HfLayout::SequenceClassification,
            _ => HfLayout::SentenceTransformers,
        }
    }
}

const METADATA: [(&str, &str); 1] = [("format", "pt")];

/// The safetensors metadata transformers requires (`format: pt`).
pub fn metadata() -> Option<HashMap<String, String>> {
    Some(METADATA.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// `config.json` of the merged encoder; `architectures` and labels are set by the caller.
fn base_config(bert: &Encoder, pooling: Pooling) -> serde_json::Value {
    let mut config = bert.config_value();
    for key in ["id2label", "label2id", "num_labels"] {
        config.as_object_mut().expect("config is an object").remove(key);
    }
    config["replora_pooling"] = json!(pooling.to_string());
    config
}

/// `BertForSequenceClassification` (encoder under `bert.`) or
/// `ModernBertForSequenceClassification` (under `model.`, its `head`, `classifier_pooling` the
/// run's), head as `classifier`, labels in config.
pub fn write_sequence_classification(
    dir: &Path,
    bert: &Encoder,
    head: BTreeMap<String, HostTensor>,
    labels: &[String],
    pooling: Pooling,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut weights = bert.task_tensors();
    weights.extend(head);
    tensors::write(&dir.join("model.safetensors"), &weights, metadata())?;
    let mut config = base_config(bert, pooling);
    if let Encoder::ModernBert(_) = bert {
        config["classifier_pooling"] = json!(pooling.to_string());
    }
    set_classifier(&mut config, bert.architectures().1, labels);
    write_json(&dir.join("config.json"), &config)
}

/// Makes `config` a transformers classifier's: its `architectures`, `num_labels`, `id2label`
/// and `label2id`.
pub fn set_classifier(config: &mut serde_json::Value, architecture: &str, labels: &[String]) {
    let id2label: BTreeMap<String, &String> = labels.iter().enumerate().map(|(i, l)| (i.to_string(), l)).collect();
    let label2id: BTreeMap<&String, usize> = labels.iter().enumerate().map(|(i, l)| (l, i)).collect();
    config["architectures"] = json!([architecture]);
    config["num_labels"] = json!(labels.len());
    config["id2label"] = json!(id2label);
    config["label2id"] = json!(label2id);
}

/// The sentence-transformers layout: `SentenceTransformer(dir).encode(texts)` gives the logits,
/// in the order of `labels.json`.
pub fn write_sentence_transformers(
    dir: &Path,
    bert: &Encoder,
    head: &BTreeMap<String, HostTensor>,
    labels: &[String],
    pooling: Pooling,
    max_len: usize,
) -> Result<()> {
    for sub in ["1_Pooling", "2_Dense"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| Error::io(dir.join(sub), e))?;
    }
    tensors::write(&dir.join("model.safetensors"), &bert.bare_tensors(), metadata())?;
    let mut config = base_config(bert, pooling);
    config["architectures"] = json!([bert.architectures().0]);
    write_json(&dir.join("config.json"), &config)?;
    write_json(&dir.join("labels.json"), &labels)?;
    write_json(&dir.join("sentence_bert_config.json"), &json!({"max_seq_length": max_len, "do_lower_case": false}))?;
    let module = |idx: usize, path: &str, kind: &str| json!({"idx": idx, "name": idx.to_string(), "path": path, "type": format!("sentence_transformers.models.{kind}")});
    write_json(
        &dir.join("modules.json"),
        &json!([module(0, "", "Transformer"), module(1, "1_Pooling", "Pooling"), module(2, "2_Dense", "Dense")]),
    )?;
    let hidden = bert.hidden_size();
    write_json(
        &dir.join("1_Pooling/config.json"),
        &json!({
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": pooling == Pooling::Cls,
            "pooling_mode_mean_tokens": pooling == Pooling::Mean,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
            "pooling_mode_weightedmean_tokens": false,
            "pooling_mode_lasttoken": false,
            "include_prompt": true,
        }),
    )?;
    write_json(
        &dir.join("2_Dense/config.json"),
        &json!({"in_features": hidden, "out_features": labels.len(), "bias": true, "activation_function": "torch.nn.modules.linear.Identity"}),
    )?;
    let dense = head.iter().map(|(k, v)| (k.replacen(HEAD, "linear", 1), v.clone())).collect();
    tensors::write(&dir.join("2_Dense/model.safetensors"), &dense, metadata())
}

/// The Python lines that turn a `FEATURE_EXTRACTION` export into replora's probabilities;
/// `scripts/check-interop` executes them as written.
fn peft_readme(base: &str, pooling: Pooling, max_len: usize) -> String {
    let pool = match pooling {
        Pooling::Mean => {
            "mask = batch[\"attention_mask\"].unsqueeze(-1).float()\npooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean over real tokens"
        }
        Pooling::Cls => "pooled = hidden[:, 0]  # the [CLS] token's state (no pooler)",
    };
    format!(
        "# replora classifier adapter ({pooling} pooling)\n\n\
         This run classifies the {pooling}-pooled encoder output, not the `[CLS]` pooler output that\n\
         transformers' `BertForSequenceClassification` classifies, so the adapter is written for the bare\n\
         encoder (`task_type` FEATURE_EXTRACTION) and the head is `head.safetensors` (rows in the order of\n\
         `labels.json`). `AutoModelForSequenceClassification` + this adapter would be a different model.\n\
         These lines reproduce `replora predict` (set `export` to this directory, `texts` to a list of strings):\n\n\
         ```python\n\
         import torch\n\
         from peft import PeftModel\n\
         from safetensors.torch import load_file\n\
         from transformers import AutoModel, AutoTokenizer\n\n\
         base = {base:?}\n\
         tokenizer = AutoTokenizer.from_pretrained(base)\n\
         model = PeftModel.from_pretrained(AutoModel.from_pretrained(base), export).eval()\n\
         head = load_file(f\"{{export}}/head.safetensors\")\n\
         batch = tokenizer(texts, padding=True, truncation=True, max_length={max_len}, return_tensors=\"pt\")\n\
         with torch.no_grad():\n    hidden = model(**batch).last_hidden_state\n\
         {pool}\n\
         probs = torch.softmax(pooled @ head[\"classifier.weight\"].T + head[\"classifier.bias\"], -1)\n\
         ```\n"
    )
}

/// PEFT `FEATURE_EXTRACTION` export of a classifier whose pooling transformers' task head does
/// not compute: the adapter on the bare encoder, `head.safetensors`, `labels.json`, README.md.
pub fn write_peft_feature_extraction(
    dir: &Path,
    encoder: &crate::adapters::PeftModel<Encoder>,
    head: &BTreeMap<String, HostTensor>,
    labels: &[String],
    base: &str,
    pooling: Pooling,
    max_len: usize,
) -> Result<()> {
    let info = peft::PeftInfo {
        base_model_name_or_path: base.to_string(),
        task_type: Some("FEATURE_EXTRACTION".into()),
        strip_prefix: encoder.model.prefix().to_string(),
        ..Default::default()
    };
    peft::export(&encoder.adapters, &info, dir)?;
    tensors::write(&dir.join("head.safetensors"), head, metadata())?;
    write_json(&dir.join("labels.json"), &labels)?;
    crate::files::write_atomic(&dir.join("README.md"), peft_readme(base, pooling, max_len).as_bytes())
}
