//! Text classification end to end: a run spec in, a run directory out (adapter, head,
//! metrics, summary), and the way back from a run directory to a working model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::adapters::{AdapterConfig, PeftModel, count::ppt};
use crate::data::{self, BatchConfig, Columns, Dataset, EncodedDataset, LoadOptions, SplitConfig, Tokenizer};
use crate::error::{Error, Result};
use crate::formats::{native, peft};
use crate::rundir::{self, Start};
use crate::models::bert::{Bert, Pooling};
use crate::models::classifier::SequenceClassifier;
use crate::models::hf_layout::{self, HfLayout};
use crate::training::{self, ClassifierModel, EvalMetrics, TrainConfig, TrainReport};

/// How the encoder is tuned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tuning {
    /// The adapter of the spec's `adapter` config (LoRA, DoRA or RepLoRA).
    Adapter,
    /// Full fine-tuning of every encoder weight.
    Full,
}

/// Everything that defines a run; stored as `run.json` in the run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
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
    pub tuning: Tuning,
    pub adapter: AdapterConfig,
    pub train: TrainConfig,
}

impl Default for RunSpec {
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
            tuning: Tuning::Adapter,
            adapter: AdapterConfig::default(),
            train: TrainConfig::default(),
        }
    }
}

impl RunSpec {
    /// `lora`, `dora`, `replora` or `full`.
    pub fn method_name(&self) -> String {
        match self.tuning {
            Tuning::Full => "full".into(),
            Tuning::Adapter => self.adapter.method.to_string(),
        }
    }
}

/// The final report of a run; written as `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    pub method: String,
    pub model: String,
    pub data: String,
    pub labels: Vec<String>,
    /// Examples in the train (after `train_fraction`), validation and test splits.
    pub sizes: [usize; 3],
    pub test: EvalMetrics,
    pub training: TrainReport,
    pub trainable_params: usize,
    pub total_params: usize,
    pub trainable_percent: f64,
    /// Performance per parameter with test accuracy in percent (spec section 4).
    pub ppt: f64,
    pub train_examples_per_s: f64,
    pub peak_rss_mib: Option<f64>,
}

/// A model directory from a path or an asset name.
pub fn model_dir(model: &str) -> Result<PathBuf> {
    let path = PathBuf::from(model);
    if path.is_dir() {
        return Ok(path);
    }
    if crate::assets::known().iter().any(|a| a.name == model) {
        return crate::assets::fetch(model);
    }
    let names: Vec<&str> = crate::assets::known().iter().map(|a| a.name).collect();
    Err(Error::io(&path, std::io::Error::new(std::io::ErrorKind::NotFound, format!("no such model directory or file (and not an asset name: {})", names.join(", ")))))
}

/// The data of a run, split and tokenized.
pub struct Prepared {
    pub tokenizer: Tokenizer,
    pub labels: Vec<String>,
    pub train: EncodedDataset,
    pub validation: EncodedDataset,
    pub test: EncodedDataset,
}

/// Loads, splits and tokenizes the run's dataset.
pub fn prepare(spec: &RunSpec, model_dir: &Path) -> Result<Prepared> {
    let options = LoadOptions {
        format: spec.format.as_deref().map(data::Format::parse).transpose()?,
        columns: Columns { text: spec.text_column.clone(), text_pair: spec.pair_column.clone(), label: spec.label_column.clone() },
        ..Default::default()
    };
    let dataset = data::open(&spec.data, &options)?;
    let [train, validation, test] = spec.split;
    let splits = dataset.split(&SplitConfig { train, validation, test, seed: spec.train.seed })?;
    splits.check_evaluable()?;
    let train_set: Dataset = if spec.train_fraction < 1.0 { splits.train_fraction(spec.train_fraction)? } else { splits.train.clone() };
    let tokenizer = Tokenizer::from_model_dir(model_dir)?.with_max_len(spec.max_len)?;
    Ok(Prepared {
        labels: dataset.labels.clone(),
        train: tokenizer.encode_dataset(&train_set)?,
        validation: tokenizer.encode_dataset(&splits.validation)?,
        test: tokenizer.encode_dataset(&splits.test)?,
        tokenizer,
    })
}

/// The untrained classifier of a run: pre-trained encoder, fresh adapter and head.
pub fn build(spec: &RunSpec, model_dir: &Path, num_labels: usize, device: &Device) -> Result<SequenceClassifier> {
    let bert = Bert::load(model_dir, "bert.", device)?;
    let c = &bert.config;
    crate::validate::fits_model(spec.max_len, c.max_position_embeddings, spec.adapter.layers_to_transform.as_deref(), c.num_hidden_layers)?;
    let encoder = match spec.tuning {
        Tuning::Adapter => PeftModel::new(bert, &spec.adapter)?,
        Tuning::Full => PeftModel::full_finetune(bert),
    };
    Ok(SequenceClassifier::new(encoder, num_labels, spec.pooling, spec.head_dropout, spec.train.seed))
}

const RUN_FILE: &str = "run.json";
const LABELS_FILE: &str = "labels.json";
const HEAD_FILE: &str = "head.safetensors";
const ADAPTER_DIR: &str = "adapter";
const ENCODER_DIR: &str = "encoder";
const SUMMARY_FILE: &str = "summary.json";

/// All evaluation batches of a split, in order.
pub fn eval_batches(data: &EncodedDataset, batch_size: usize) -> Vec<data::Batch> {
    data.batches(&BatchConfig { batch_size, shuffle_seed: None, drop_last: false }, 0).collect()
}

/// Trains a run into `out` (or resumes the one there) and writes its artefacts. Everything
/// (settings, data, model) is checked before the first file is written.
pub fn train_run(spec: &RunSpec, out: &Path, start: Start) -> Result<RunSummary> {
    crate::training::reset_peak_rss();
    let spec = rundir::begin(out, spec, &RunSpec::default(), start, rundir::Kind::Classifier)?;
    spec.validate()?;
    let dir = model_dir(&spec.model)?;
    let data = prepare(&spec, &dir)?;
    let device = Device::flex().autodiff();
    let model = build(&spec, &dir, data.labels.len(), &device)?;
    rundir::create(out, start)?;
    crate::files::write_json(&out.join(RUN_FILE), &spec)?;
    crate::files::write_json(&out.join(LABELS_FILE), &data.labels)?;
    let report_params = model.encoder.param_report();
    let head_params = model.head.num_params();
    eprintln!("{}: {} (+ {head_params} head)", spec.method_name(), report_params);

    let batch = BatchConfig { batch_size: spec.train.batch_size, shuffle_seed: Some(spec.train.seed), drop_last: false };
    let train_batches = |epoch: usize| data.train.batches(&batch, epoch as u64).collect::<Vec<_>>();
    let validation = eval_batches(&data.validation, spec.train.batch_size);
    let started = Instant::now();
    let validate = |m: &SequenceClassifier| training::evaluate(m, &validation, data.labels.len(), &device).0;
    let (model, report) = training::train(model, &train_batches, &validate, &spec.train, &device, out, start == Start::Resume)?;
    let train_time = started.elapsed().as_secs_f64();
    save_model(&model, out)?;
    let (test, _) = training::evaluate(&model, &eval_batches(&data.test, spec.train.batch_size), data.labels.len(), &device);
    let trainable = report_params.trainable + head_params;
    let total = report_params.total + head_params;
    let summary = RunSummary {
        method: spec.method_name(),
        model: spec.model.clone(),
        data: spec.data.clone(),
        labels: data.labels.clone(),
        sizes: [data.train.len(), data.validation.len(), data.test.len()],
        trainable_params: trainable,
        total_params: total,
        trainable_percent: 100.0 * trainable as f64 / total as f64,
        ppt: ppt(100.0 * test.accuracy, trainable),
        train_examples_per_s: (data.train.len() * report.epochs_run) as f64 / train_time.max(1e-9),
        test,
        training: report,
        peak_rss_mib: training::trainer::peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
    };
    crate::files::write_json(&out.join(SUMMARY_FILE), &summary)?;
    Ok(summary)
}

/// Writes the trained parts: the adapter (native format) or the full encoder, and the head.
fn save_model(model: &SequenceClassifier, out: &Path) -> Result<()> {
    if model.encoder.is_full_finetune() {
        model.encoder.model.save(&out.join(ENCODER_DIR))?;
    } else {
        native::save(&model.encoder.adapters, &out.join(ADAPTER_DIR))?;
    }
    model.save_head(&out.join(HEAD_FILE))
}

/// A trained run, ready for evaluation and prediction.
pub struct LoadedRun {
    pub spec: RunSpec,
    pub labels: Vec<String>,
    pub model: SequenceClassifier,
    pub model_dir: PathBuf,
}

/// Rebuilds the trained classifier of run directory `out` on `device`.
pub fn load_run(out: &Path, device: &Device) -> Result<LoadedRun> {
    rundir::check_finished(out, rundir::Kind::Classifier)?;
    let spec: RunSpec = crate::files::read_json(&out.join(RUN_FILE))?;
    let labels: Vec<String> = crate::files::read_json(&out.join(LABELS_FILE))?;
    let dir = model_dir(&spec.model)?;
    let encoder = match spec.tuning {
        Tuning::Full => PeftModel::full_finetune(Bert::load(&out.join(ENCODER_DIR), "bert.", device)?),
        Tuning::Adapter => native::load(Bert::load(&dir, "bert.", device)?, &out.join(ADAPTER_DIR))?,
    };
    // Runs made before --max-len was checked could hold one beyond the model's positions.
    crate::validate::fits_model(spec.max_len, encoder.model.config.max_position_embeddings, None, encoder.model.config.num_hidden_layers)?;
    let model = SequenceClassifier::new(encoder, labels.len(), spec.pooling, spec.head_dropout, spec.train.seed).load_head(&out.join(HEAD_FILE))?;
    Ok(LoadedRun { spec, labels, model, model_dir: dir })
}

impl LoadedRun {
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_model_dir(&self.model_dir)?.with_max_len(self.spec.max_len)
    }

    /// Class probabilities for texts (or text pairs).
    pub fn predict(&self, texts: &[(String, Option<String>)], device: &Device) -> Result<Vec<Vec<f32>>> {
        Ok(self.logits(texts, device)?.iter().map(|row| softmax(row)).collect())
    }

    /// The head's outputs (before the softmax) for texts (or text pairs).
    pub fn logits(&self, texts: &[(String, Option<String>)], device: &Device) -> Result<Vec<Vec<f32>>> {
        let tokenizer = self.tokenizer()?;
        let model = self.model.valid();
        let mut out = vec![];
        for chunk in texts.chunks(self.spec.train.batch_size.max(1)) {
            let encoded = chunk.iter().map(|(t, p)| tokenizer.encode(t, p.as_deref())).collect::<Result<Vec<_>>>()?;
            let refs: Vec<_> = encoded.iter().collect();
            let batch = data::Batch::pad(&refs, vec![0; refs.len()], tokenizer.pad_id());
            let logits = model.logits(&batch.to_input(device), false);
            let [n, c] = logits.dims();
            let values = logits.into_data().try_into_vec_as::<f32>().expect("float tensor");
            out.extend((0..n).map(|i| values[i * c..(i + 1) * c].to_vec()));
        }
        Ok(out)
    }

    /// Writes the adapter (RepLoRA materialized) and head in PEFT's layout: `SEQ_CLS` with the
    /// head as `modules_to_save` where transformers' task head computes what this run does
    /// (CLS pooling through the pooler), else the bare encoder's adapter plus `head.safetensors`
    /// (see [`crate::models::hf_layout`]).
    pub fn export_peft(&self, dir: &Path) -> Result<HfLayout> {
        if self.model.encoder.is_full_finetune() {
            return Err(Error::State("a full fine-tuning run has no adapter to export; use `replora merge`".into()));
        }
        let base = self.model_dir.display().to_string();
        let layout = self.model.hf_layout();
        match layout {
            HfLayout::SequenceClassification => {
                let info = peft::PeftInfo {
                    base_model_name_or_path: base,
                    task_type: Some("SEQ_CLS".into()),
                    modules_to_save: self.model.head_tensors(),
                    ..Default::default()
                };
                peft::export(&self.model.encoder.adapters, &info, dir)?;
                crate::files::write_json(&dir.join(LABELS_FILE), &self.labels)?;
            }
            HfLayout::SentenceTransformers => hf_layout::write_peft_feature_extraction(
                dir,
                &self.model.encoder,
                &self.model.head_tensors(),
                &self.labels,
                &base,
                self.spec.pooling,
                self.spec.max_len,
            )?,
        }
        Ok(layout)
    }
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
        (HfLayout::SequenceClassification, "merge") => "layout: BertForSequenceClassification (CLS pooler + classifier): AutoModelForSequenceClassification.from_pretrained(dir)",
        (HfLayout::SequenceClassification, _) => "layout: PEFT SEQ_CLS with the head in modules_to_save: PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=N), dir)",
        (HfLayout::SentenceTransformers, "merge") => "layout: sentence-transformers (Transformer, the run's pooling, the head as a Dense module): SentenceTransformer(dir).encode(texts) gives the logits; not a BertForSequenceClassification, whose [CLS] pooler head would predict differently (train with --pooling cls for that)",
        (HfLayout::SentenceTransformers, _) => "layout: PEFT FEATURE_EXTRACTION adapter on the bare encoder + head.safetensors (the run's pooling is not transformers' [CLS] pooler head; README.md in the directory has the Python lines; train with --pooling cls for a SEQ_CLS adapter)",
    }
}
