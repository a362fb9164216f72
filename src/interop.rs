//! `replora logits`: a model's raw outputs for given texts, written to a safetensors file so
//! that other libraries (transformers, PEFT, sentence-transformers; `scripts/check-interop`)
//! can be compared with what replora computes: for a trained run (classifier or decoder), or
//! for a Hugging Face PEFT adapter (LoRA/DoRA, `SEQ_CLS` or `CAUSAL_LM`) on a base model.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::prelude::*;

use crate::adapters::{Deltas, PeftModel};
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::formats::peft;
use crate::models::Family;
use crate::models::bert::{Bert, Pooling};
use crate::models::decoder::Decoder;
use crate::run::sources::Role;
use crate::tasks::heads::{ClassifierModel, SequenceClassifier};
use crate::tasks::{Classification, MultipleChoice, TaskKind};
use crate::weights::{HostTensor, tensors};

/// Whose outputs `replora logits` writes.
pub enum Source<'a> {
    /// A run directory written by `train` or `train-lm`.
    Run(&'a Path),
    /// A PEFT adapter directory applied to `model` (a directory, `.gguf` file or asset name).
    Peft { adapter: &'a Path, model: &'a str },
}

/// Per text `i`: `input_ids.{i}` (`[t]`, as f32) and `logits.{i}`: `[labels]` for a classifier
/// (before the softmax), `[t, vocab]` for a decoder (every position), computed on `device`.
/// Metadata `kind` is `classifier` or `decoder`.
pub fn write_logits(source: &Source, texts: &[String], out: &Path, device: &Device) -> Result<()> {
    if texts.is_empty() {
        return Err(Error::Config("no text to score: give --text at least once".into()));
    }
    let (kind, rows) = match source {
        Source::Run(run) if crate::run::kind_of(run)? == TaskKind::MultipleChoice => {
            let (task, model) = crate::run::open::<MultipleChoice>(run, device, &[Role::Model])?;
            ("decoder", decoder_logits(&task.decoder, &model.decoder, texts, device)?)
        }
        Source::Run(run) => {
            let (task, model) = crate::run::open::<Classification>(run, device, &[Role::Model])?;
            ("classifier", classifier_logits(&model, &task.tokenizer, texts, device)?)
        }
        Source::Peft { adapter, model } if Family::detect(model) == Some(Family::Llama) => {
            let decoder = Decoder::open(model, device)?;
            let peft = peft::import(decoder.model.clone(), adapter)?;
            ("decoder", decoder_logits(&decoder, &peft, texts, device)?)
        }
        Source::Peft { adapter, model } => {
            let dir = crate::models::resolve(model)?;
            let model = seq_cls_from_peft(&dir, adapter, device)?;
            let tokenizer = Tokenizer::from_model_dir(&dir)?;
            ("classifier", classifier_logits(&model, &tokenizer, texts, device)?)
        }
    };
    for (i, (_, logits)) in rows.iter().enumerate() {
        crate::tasks::check_finite(&logits.data, || format!("the logits of --text {}", i + 1)).map_err(|e| match source {
            Source::Run(run) => crate::run::blame_trained_files(run, e),
            Source::Peft { .. } => e,
        })?;
    }
    let mut file = BTreeMap::new();
    for (i, (ids, logits)) in rows.into_iter().enumerate() {
        file.insert(format!("input_ids.{i}"), HostTensor { shape: vec![ids.len()], data: ids.iter().map(|&id| id as f32).collect() });
        file.insert(format!("logits.{i}"), logits);
    }
    tensors::write(out, &file, Some(HashMap::from([("kind".to_string(), kind.to_string())])))
}

/// transformers' `BertForSequenceClassification` + a PEFT `SEQ_CLS` adapter whose
/// `modules_to_save` hold the head: CLS pooling through the base model's pooler.
fn seq_cls_from_peft(model_dir: &Path, adapter: &Path, device: &Device) -> Result<SequenceClassifier> {
    let config_file = adapter.join("adapter_config.json");
    let config: serde_json::Value = crate::files::read_json(&config_file)?;
    if config.get("task_type").and_then(|t| t.as_str()) != Some("SEQ_CLS") {
        let found = config.get("task_type").cloned().unwrap_or(serde_json::Value::Null);
        return Err(Error::format(
            config_file,
            format!(
                "task_type {found} is not SEQ_CLS: a classifier needs the head PEFT saves with SEQ_CLS (for replora's export of a mean-pooled run use `replora logits --run` or the lines in its README.md)"
            ),
        ));
    }
    let bert = Bert::load(model_dir, "bert.", device)?;
    if bert.pooler.is_none() {
        return Err(Error::format(
            model_dir.join("model.safetensors"),
            "no pooler (pooler.dense): BertForSequenceClassification would start it at random",
        ));
    }
    let (encoder, modules) = peft::import_with_modules(crate::models::encoder::Encoder::Bert(bert), adapter)?;
    let file = adapter.join("adapter_model.safetensors");
    let labels = modules
        .get("classifier.bias")
        .map(|b| b.shape[0])
        .ok_or_else(|| Error::MissingTensor { file: file.clone(), name: "base_model.model.classifier.bias (modules_to_save)".into() })?;
    SequenceClassifier::new(encoder, labels, Pooling::Cls, 0.0, 0).with_head(modules, &file)
}

type Rows = Vec<(Vec<u32>, HostTensor)>;

fn classifier_logits(model: &SequenceClassifier, tokenizer: &Tokenizer, texts: &[String], device: &Device) -> Result<Rows> {
    let model = model.valid();
    texts
        .iter()
        .map(|text| {
            let encoded = tokenizer.encode(text, None)?;
            let batch = crate::data::Batch::pad(&[&encoded], vec![0], tokenizer.pad_id());
            let logits = model.logits(&batch.to_input(device), false);
            Ok((encoded.input_ids, HostTensor::from_tensor(&logits.squeeze_dim::<1>(0))))
        })
        .collect()
}

fn decoder_logits(decoder: &Decoder, model: &PeftModel<crate::models::llama::Llama>, texts: &[String], device: &Device) -> Result<Rows> {
    let deltas: Deltas = model.deltas();
    texts
        .iter()
        .map(|text| {
            let ids = decoder.encode_prompt(text)?;
            if ids.is_empty() || ids.len() > model.model.config.max_position_embeddings {
                return Err(Error::Config(format!(
                    "{text:?} is {} tokens; give 1 to {}",
                    ids.len(),
                    model.model.config.max_position_embeddings
                )));
            }
            let input = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect(), [1, ids.len()]), device);
            let logits = model.model.logits(model.model.forward(input, None, None, &deltas));
            Ok((ids, HostTensor::from_tensor(&logits.squeeze_dim::<2>(0))))
        })
        .collect()
}
