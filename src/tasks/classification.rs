//! Text (or text-pair) classification: a BERT-style encoder (BERT, RoBERTa, XLM-RoBERTa,
//! DistilBERT) with an adapter, pooling and a linear head, trained with cross-entropy and scored
//! by accuracy and macro-F1.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::heads::{ClassifierModel, SequenceClassifier, evaluate};
use super::hf_layout::{self, HfLayout};
use super::{Task, TaskKind, TestScores, Tuning};
use crate::adapters::PeftModel;
use crate::adapters::base_weight::Quantize;
use crate::data::{self, BatchConfig, Columns, Dataset, EncodedDataset, LoadOptions, SplitConfig, Tokenizer};
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::formats::peft;
use crate::layout::{HEAD_FILE, LABELS_FILE};
use crate::models::Architecture;
use crate::models::bert::Pooling;
use crate::models::encoder::Encoder;
use crate::training::{EvalMetrics, TrainConfig};

/// Everything that defines a classification run; stored as `run.json` in the run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationSpec {
    /// A model directory, or an asset name (`minilm`) fetched on demand.
    pub model: String,
    /// A dataset file, or `bigbench:<task>`.
    pub data: String,
    pub format: Option<String>,
    pub text_column: String,
    pub pair_column: Option<String>,
    pub label_column: String,
    /// Train / validation / test fractions of the dataset.
    pub split: [f64; 3],
    /// Stratified fraction of the training split actually used (sample-efficiency runs).
    pub train_fraction: f64,
    pub max_len: usize,
    pub pooling: Pooling,
    pub head_dropout: f64,
    /// How the base's frozen linear weights are held (`--quantize`); written only when not as
    /// stored, so that specs written before it keep their identity.
    #[serde(default, skip_serializing_if = "Quantize::is_stored")]
    pub quantize: Quantize,
    /// How the model is tuned (`tuning`, and `adapter` for an adapter run).
    #[serde(flatten)]
    pub tuning: Tuning,
    pub train: TrainConfig,
}

impl Default for ClassificationSpec {
    fn default() -> Self {
        Self {
            model: "minilm".into(),
            data: "bigbench:intent_recognition".into(),
            format: None,
            text_column: "text".into(),
            pair_column: Some("text_pair".into()),
            label_column: "label".into(),
            split: [0.7, 0.15, 0.15],
            train_fraction: 1.0,
            max_len: 128,
            // What transformers' BertForSequenceClassification computes (issue 11).
            pooling: Pooling::Cls,
            head_dropout: 0.1,
            quantize: Quantize::Stored,
            tuning: Tuning::default(),
            train: TrainConfig::default(),
        }
    }
}

/// The data of a run, split and tokenized.
pub struct Prepared {
    pub labels: Vec<String>,
    pub train: EncodedDataset,
    pub validation: EncodedDataset,
    pub test: EncodedDataset,
}

/// Loads, splits and tokenizes the run's dataset; `run_labels`: those of a trained run, which
/// every example's label must be one of.
fn prepare(spec: &ClassificationSpec, tokenizer: &Tokenizer, run_labels: Option<&[String]>) -> Result<Prepared> {
    let options = LoadOptions {
        format: spec.format.as_deref().map(data::Format::parse).transpose()?,
        columns: Columns { text: spec.text_column.clone(), text_pair: spec.pair_column.clone(), label: spec.label_column.clone() },
        labels: run_labels.map(<[String]>::to_vec),
        ..Default::default()
    };
    let path = data::resolve(&spec.data)?;
    let dataset = data::load(&path, &options)?;
    let [train, validation, test] = spec.split;
    let splits = dataset.split(&SplitConfig { train, validation, test, seed: spec.train.seed })?;
    splits.check_evaluable()?;
    let train_set: Dataset = if spec.train_fraction < 1.0 { splits.train_fraction(spec.train_fraction)? } else { splits.train.clone() };
    if run_labels.is_none() {
        data::check_two_labels(&path, train_set.examples.iter().map(|e| e.label.as_str()))?;
    }
    Ok(Prepared {
        labels: dataset.labels.clone(),
        train: tokenizer.encode_dataset(&train_set)?,
        validation: tokenizer.encode_dataset(&splits.validation)?,
        test: tokenizer.encode_dataset(&splits.test)?,
    })
}

task_spec!(ClassificationSpec, |spec| spec.data.clone(), |spec| vec![&mut spec.data]);

/// All evaluation batches of a split, in order.
pub fn eval_batches(data: &EncodedDataset, batch_size: usize) -> Vec<data::Batch> {
    data.batches(&BatchConfig { batch_size, shuffle_seed: None, drop_last: false }, 0).collect()
}

/// A classification run's spec with its pre-trained encoder and tokenizer.
pub struct Classification {
    spec: ClassificationSpec,
    pub model_dir: PathBuf,
    pub encoder: Encoder,
    pub tokenizer: Tokenizer,
    device: Device,
    /// The labels of the run restored from a directory (its `labels.json`).
    run_labels: std::cell::OnceCell<Vec<String>>,
}

impl Task for Classification {
    const KIND: TaskKind = TaskKind::Classification;
    const FULL_MODEL_DIR: &'static str = crate::layout::ENCODER_DIR;
    type Spec = ClassificationSpec;
    type Arch = Encoder;
    type Model = SequenceClassifier;
    type Data = Prepared;

    fn open(spec: ClassificationSpec, device: &Device) -> Result<Self> {
        let model_dir = crate::models::resolve(&spec.model)?;
        let encoder = Encoder::load_in_task(&model_dir, spec.quantize, device)?;
        encoder.check_fits(spec.max_len, spec.tuning.layers())?;
        let tokenizer = Tokenizer::from_model_dir(&model_dir)?.with_max_len(spec.max_len)?;
        Ok(Self { spec, model_dir, encoder, tokenizer, device: device.clone(), run_labels: Default::default() })
    }

    fn spec(&self) -> &ClassificationSpec {
        &self.spec
    }

    fn data(&self) -> Result<Prepared> {
        prepare(&self.spec, &self.tokenizer, self.run_labels.get().map(Vec::as_slice))
    }

    fn test_data(&self, source: &str) -> Result<Prepared> {
        let labels: Vec<String> = self.labels_of_run()?;
        let options = LoadOptions { labels: Some(labels.clone()), ..Default::default() };
        let test = self.tokenizer.encode_dataset(&data::open(source, &options)?)?;
        let empty = self.tokenizer.encode_dataset(&Dataset { labels: labels.clone(), examples: vec![] })?;
        Ok(Prepared { labels, train: empty.clone(), validation: empty, test })
    }

    fn sizes(data: &Prepared) -> [usize; 3] {
        [data.train.len(), data.validation.len(), data.test.len()]
    }

    fn labels(data: &Prepared) -> Vec<String> {
        data.labels.clone()
    }

    fn build(&self, data: &Prepared) -> Result<SequenceClassifier> {
        let encoder = self.spec.tuning.wrap(self.encoder.clone())?;
        Ok(SequenceClassifier::new(encoder, data.labels.len(), self.spec.pooling, self.spec.head_dropout, self.spec.train.seed))
    }

    fn adapted(model: &SequenceClassifier) -> &PeftModel<Encoder> {
        &model.encoder
    }

    fn has_macro_f1() -> bool {
        true
    }

    fn train_batches(&self, data: &Prepared, epoch: usize) -> Vec<data::Batch> {
        let batch = BatchConfig { batch_size: self.spec.train.batch_size, shuffle_seed: Some(self.spec.train.seed), drop_last: false };
        data.train.batches(&batch, epoch as u64).collect()
    }

    fn validate(&self, data: &Prepared, model: &SequenceClassifier) -> EvalMetrics {
        evaluate(model, &eval_batches(&data.validation, self.spec.train.batch_size), data.labels.len(), &self.device, false).0
    }

    fn test(&self, data: &Prepared, model: &SequenceClassifier) -> Result<TestScores> {
        let (overall, _) = evaluate(model, &eval_batches(&data.test, self.spec.train.batch_size), data.labels.len(), &self.device, true);
        Ok(TestScores { overall, per_task: vec![] })
    }

    fn save_extra(&self, data: &Prepared, model: &SequenceClassifier, out: &Path) -> Result<()> {
        write_json(&out.join(LABELS_FILE), &data.labels)?;
        model.save_head(&out.join(HEAD_FILE))
    }

    fn restore(&self, out: &Path, device: &Device) -> Result<SequenceClassifier> {
        let labels: Vec<String> = read_json(&out.join(LABELS_FILE))?;
        super::heads::check_head_labels(&out.join(HEAD_FILE), &out.join(LABELS_FILE), labels.len())?;
        let _ = self.run_labels.set(labels.clone());
        let encoder = self
            .spec
            .tuning
            .restore(self.encoder.clone(), out, Self::FULL_MODEL_DIR, |dir| Encoder::load_in_task(dir, Quantize::Stored, device))?;
        let s = &self.spec;
        SequenceClassifier::new(encoder, labels.len(), s.pooling, s.head_dropout, s.train.seed).load_head(&out.join(HEAD_FILE))
    }

    /// Inputs `{"text": .., "text_pair": ..}` (or the run's column names); answers the label,
    /// its probability and every label's.
    fn predict(&self, model: &SequenceClassifier, inputs: &[serde_json::Value]) -> Result<Vec<serde_json::Value>> {
        let mut texts = vec![];
        for (n, value) in inputs.iter().enumerate() {
            let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(String::from);
            let text = field(&self.spec.text_column)
                .or_else(|| field("text"))
                .ok_or_else(|| Error::Config(format!("input {}: no string field {:?}", n + 1, self.spec.text_column)))?;
            let pair = self.spec.pair_column.as_deref().and_then(field).or_else(|| field("text_pair"));
            texts.push((text, pair));
        }
        let labels = self.labels_of_run()?;
        let logits = self.logits(model, &texts)?;
        for (n, row) in logits.iter().enumerate() {
            super::check_finite(row, || format!("the logits of input {}", n + 1))?;
        }
        let probabilities = logits.iter().map(|row| softmax(row)).collect::<Vec<_>>();
        Ok(texts
            .iter()
            .zip(probabilities)
            .map(|((text, pair), probs)| {
                let (best, p) = probs.iter().enumerate().fold((0, f32::MIN), |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc });
                let all: serde_json::Map<String, serde_json::Value> =
                    labels.iter().cloned().zip(probs.iter().map(|&p| serde_json::json!(p))).collect();
                serde_json::json!({"text": text, "text_pair": pair, "label": labels[best], "probability": p, "probabilities": all})
            })
            .collect())
    }

    fn export_peft(&self, model: &SequenceClassifier, dir: &Path) -> Result<String> {
        let base = self.model_dir.display().to_string();
        let layout = export_peft(model, &self.labels_of_run()?, &base, self.spec.max_len, dir)?;
        Ok(layout_note(layout, "export").into())
    }

    fn merge(&self, model: SequenceClassifier, dir: &Path) -> Result<String> {
        let labels = self.labels_of_run()?;
        let note = crate::adapters::widening_note(&model.encoder.model);
        let layout = model.save_merged(dir, &labels, self.spec.max_len)?;
        for file in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"] {
            let src = self.model_dir.join(file);
            if src.exists() {
                std::fs::copy(&src, dir.join(file)).map_err(|e| Error::io(&src, e))?;
            }
        }
        Ok(format!("{}{note}", layout_note(layout, "merge")))
    }
}

impl Classification {
    /// The labels of the run restored from a directory, else the data's.
    fn labels_of_run(&self) -> Result<Vec<String>> {
        match self.run_labels.get() {
            Some(labels) => Ok(labels.clone()),
            None => Ok(self.data()?.labels),
        }
    }

    /// The head's outputs (before the softmax) for texts (or text pairs).
    pub fn logits(&self, model: &SequenceClassifier, texts: &[(String, Option<String>)]) -> Result<Vec<Vec<f32>>> {
        let model = model.valid();
        let device = self.device.clone().inner();
        let mut out = vec![];
        for chunk in texts.chunks(self.spec.train.batch_size.max(1)) {
            let encoded = chunk.iter().map(|(t, p)| self.tokenizer.encode(t, p.as_deref())).collect::<Result<Vec<_>>>()?;
            let refs: Vec<_> = encoded.iter().collect();
            let batch = data::Batch::pad(&refs, vec![0; refs.len()], self.tokenizer.pad_id());
            let logits = model.logits(&batch.to_input(&device), false);
            let [n, c] = logits.dims();
            let values = logits.into_data().try_into_vec_as::<f32>().expect("float tensor");
            out.extend((0..n).map(|i| values[i * c..(i + 1) * c].to_vec()));
        }
        Ok(out)
    }
}

/// Writes a classifier's adapter (RepLoRA materialized) and head in PEFT's layout: `SEQ_CLS`
/// with the head as `modules_to_save` where transformers' task head computes what the model
/// does (CLS pooling through the pooler), else the bare encoder's adapter plus
/// `head.safetensors` (see [`hf_layout`]). `base` names the base model; `max_len` is the run's.
pub fn export_peft(model: &SequenceClassifier, labels: &[String], base: &str, max_len: usize, dir: &Path) -> Result<HfLayout> {
    let layout = model.hf_layout();
    match layout {
        HfLayout::SequenceClassification => {
            let info = peft::PeftInfo {
                base_model_name_or_path: base.into(),
                task_type: Some("SEQ_CLS".into()),
                modules_to_save: model.head_tensors(),
                ..Default::default()
            };
            peft::export(&model.encoder.adapters, &info, dir)?;
            write_json(&dir.join(LABELS_FILE), &labels)?;
        }
        HfLayout::SentenceTransformers => {
            hf_layout::write_peft_feature_extraction(dir, &model.encoder, &model.head_tensors(), labels, base, model.pooling, max_len)?
        }
    }
    Ok(layout)
}

/// A numerically stable softmax of one row.
fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// What `merge` / `export` wrote and how Python loads it into replora's predictions.
pub fn layout_note(layout: HfLayout, verb: &str) -> &'static str {
    match (layout, verb) {
        (HfLayout::SequenceClassification, "merge") => {
            "layout: BertForSequenceClassification (CLS pooler + classifier): AutoModelForSequenceClassification.from_pretrained(dir)"
        }
        (HfLayout::SequenceClassification, _) => {
            "layout: PEFT SEQ_CLS with the head in modules_to_save: PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=N), dir)"
        }
        (HfLayout::SentenceTransformers, "merge") => {
            "layout: sentence-transformers (Transformer, the run's pooling, the head as a Dense module): SentenceTransformer(dir).encode(texts) gives the logits; not a BertForSequenceClassification, whose [CLS] pooler head would predict differently (train a BERT with a pooler with --pooling cls for that)"
        }
        (HfLayout::SentenceTransformers, _) => {
            "layout: PEFT FEATURE_EXTRACTION adapter on the bare encoder + head.safetensors (the run's pooling is not transformers' [CLS] pooler head; README.md in the directory has the Python lines; train a BERT with a pooler with --pooling cls for a SEQ_CLS adapter)"
        }
    }
}
