//! Multiple-choice questions answered by a decoder: trained as causal language modelling (the
//! loss on answer tokens only), scored per sub-task by answer log-likelihood and by exact
//! match of the generated answer.

use std::path::Path;

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::choice_model::{
    CausalLm, ChoiceItems, LmBatch, LmSequence, choice_items, evaluate, length_grouped_batches, score, training_sequences,
};
use super::{SubtaskScore, Task, TaskKind, TestScores, Tuning};
use crate::adapters::base_weight::Quantize;
use crate::adapters::{AdapterConfig, AdapterSet, PeftModel};
use crate::data::bigbench::{ChoiceExample, read_choices};
use crate::error::{Error, Result};
use crate::formats::peft;
use crate::models::Architecture;
use crate::models::decoder::Decoder;
use crate::models::llama::Llama;
use crate::training::{EvalMetrics, TrainConfig};

/// The prompt of a multiple-choice question; the answer follows it as ` {option}`.
pub fn prompt(example: &ChoiceExample) -> String {
    format!("Question: {}\nChoices: {}\nAnswer:", example.question, example.options.join("; "))
}

/// Everything that defines a decoder run; stored as `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultipleChoiceSpec {
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
    /// How the decoder's frozen weights are held (`--quantize`).
    #[serde(default)]
    pub quantize: Quantize,
    /// Also generate each test answer greedily and report exact match.
    pub exact_match: bool,
    /// Share of each task's training questions used (sample-efficiency runs).
    #[serde(default = "one")]
    pub train_fraction: f64,
    /// How the model is tuned (`tuning`, and `adapter` for an adapter run).
    #[serde(flatten)]
    pub tuning: Tuning,
    pub train: TrainConfig,
}

impl Default for MultipleChoiceSpec {
    fn default() -> Self {
        Self {
            model: "smollm2".into(),
            tasks: vec!["bigbench:social_iqa".into(), "bigbench:strategyqa".into()],
            eval_tasks: vec!["bigbench:physical_intuition".into()],
            sizes: [256, 32, 100],
            max_len: 128,
            keep_layers: None,
            quantize: Quantize::Stored,
            exact_match: true,
            train_fraction: 1.0,
            tuning: Tuning::Adapter(AdapterConfig {
                target_modules: crate::adapters::TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]),
                ..Default::default()
            }),
            train: default_train(),
        }
    }
}

fn one() -> f64 {
    1.0
}

/// Trainer defaults for decoders: one pass, small batches, a LoRA-sized learning rate.
pub fn default_train() -> TrainConfig {
    TrainConfig { epochs: 1, batch_size: 8, lr: 1e-3, warmup_ratio: 0.05, log_every: 5, ..TrainConfig::default() }
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
        let stem =
            if path.file_name().is_some_and(|f| f == "task.json") { path.parent().and_then(|p| p.file_name()) } else { path.file_stem() };
        stem.map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| spec.to_string())
    })
}

const SPLIT_SEED: u64 = 0x5e_ed5;

/// Reads every task and splits each one with a seeded shuffle: test first, then validation,
/// then training, so the test questions do not change with the training budget.
pub fn load_splits(spec: &MultipleChoiceSpec) -> Result<ChoiceSplits> {
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
            let available = rest.len().saturating_sub(val_n).min(n_train);
            let used = ((available as f64 * spec.train_fraction).round() as usize).max(1).min(available);
            splits.train.extend(rest[val_n..].iter().take(used).cloned());
        }
    }
    if splits.train.is_empty() && !spec.tasks.is_empty() {
        return Err(Error::Config("no training questions: the tasks are smaller than their test + validation sizes".into()));
    }
    // Metrics over no questions would read as 0 (or pick the best epoch by nothing).
    let names = spec.tasks.iter().chain(&spec.eval_tasks).cloned().collect::<Vec<_>>().join(", ");
    if splits.validation.is_empty() && !spec.tasks.is_empty() {
        return Err(Error::Config(format!(
            "the validation split is empty: the tasks ({names}) have no questions left after the test split; lower --test-per-task"
        )));
    }
    if splits.test.is_empty() {
        return Err(Error::Config(format!("the test split is empty: no tasks with questions ({names})")));
    }
    Ok(splits)
}

task_spec!(
    MultipleChoiceSpec,
    |spec| spec.tasks.iter().chain(&spec.eval_tasks).map(|t| task_name(t)).collect::<Vec<_>>().join(", "),
    |spec| spec.tasks.iter_mut().chain(spec.eval_tasks.iter_mut()).collect()
);

/// Example-weighted loss, accuracy and exact match over sub-tasks.
fn overall(scores: &[SubtaskScore]) -> EvalMetrics {
    let n: usize = scores.iter().map(|s| s.examples).sum();
    let mean = |f: &dyn Fn(&SubtaskScore) -> f64| scores.iter().map(|s| f(s) * s.examples as f64).sum::<f64>() / n.max(1) as f64;
    let exact_match = scores.iter().all(|s| s.exact_match.is_some()).then(|| mean(&|s| s.exact_match.unwrap_or(0.0)));
    EvalMetrics { loss: mean(&|s| s.answer_loss), accuracy: mean(&|s| s.accuracy), macro_f1: None, exact_match, examples: n }
}

/// The questions of a run, and its training sequences ready to batch.
pub struct ChoiceData {
    pub splits: ChoiceSplits,
    sequences: Vec<LmSequence>,
    validation: ChoiceItems,
}

/// A multiple-choice run's spec with its pre-trained decoder and tokenizer.
pub struct MultipleChoice {
    spec: MultipleChoiceSpec,
    pub decoder: Decoder,
    device: Device,
}

impl MultipleChoice {
    fn prepare(&self, splits: ChoiceSplits) -> Result<ChoiceData> {
        let sequences = training_sequences(&self.decoder, &splits.train, self.spec.max_len)?;
        let validation = choice_items(&self.decoder, &splits.validation, self.spec.max_len)?;
        Ok(ChoiceData { splits, sequences, validation })
    }
}

impl Task for MultipleChoice {
    const KIND: TaskKind = TaskKind::MultipleChoice;
    const FULL_MODEL_DIR: &'static str = crate::layout::MODEL_DIR;
    type Spec = MultipleChoiceSpec;
    type Arch = Llama;
    type Model = CausalLm;
    type Data = ChoiceData;

    fn open(spec: MultipleChoiceSpec, device: &Device) -> Result<Self> {
        let decoder = Decoder::open_keeping(&spec.model, spec.keep_layers, spec.quantize, device)?;
        decoder.model.check_fits(spec.max_len, spec.tuning.layers())?;
        let p = spec.tuning.adapter().map_or(0, |a| a.method.virtual_tokens());
        if p > 0 {
            let positions = decoder.model.max_positions();
            if spec.max_len + p > positions {
                return Err(Error::Config(format!(
                    "a prefix of {p} virtual tokens takes the first {p} of the model's {positions} positions (as in PEFT), leaving {} for --max-len {}; shorten --max-len or --prefix-length",
                    positions.saturating_sub(p),
                    spec.max_len
                )));
            }
        }
        Ok(Self { spec, decoder, device: device.clone() })
    }

    fn spec(&self) -> &MultipleChoiceSpec {
        &self.spec
    }

    fn data(&self) -> Result<ChoiceData> {
        self.prepare(load_splits(&self.spec)?)
    }

    /// `source`: comma-separated tasks (`bigbench:<task>` or task.json files), all as test questions.
    fn test_data(&self, source: &str) -> Result<ChoiceData> {
        let spec = MultipleChoiceSpec { tasks: vec![], eval_tasks: source.split(',').map(String::from).collect(), ..self.spec.clone() };
        self.prepare(load_splits(&spec)?)
    }

    fn sizes(data: &ChoiceData) -> [usize; 3] {
        [data.splits.train.len(), data.splits.validation.len(), data.splits.test.len()]
    }

    fn train_tokens(data: &ChoiceData) -> Option<usize> {
        Some(data.sequences.iter().map(|s| s.tokens.len()).sum())
    }

    fn build(&self, _data: &ChoiceData) -> Result<CausalLm> {
        Ok(CausalLm { decoder: self.spec.tuning.wrap(self.decoder.model.clone())? })
    }

    fn zero_shot(&self) -> Option<CausalLm> {
        Some(CausalLm { decoder: PeftModel::from_parts(self.decoder.model.clone(), AdapterSet::empty()) })
    }

    fn adapted(model: &CausalLm) -> &PeftModel<Llama> {
        &model.decoder
    }

    fn train_batches(&self, data: &ChoiceData, epoch: usize) -> Vec<LmBatch> {
        length_grouped_batches(&data.sequences, self.spec.train.batch_size, self.spec.train.seed.wrapping_add(epoch as u64))
    }

    fn validate(&self, data: &ChoiceData, model: &CausalLm) -> EvalMetrics {
        let inner = self.device.clone().inner();
        overall(&score(&model.valid(), &data.splits.validation, &data.validation, self.spec.train.batch_size, None, &inner))
    }

    fn test(&self, data: &ChoiceData, model: &CausalLm) -> Result<TestScores> {
        let s = &self.spec;
        let inner = self.device.clone().inner();
        let per_task = evaluate(&model.valid(), &self.decoder, &data.splits.test, s.train.batch_size, s.max_len, s.exact_match, &inner)?;
        Ok(TestScores { overall: overall(&per_task), per_task })
    }

    fn save_extra(&self, _data: &ChoiceData, model: &CausalLm, out: &Path) -> Result<()> {
        match model.decoder.is_full_finetune() {
            // A full run's directory holds a complete model: tuned weights and the tokenizer.
            true => self.decoder.save_tokenizer(&out.join(Self::FULL_MODEL_DIR)),
            false => Ok(()),
        }
    }

    fn restore(&self, out: &Path, device: &Device) -> Result<CausalLm> {
        let decoder = self.spec.tuning.restore(self.decoder.model.clone(), out, Self::FULL_MODEL_DIR, |dir| Llama::load(dir, device))?;
        Ok(CausalLm { decoder })
    }

    /// Inputs `{"question": .., "options": [..]}`; answers the chosen option and each option's
    /// log-likelihood.
    fn predict(&self, model: &CausalLm, inputs: &[serde_json::Value]) -> Result<Vec<serde_json::Value>> {
        let mut examples = vec![];
        for (n, value) in inputs.iter().enumerate() {
            let question = value.get("question").and_then(|q| q.as_str());
            let options: Option<Vec<String>> =
                value.get("options").and_then(|o| o.as_array()).map(|o| o.iter().filter_map(|x| x.as_str().map(String::from)).collect());
            match (question, options) {
                (Some(q), Some(o)) if o.len() >= 2 => {
                    examples.push(ChoiceExample { task: "input".into(), question: q.into(), options: o, answer: 0 })
                }
                _ => {
                    return Err(Error::Config(format!(
                        "input {}: a multiple-choice run needs {{\"question\": \"..\", \"options\": [\"..\", \"..\"]}} (two options or more)",
                        n + 1
                    )));
                }
            }
        }
        let items = choice_items(&self.decoder, &examples, self.spec.max_len)?;
        let scores = super::choice_model::option_scores(&model.valid(), &items, self.spec.train.batch_size, &self.device);
        for (n, row) in scores.iter().enumerate() {
            super::check_finite(row, || format!("the option log-likelihoods of input {}", n + 1))?;
        }
        Ok(examples
            .iter()
            .zip(scores)
            .map(|(e, s)| {
                let best = (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap_or(0);
                serde_json::json!({"question": e.question, "answer": e.options[best], "option_log_likelihoods": s})
            })
            .collect())
    }

    /// PEFT's `CAUSAL_LM` layout.
    fn export_peft(&self, model: &CausalLm, dir: &Path) -> Result<String> {
        let info = peft::PeftInfo {
            base_model_name_or_path: self.decoder.source.display().to_string(),
            task_type: Some("CAUSAL_LM".into()),
            prefix_heads: Some(model.decoder.model.config.kv_heads()),
            ..Default::default()
        };
        peft::export(&model.decoder.adapters, &info, dir)?;
        Ok("layout: PEFT CAUSAL_LM: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), dir)".into())
    }

    /// The decoder with the adapter folded in (`config.json`, `model.safetensors`), its
    /// `tokenizer.json` and chat template: a plain Hugging Face LLaMA directory.
    fn merge(&self, model: CausalLm, dir: &Path) -> Result<String> {
        let note = crate::adapters::widening_note(&model.decoder.model);
        let decoder = if model.decoder.is_full_finetune() { model.decoder } else { model.decoder.merge()? };
        decoder.model.save(dir)?;
        self.decoder.save_tokenizer(dir)?;
        let class = decoder.model.config.variant().causal_lm_class();
        Ok(format!("layout: {class}: AutoModelForCausalLM.from_pretrained(dir){note}"))
    }
}
