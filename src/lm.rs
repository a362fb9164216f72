//! Decoder fine-tuning end to end: multiple-choice tasks as causal language modelling (the loss
//! on answer tokens only), per-task evaluation by answer log-likelihood and by exact match of
//! the generated answer, and the run directory that holds the result.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::adapters::{AdapterConfig, Deltas, PeftModel, count::ppt};
use crate::classify::Tuning;
use crate::data::bigbench::{ChoiceExample, read_choices};
use crate::error::{Error, Result};
use crate::weights::gguf::Gguf;
use crate::formats::{native, peft};
use crate::generate::{Sampling, generate};
use crate::models::causal_lm::{CausalLm, LmBatch, LmSequence};
use crate::models::llama::{Llama, find_gguf};
use crate::rundir::{self, Start};
use crate::training::{self, EvalMetrics, TrainConfig, TrainReport};

const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// Where a full fine-tuning run keeps its weights and tokenizer.
const FULL_MODEL_DIR: &str = "model";

/// A decoder with its tokenizer.
pub struct Decoder {
    pub model: Llama,
    pub tokenizer: tokenizers::Tokenizer,
    pub chat_template: Option<String>,
    /// The file or directory it was read from.
    pub source: PathBuf,
}

impl Decoder {
    /// Opens an asset name (`smollm2`), a `.gguf` file, a directory holding one, or a Hugging
    /// Face directory (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub fn open(model: &str, device: &Device) -> Result<Self> {
        let path = if Path::new(model).exists() { PathBuf::from(model) } else { crate::classify::model_dir(model)? };
        match find_gguf(&path)? {
            Some(file) => {
                let gguf = Gguf::open(&file)?;
                let model = Llama::from_gguf(&gguf, &file, device)?;
                Ok(Self { model, tokenizer: gguf.tokenizer()?, chat_template: gguf.chat_template().map(String::from), source: file })
            }
            None => {
                let file = path.join("tokenizer.json");
                let tokenizer = crate::data::tokenize::read_hf_tokenizer(&file)?;
                let config = path.join(TOKENIZER_CONFIG);
                let chat_template = match config.exists() {
                    true => crate::files::read_json::<serde_json::Value>(&config)?["chat_template"].as_str().map(String::from),
                    false => None,
                };
                Ok(Self { model: Llama::load(&path, device)?, tokenizer, chat_template, source: path })
            }
        }
    }

    /// Writes `tokenizer.json` and, if there is a chat template, `tokenizer_config.json` with it
    /// (where Hugging Face keeps it), so that [`Decoder::open`] on `dir` finds both.
    pub fn save_tokenizer(&self, dir: &Path) -> Result<()> {
        let file = dir.join("tokenizer.json");
        self.tokenizer.save(&file, false).map_err(|e| Error::format(&file, e))?;
        match &self.chat_template {
            Some(template) => crate::files::write_json(&dir.join(TOKENIZER_CONFIG), &serde_json::json!({ "chat_template": template })),
            None => Ok(()),
        }
    }

    /// Token ids of `text`, without special tokens added around it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| Error::format(&self.source, format!("cannot tokenize {text:?}: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| Error::format(&self.source, format!("cannot decode token ids: {e}")))
    }

    /// The end-of-sequence id: the config's, else the tokenizer's `<|endoftext|>` / `</s>`.
    pub fn eos_id(&self) -> Result<u32> {
        let from_vocab = || ["<|im_end|>", "<|endoftext|>", "</s>"].iter().find_map(|t| self.tokenizer.token_to_id(t));
        self.model.config.eos_ids().first().copied().or_else(from_vocab).ok_or_else(|| Error::Config("the model declares no end-of-sequence token".into()))
    }

    /// Wraps a user message in the model's chat format. Only ChatML templates (`<|im_start|>`,
    /// SmolLM2's) are understood; others are an error rather than a silent plain prompt.
    pub fn chat_prompt(&self, message: &str) -> Result<String> {
        match self.chat_template.as_deref() {
            Some(t) if t.contains("<|im_start|>") => Ok(format!("<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n")),
            Some(_) => Err(Error::Config("the model's chat template is not ChatML; use a plain prompt".into())),
            None => Err(Error::Config("the model has no chat template; use a plain prompt".into())),
        }
    }
}

/// The prompt of a multiple-choice question; the answer follows it as ` {option}`.
pub fn prompt(example: &ChoiceExample) -> String {
    format!("Question: {}\nChoices: {}\nAnswer:", example.question, example.options.join("; "))
}

/// Everything that defines a decoder run; stored as `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmSpec {
    /// `smollm2`, a `.gguf` file or a model directory.
    pub model: String,
    /// Tasks trained on (their union) and evaluated: `bigbench:<task>` or a task.json path.
    pub tasks: Vec<String>,
    /// Tasks only evaluated (their examples all go to the test split).
    pub eval_tasks: Vec<String>,
    /// Per task: examples in the train, validation and test splits (fewer if the task is small).
    pub sizes: [usize; 3],
    /// Sequences longer than this lose the start of their question.
    pub max_len: usize,
    /// Keep only the first N decoder layers (quick runs); none: all.
    pub keep_layers: Option<usize>,
    /// Also generate each test answer greedily and report exact match.
    pub exact_match: bool,
    pub tuning: Tuning,
    pub adapter: AdapterConfig,
    pub train: TrainConfig,
}

impl Default for LmSpec {
    fn default() -> Self {
        Self {
            model: "smollm2".into(),
            tasks: vec!["bigbench:social_iqa".into(), "bigbench:strategyqa".into()],
            eval_tasks: vec!["bigbench:physical_intuition".into()],
            sizes: [256, 32, 100],
            max_len: 128,
            keep_layers: None,
            exact_match: true,
            tuning: Tuning::Adapter,
            adapter: AdapterConfig { target_modules: crate::adapters::TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]), ..Default::default() },
            train: default_train(),
        }
    }
}

/// Trainer defaults for decoders: one pass, small batches, a LoRA-sized learning rate.
pub fn default_train() -> TrainConfig {
    TrainConfig { epochs: 1, batch_size: 8, lr: 1e-3, warmup_ratio: 0.05, log_every: 5, ..TrainConfig::default() }
}

impl LmSpec {
    pub fn method_name(&self) -> String {
        match self.tuning {
            Tuning::Full => "full".into(),
            Tuning::Adapter => self.adapter.method.to_string(),
        }
    }
}

/// Train, validation and test questions of a run.
pub struct ChoiceSplits {
    pub train: Vec<ChoiceExample>,
    pub validation: Vec<ChoiceExample>,
    pub test: Vec<ChoiceExample>,
}

fn task_name(spec: &str) -> String {
    spec.strip_prefix("bigbench:").map(String::from).unwrap_or_else(|| {
        let path = Path::new(spec);
        let stem = if path.file_name().is_some_and(|f| f == "task.json") { path.parent().and_then(|p| p.file_name()) } else { path.file_stem() };
        stem.map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| spec.to_string())
    })
}

const SPLIT_SEED: u64 = 0x5e_ed5;

/// Reads every task and splits each one with a seeded shuffle: test first, then validation,
/// then training, so the test questions do not change with the training budget.
pub fn load_splits(spec: &LmSpec) -> Result<ChoiceSplits> {
    let mut splits = ChoiceSplits { train: vec![], validation: vec![], test: vec![] };
    let [n_train, n_val, n_test] = spec.sizes;
    for (task, eval_only) in spec.tasks.iter().map(|t| (t, false)).chain(spec.eval_tasks.iter().map(|t| (t, true))) {
        let mut examples = read_choices(&crate::data::resolve(task)?, &task_name(task))?;
        // A fixed split seed: runs with different training seeds see the same test questions.
        examples.shuffle(&mut StdRng::seed_from_u64(SPLIT_SEED));
        let test_n = n_test.min(examples.len());
        let rest = examples.split_off(test_n);
        splits.test.extend(examples);
        if !eval_only {
            let val_n = n_val.min(rest.len());
            splits.validation.extend(rest[..val_n].iter().cloned());
            splits.train.extend(rest[val_n..].iter().take(n_train).cloned());
        }
    }
    if splits.train.is_empty() && !spec.tasks.is_empty() {
        return Err(Error::Config("no training questions: the tasks are smaller than their test + validation sizes".into()));
    }
    // Metrics over no questions would read as 0 (or pick the best epoch by nothing).
    let names = spec.tasks.iter().chain(&spec.eval_tasks).cloned().collect::<Vec<_>>().join(", ");
    if splits.validation.is_empty() && !spec.tasks.is_empty() {
        return Err(Error::Config(format!("the validation split is empty: the tasks ({names}) have no questions left after the test split; lower --test-per-task")));
    }
    if splits.test.is_empty() {
        return Err(Error::Config(format!("the test split is empty: no tasks with questions ({names})")));
    }
    Ok(splits)
}

/// Prompt + answer tokens, the prompt cut from the left to fit `max_len`.
fn sequence(decoder: &Decoder, example: &ChoiceExample, option: usize, eos: Option<u32>, max_len: usize) -> Result<LmSequence> {
    let mut answer = decoder.encode(&format!(" {}", example.options[option]))?;
    answer.extend(eos);
    let mut tokens = decoder.encode(&prompt(example))?;
    let room = max_len.saturating_sub(answer.len()).max(1);
    if tokens.len() > room {
        tokens.drain(..tokens.len() - room);
    }
    let answer_start = tokens.len();
    tokens.extend(answer);
    Ok(LmSequence { tokens, answer_start })
}

/// Training sequences: each question with its correct answer and the end-of-sequence token.
pub fn training_sequences(decoder: &Decoder, examples: &[ChoiceExample], max_len: usize) -> Result<Vec<LmSequence>> {
    let eos = decoder.eos_id()?;
    examples.iter().map(|e| sequence(decoder, e, e.answer, Some(eos), max_len)).collect()
}

/// Shuffled batches of similar-length sequences (less padding): a seeded shuffle, sorted by
/// length within windows of 16 batches, then the batches themselves shuffled.
pub fn length_grouped_batches(sequences: &[LmSequence], batch_size: usize, seed: u64) -> Vec<LmBatch> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.shuffle(&mut rng);
    for window in order.chunks_mut(batch_size * 16) {
        window.sort_by_key(|&i| sequences[i].tokens.len());
    }
    let mut batches: Vec<LmBatch> = order.chunks(batch_size).map(|c| LmBatch::pad(&c.iter().map(|&i| &sequences[i]).collect::<Vec<_>>(), 0)).collect();
    batches.shuffle(&mut rng);
    batches
}

/// Per-task results of a multiple-choice evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskScore {
    pub task: String,
    pub examples: usize,
    /// The option with the highest summed log-likelihood is the prediction.
    pub accuracy: f64,
    /// Mean negative log-likelihood per token of the correct answers.
    pub answer_loss: f64,
    /// Greedy generation equals the correct option (case and surrounding punctuation ignored).
    pub exact_match: Option<f64>,
}

fn normalize(s: &str) -> String {
    s.trim().trim_end_matches(['.', '!', '?']).trim().to_lowercase()
}

/// Every (question, option) sequence to score.
pub struct ChoiceItems(Vec<(usize, usize, LmSequence)>);

pub fn choice_items(decoder: &Decoder, examples: &[ChoiceExample], max_len: usize) -> Result<ChoiceItems> {
    let mut items = vec![];
    for (i, e) in examples.iter().enumerate() {
        for o in 0..e.options.len() {
            items.push((i, o, sequence(decoder, e, o, None, max_len)?));
        }
    }
    Ok(ChoiceItems(items))
}

/// Scores every option of every question and reports per task (with exact match where
/// `exact_match` is on).
pub fn evaluate(model: &CausalLm, decoder: &Decoder, examples: &[ChoiceExample], batch_size: usize, max_len: usize, exact_match: bool, device: &Device) -> Result<Vec<TaskScore>> {
    let items = choice_items(decoder, examples, max_len)?;
    let generated = if exact_match { Some(exact_matches(model, decoder, examples, max_len, device)?) } else { None };
    Ok(score(model, examples, &items, batch_size, generated.as_deref(), device))
}

/// Log-likelihood scoring in batches (sorted by length to limit padding).
pub fn score(model: &CausalLm, examples: &[ChoiceExample], items: &ChoiceItems, batch_size: usize, generated: Option<&[bool]>, device: &Device) -> Vec<TaskScore> {
    let items = &items.0;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&k| items[k].2.tokens.len());
    let mut scores = vec![0.0; items.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let seqs: Vec<&LmSequence> = chunk.iter().map(|&k| &items[k].2).collect();
        let batch = LmBatch::pad(&seqs, 0);
        for (&k, s) in chunk.iter().zip(model.sequence_scores(&batch, device)) {
            scores[k] = s;
        }
    }
    let mut best: Vec<(f64, usize)> = vec![(f64::NEG_INFINITY, 0); examples.len()];
    let mut correct_ll = vec![(0.0, 0usize); examples.len()];
    for ((i, o, seq), s) in items.iter().zip(&scores) {
        if *s > best[*i].0 {
            best[*i] = (*s, *o);
        }
        if *o == examples[*i].answer {
            correct_ll[*i] = (*s, seq.tokens.len() - seq.answer_start);
        }
    }
    let mut tasks: Vec<String> = examples.iter().map(|e| e.task.clone()).collect();
    tasks.sort();
    tasks.dedup();
    tasks
        .into_iter()
        .map(|task| {
            let idx: Vec<usize> = (0..examples.len()).filter(|&i| examples[i].task == task).collect();
            let n = idx.len() as f64;
            let (ll, tokens) = idx.iter().fold((0.0, 0), |(l, t), &i| (l + correct_ll[i].0, t + correct_ll[i].1));
            TaskScore {
                examples: idx.len(),
                accuracy: idx.iter().filter(|&&i| best[i].1 == examples[i].answer).count() as f64 / n,
                answer_loss: -ll / tokens.max(1) as f64,
                exact_match: generated.map(|g| idx.iter().filter(|&&i| g[i]).count() as f64 / n),
                task,
            }
        })
        .collect()
}

/// Whether the greedy continuation of each prompt is the correct option.
fn exact_matches(model: &CausalLm, decoder: &Decoder, examples: &[ChoiceExample], max_len: usize, device: &Device) -> Result<Vec<bool>> {
    let deltas = model.decoder.deltas();
    let newline = decoder.encode("\n")?;
    let mut stop = vec![decoder.eos_id()?];
    stop.extend(newline.first());
    examples
        .iter()
        .map(|e| {
            let seq = sequence(decoder, e, e.answer, None, max_len)?;
            let longest = e.options.iter().map(|o| decoder.encode(&format!(" {o}")).map(|t| t.len())).collect::<Result<Vec<_>>>()?;
            let sampling = Sampling { max_new_tokens: longest.into_iter().max().unwrap_or(1) + 2, stop: stop.clone(), ..Sampling::default() };
            let out = generate(&model.decoder.model, &deltas, &seq.tokens[..seq.answer_start], &sampling, device, &mut |_| {});
            Ok(normalize(&decoder.decode(&out)?) == normalize(&e.options[e.answer]))
        })
        .collect()
}

/// Example-weighted loss and accuracy over tasks, as the trainer's validation metrics (macro-F1
/// has no meaning here and repeats the accuracy).
fn overall(scores: &[TaskScore]) -> EvalMetrics {
    let n: usize = scores.iter().map(|s| s.examples).sum();
    let mean = |f: &dyn Fn(&TaskScore) -> f64| scores.iter().map(|s| f(s) * s.examples as f64).sum::<f64>() / n.max(1) as f64;
    let accuracy = mean(&|s| s.accuracy);
    EvalMetrics { loss: mean(&|s| s.answer_loss), accuracy, macro_f1: accuracy, examples: n }
}

/// The final report of a decoder run (`summary.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LmSummary {
    pub method: String,
    pub model: String,
    pub seed: u64,
    /// Questions in the train, validation and test splits (all tasks).
    pub sizes: [usize; 3],
    pub test: Vec<TaskScore>,
    /// None for a zero-shot evaluation.
    pub training: Option<TrainReport>,
    pub trainable_params: usize,
    pub total_params: usize,
    pub trainable_percent: f64,
    pub ppt: f64,
    /// Training tokens (prompt + answer, padding excluded) per second.
    pub train_tokens_per_s: f64,
    pub peak_rss_mib: Option<f64>,
}

const RUN_FILE: &str = "run.json";
const ADAPTER_DIR: &str = "adapter";
const SUMMARY_FILE: &str = "summary.json";

fn open_model(spec: &LmSpec, device: &Device) -> Result<Decoder> {
    let mut decoder = Decoder::open(&spec.model, device)?;
    if let Some(n) = spec.keep_layers {
        decoder.model = decoder.model.truncate_layers(n);
    }
    let c = &decoder.model.config;
    crate::validate::fits_model(spec.max_len, c.max_position_embeddings, spec.adapter.layers_to_transform.as_deref(), c.num_hidden_layers)?;
    Ok(decoder)
}

/// Zero-shot: the base model on the spec's test questions.
pub fn evaluate_base(spec: &LmSpec) -> Result<LmSummary> {
    crate::training::reset_peak_rss();
    spec.validate()?;
    let device = Device::flex();
    let decoder = open_model(spec, &device)?;
    let splits = load_splits(spec)?;
    let total = decoder.model.num_params();
    let model = CausalLm { decoder: PeftModel::from_parts(decoder.model.clone(), crate::adapters::AdapterSet::empty()) };
    let test = evaluate(&model, &decoder, &splits.test, spec.train.batch_size, spec.max_len, spec.exact_match, &device)?;
    Ok(LmSummary {
        method: "base".into(),
        model: spec.model.clone(),
        seed: spec.train.seed,
        sizes: [splits.train.len(), splits.validation.len(), splits.test.len()],
        test,
        training: None,
        trainable_params: 0,
        total_params: total,
        trainable_percent: 0.0,
        ppt: 0.0,
        train_tokens_per_s: 0.0,
        peak_rss_mib: training::trainer::peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
    })
}

/// Fine-tunes the decoder on the union of the tasks, writes the run into `out` and evaluates
/// it per task on the test questions. Everything is checked before the first file is written.
pub fn train_run(spec: &LmSpec, out: &Path, start: Start) -> Result<LmSummary> {
    crate::training::reset_peak_rss();
    let spec = rundir::begin(out, spec, &LmSpec::default(), start, rundir::Kind::Decoder)?;
    spec.validate()?;
    let device = Device::flex().autodiff();
    let decoder = open_model(&spec, &device)?;
    let splits = load_splits(&spec)?;
    let base = decoder.model.clone();
    let peft = match spec.tuning {
        Tuning::Adapter => PeftModel::new(base, &spec.adapter)?,
        Tuning::Full => PeftModel::full_finetune(base),
    };
    rundir::create(out, start)?;
    crate::files::write_json(&out.join(RUN_FILE), &spec)?;
    let params = peft.param_report();
    eprintln!("{}: {params}", spec.method_name());
    let model = CausalLm { decoder: peft };

    let sequences = training_sequences(&decoder, &splits.train, spec.max_len)?;
    let train_tokens: usize = sequences.iter().map(|s| s.tokens.len()).sum();
    let batch_size = spec.train.batch_size;
    let train_batches = |epoch: usize| length_grouped_batches(&sequences, batch_size, spec.train.seed.wrapping_add(epoch as u64));
    let inner = device.clone().inner();
    let validation = choice_items(&decoder, &splits.validation, spec.max_len)?;
    let validate = |m: &CausalLm| overall(&score(&m.valid(), &splits.validation, &validation, batch_size, None, &inner));
    let started = Instant::now();
    let (model, report) = training::train(model, &train_batches, &validate, &spec.train, &device, out, start == Start::Resume)?;
    let train_time = started.elapsed().as_secs_f64();
    if model.decoder.is_full_finetune() {
        model.decoder.model.save(&out.join(FULL_MODEL_DIR))?;
        decoder.save_tokenizer(&out.join(FULL_MODEL_DIR))?;
    } else {
        native::save(&model.decoder.adapters, &out.join(ADAPTER_DIR))?;
    }
    let model = model.valid();
    let test = evaluate(&model, &decoder, &splits.test, batch_size, spec.max_len, spec.exact_match, &inner)?;
    let accuracy = overall(&test).accuracy;
    let summary = LmSummary {
        method: spec.method_name(),
        model: spec.model.clone(),
        seed: spec.train.seed,
        sizes: [splits.train.len(), splits.validation.len(), splits.test.len()],
        test,
        trainable_params: params.trainable,
        total_params: params.total,
        trainable_percent: 100.0 * params.trainable as f64 / params.total as f64,
        ppt: ppt(100.0 * accuracy, params.trainable),
        train_tokens_per_s: (train_tokens * report.epochs_run) as f64 / train_time.max(1e-9),
        training: Some(report),
        peak_rss_mib: training::trainer::peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
    };
    crate::files::write_json(&out.join(SUMMARY_FILE), &summary)?;
    Ok(summary)
}

/// A trained decoder run: its spec, the tokenizer and the adapted model.
pub struct LoadedLmRun {
    pub spec: LmSpec,
    pub decoder: Decoder,
    pub model: CausalLm,
}

/// Rebuilds the adapted decoder of run directory `out`.
pub fn load_run(out: &Path, device: &Device) -> Result<LoadedLmRun> {
    rundir::check_finished(out, rundir::Kind::Decoder)?;
    let spec: LmSpec = crate::files::read_json(&out.join(RUN_FILE))?;
    let full = out.join(FULL_MODEL_DIR);
    let (decoder, peft) = match spec.tuning {
        // A full run's directory holds the tuned weights and the tokenizer: no need for the base.
        Tuning::Full if full.join("tokenizer.json").exists() => {
            let decoder = Decoder::open(&full.display().to_string(), device)?;
            let peft = PeftModel::full_finetune(decoder.model.clone());
            (decoder, peft)
        }
        Tuning::Full => (open_model(&spec, device)?, PeftModel::full_finetune(Llama::load(&full, device)?)),
        Tuning::Adapter => {
            let decoder = open_model(&spec, device)?;
            let peft = native::load(decoder.model.clone(), &out.join(ADAPTER_DIR))?;
            (decoder, peft)
        }
    };
    Ok(LoadedLmRun { spec, decoder, model: CausalLm { decoder: peft } })
}

impl LoadedLmRun {
    /// Writes the adapter in PEFT's layout (`task_type` CAUSAL_LM).
    pub fn export_peft(&self, dir: &Path) -> Result<()> {
        if self.model.decoder.is_full_finetune() {
            return Err(Error::State("a full fine-tuning run has no adapter to export".into()));
        }
        let info = peft::PeftInfo {
            base_model_name_or_path: self.decoder.source.display().to_string(),
            task_type: Some("CAUSAL_LM".into()),
            ..Default::default()
        };
        peft::export(&self.model.decoder.adapters, &info, dir)
    }

    pub fn deltas(&self) -> Deltas {
        self.model.decoder.deltas()
    }

    /// Writes the decoder with the adapter folded in (`config.json`, `model.safetensors`), its
    /// `tokenizer.json` and chat template: a plain Hugging Face LLaMA directory.
    pub fn save_merged(self, dir: &Path) -> Result<()> {
        let decoder = if self.model.decoder.is_full_finetune() { self.model.decoder } else { self.model.decoder.merge()? };
        decoder.model.save(dir)?;
        self.decoder.save_tokenizer(dir)
    }
}

/// Whether `model` (an asset name, file or directory) is a decoder: a GGUF file, the `smollm2`
/// asset, or a Hugging Face directory whose config says `llama`.
pub fn is_decoder(model: &str) -> bool {
    let path = Path::new(model);
    if !path.exists() {
        return model == "smollm2";
    }
    if path.join("config.json").is_file() {
        let config = crate::files::read_json::<serde_json::Value>(&path.join("config.json"));
        return config.is_ok_and(|c| c.get("model_type").and_then(|t| t.as_str()) == Some("llama"));
    }
    matches!(find_gguf(path), Ok(Some(_)))
}

/// Whether `dir` holds a decoder run (its `run.json` names tasks) rather than a classifier run.
pub fn is_lm_run(dir: &Path) -> bool {
    rundir::kind_of(dir) == Some(rundir::Kind::Decoder)
}

/// Re-evaluates a trained run on its test questions.
pub fn evaluate_run(out: &Path) -> Result<LmSummary> {
    let device = Device::flex();
    let run = load_run(out, &device)?;
    let splits = load_splits(&run.spec)?;
    let test = evaluate(&run.model, &run.decoder, &splits.test, run.spec.train.batch_size, run.spec.max_len, run.spec.exact_match, &device)?;
    let mut summary: LmSummary = crate::files::read_json(&out.join(SUMMARY_FILE))?;
    summary.test = test;
    Ok(summary)
}

/// `replora generate`: streams the continuation of `prompt` to stdout.
pub fn generate_cli(model: &str, run: Option<&Path>, prompt: &str, chat: bool, mut sampling: Sampling) -> Result<()> {
    use std::io::Write;
    sampling.validate()?;
    let device = Device::flex();
    let (decoder, deltas) = match run {
        Some(dir) => {
            let run = load_run(dir, &device)?;
            let deltas = run.deltas();
            (run.decoder, deltas)
        }
        None => (Decoder::open(model, &device)?, Deltas::none()),
    };
    let text = if chat { decoder.chat_prompt(prompt)? } else { prompt.to_string() };
    let ids = decoder.encode(&text)?;
    if ids.is_empty() {
        return Err(Error::Config("the prompt is empty".into()));
    }
    let window = decoder.model.config.max_position_embeddings;
    if ids.len() >= window {
        return Err(Error::Config(format!(
            "the prompt has {} tokens but the model's context window is {window} (max_position_embeddings), with room needed for new tokens; shorten the prompt",
            ids.len()
        )));
    }
    if ids.len() + sampling.max_new_tokens > window {
        eprintln!("warning: the context window ({window} tokens) ends generation after {} new tokens", window - ids.len());
    }
    sampling.stop = vec![decoder.eos_id()?];
    let started = Instant::now();
    let mut produced = vec![];
    let mut shown = String::new();
    let mut stdout = std::io::stdout();
    let out = generate(&decoder.model, &deltas, &ids, &sampling, &device, &mut |id| {
        // Decode the whole continuation each time: a multi-byte character may span tokens.
        produced.push(id);
        if let Ok(text) = decoder.decode(&produced) {
            if let Some(new) = text.strip_prefix(shown.as_str()) {
                let _ = write!(stdout, "{new}");
                let _ = stdout.flush();
            }
            shown = text;
        }
    });
    println!();
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{} prompt + {} new tokens in {secs:.2} s ({:.1} tokens/s)", ids.len(), out.len(), out.len() as f64 / secs.max(1e-9));
    Ok(())
}

fn percent(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

/// One line per run: accuracy (and exact match) per task.
pub fn table(runs: &[LmSummary]) -> String {
    let tasks: Vec<String> = runs.first().map(|r| r.test.iter().map(|t| t.task.clone()).collect()).unwrap_or_default();
    let mut s = format!("| method | seed | {} | average | trainable % | tokens/s | peak RSS (MiB) |\n", tasks.join(" | "));
    s += &format!("|{}\n", "---|".repeat(tasks.len() + 6));
    for r in runs {
        let cells: Vec<String> = r
            .test
            .iter()
            .map(|t| match t.exact_match {
                Some(em) => format!("{} (EM {})", percent(t.accuracy), percent(em)),
                None => percent(t.accuracy),
            })
            .collect();
        s += &format!(
            "| {} | {} | {} | {} | {:.3} | {:.0} | {} |\n",
            r.method,
            r.seed,
            cells.join(" | "),
            percent(overall(&r.test).accuracy),
            r.trainable_percent,
            r.train_tokens_per_s,
            r.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0}"))
        );
    }
    s
}

/// Mean +- sample standard deviation over seeds, per method and task (accuracy in percent).
pub fn seed_table(runs: &[LmSummary]) -> String {
    let tasks: Vec<String> = runs.first().map(|r| r.test.iter().map(|t| t.task.clone()).collect()).unwrap_or_default();
    let mut methods: Vec<&str> = vec![];
    for r in runs {
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    let stat = |values: &[f64]| {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = if values.len() > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
        if values.len() > 1 { format!("{:.1} ± {:.1}", 100.0 * mean, 100.0 * sd) } else { format!("{:.1}", 100.0 * mean) }
    };
    let mut s = format!("| method | seeds | {} | average | exact match | trainable % | train tokens/s | peak RSS (MiB) |\n", tasks.join(" | "));
    s += &format!("|{}\n", "---|".repeat(tasks.len() + 7));
    for m in methods {
        let rs: Vec<&LmSummary> = runs.iter().filter(|r| r.method == m).collect();
        let per_task: Vec<String> = tasks
            .iter()
            .map(|t| stat(&rs.iter().filter_map(|r| r.test.iter().find(|x| &x.task == t).map(|x| x.accuracy)).collect::<Vec<_>>()))
            .collect();
        let avg = stat(&rs.iter().map(|r| overall(&r.test).accuracy).collect::<Vec<_>>());
        let em: Vec<f64> = rs
            .iter()
            .filter_map(|r| {
                let n: usize = r.test.iter().map(|t| t.examples).sum();
                r.test.iter().map(|t| t.exact_match.map(|e| e * t.examples as f64)).sum::<Option<f64>>().map(|v| v / n.max(1) as f64)
            })
            .collect();
        let mean = |f: &dyn Fn(&LmSummary) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / rs.len() as f64;
        let rss = rs.iter().filter_map(|r| r.peak_rss_mib).fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
        s += &format!(
            "| {m} | {} | {} | {avg} | {} | {:.3} | {} | {} |\n",
            rs.len(),
            per_task.join(" | "),
            if em.is_empty() { "-".into() } else { stat(&em) },
            mean(&|r| r.trainable_percent),
            if m == "base" { "-".into() } else { format!("{:.0}", mean(&|r| r.train_tokens_per_s)) },
            rss.map_or("-".into(), |v| format!("{v:.0}")),
        );
    }
    s
}
