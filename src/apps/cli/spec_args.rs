//! The flags that define a run ([`RunArgs`]): the task and model, each task's data flags
//! ([`ClassificationArgs`], [`ChoiceArgs`]), and the method and trainer flags every task shares
//! ([`MethodArgs`], [`TrainArgs`]).

use std::path::PathBuf;

use clap::Args;

use crate::adapters::{Activation, AdapterConfig, LoraInit, Method, OutputScale, RepLoraConfig, SeedKind, TargetModules};
use crate::error::{Error, Result};
use crate::models::Architecture;
use crate::models::bert::{Bert, Pooling};
use crate::models::llama::Llama;
use crate::tasks::classification::ClassificationSpec;
use crate::tasks::multiple_choice::MultipleChoiceSpec;
use crate::tasks::{Classification, MultipleChoice, Task, TaskKind, Tuning};
use crate::training::{BestMetric, Decay, TrainConfig};
use crate::validate::Range;

/// A clap value parser for a number in `range`; the flag's `allow_negative_numbers` lets a
/// negative value reach it, so `--lr -1` gets the range message rather than "unexpected argument".
pub(super) fn number(range: Range) -> impl Fn(&str) -> std::result::Result<f64, String> + Clone + Send + Sync + 'static {
    move |s| {
        let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
        if range.holds(v) { Ok(v) } else { Err(range.message(v)) }
    }
}

/// A clap value parser for a count that must be at least 1.
pub(super) fn count(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1, got 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number >= 1")),
    }
}

/// The flags that define a run of any task. Flags of one task only are refused for the
/// other; unset flags take the task's defaults.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The task: `classification` (an encoder with a head) or `multiple-choice` (a decoder
    /// answering questions) [default: from --model: a decoder answers multiple-choice
    /// questions, an encoder classifies; without --model, multiple-choice if a multiple-choice
    /// flag is given]
    #[arg(long, value_enum, help_heading = "Task")]
    pub task: Option<TaskKind>,
    /// Model directory (config.json, model.safetensors, tokenizer.json), .gguf file, or asset
    /// name, fetched on demand [default: minilm; multiple-choice: smollm2]
    #[arg(long, help_heading = "Task")]
    pub model: Option<String>,
    /// Truncate inputs to this many tokens (at most the model's max_position_embeddings;
    /// multiple-choice questions lose their start) [default: 128]
    #[arg(long, value_parser = count, help_heading = "Task")]
    pub max_len: Option<usize>,
    /// Use only this share of the training split (stratified for classification, per task for
    /// multiple-choice): sample-efficiency runs [default: 1]
    #[arg(long, value_parser = number(Range::Fraction), allow_negative_numbers = true, help_heading = "Task")]
    pub train_fraction: Option<f64>,
    #[command(flatten)]
    pub classification: ClassificationArgs,
    #[command(flatten)]
    pub choice: ChoiceArgs,
    #[command(flatten)]
    pub method: MethodArgs,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Flags of classification runs.
#[derive(Args, Debug, Clone, Default)]
pub struct ClassificationArgs {
    /// Dataset: a .jsonl/.csv/.tsv file or `bigbench:<task>` (fetched on demand); with
    /// `eval --run`: a labelled file to score the run on [default: bigbench:intent_recognition]
    #[arg(long, help_heading = "Classification")]
    pub data: Option<String>,
    /// Dataset format (jsonl, csv, tsv, bigbench) [default: from the file extension]
    #[arg(long, help_heading = "Classification")]
    pub format: Option<String>,
    /// JSONL field / CSV column holding the text [default: text]
    #[arg(long, help_heading = "Classification")]
    pub text_column: Option<String>,
    /// Field / column holding the second text of a pair ("none": never read one) [default: text_pair]
    #[arg(long, help_heading = "Classification")]
    pub pair_column: Option<String>,
    /// Field / column holding the label [default: label]
    #[arg(long, help_heading = "Classification")]
    pub label_column: Option<String>,
    /// Train, validation and test fractions of the dataset, summing to 1 (stratified, seeded by
    /// --seed): `--split 0.8,0.1,0.1` or `--split 0.8 0.1 0.1` [default: 0.7,0.15,0.15]
    #[arg(long, value_delimiter = ',', num_args = 1..=3, value_parser = number(Range::Share), allow_negative_numbers = true, help_heading = "Classification")]
    pub split: Option<Vec<f64>>,
    /// Sentence representation fed to the head: `cls`, the [CLS] token through the model's pooler
    /// (what transformers' BertForSequenceClassification computes, so `merge` / `export` give a
    /// model it loads as is), or `mean` over tokens (merged in the sentence-transformers layout)
    /// [default: cls]
    #[arg(long, value_enum, help_heading = "Classification")]
    pub pooling: Option<Pooling>,
    /// Dropout before the classification head [default: 0.1]
    #[arg(long, value_parser = number(Range::Probability), allow_negative_numbers = true, help_heading = "Classification")]
    pub head_dropout: Option<f64>,
}

/// Flags of multiple-choice runs.
#[derive(Args, Debug, Clone, Default)]
pub struct ChoiceArgs {
    /// Multiple-choice tasks trained on (their union) and evaluated: `bigbench:<task>` or
    /// task.json files [default: bigbench:social_iqa,bigbench:strategyqa]
    #[arg(long, value_delimiter = ',', help_heading = "Multiple choice")]
    pub tasks: Option<Vec<String>>,
    /// Tasks only evaluated ("none": no such task); with `eval --run`: the tasks to score the
    /// run on [default: bigbench:physical_intuition]
    #[arg(long, value_delimiter = ',', help_heading = "Multiple choice")]
    pub eval_tasks: Option<Vec<String>>,
    /// Training questions per task [default: 256]
    #[arg(long, value_parser = count, help_heading = "Multiple choice")]
    pub train_per_task: Option<usize>,
    /// Validation questions per task, scored after each epoch [default: 32]
    #[arg(long, value_parser = count, help_heading = "Multiple choice")]
    pub validation_per_task: Option<usize>,
    /// Test questions per task [default: 100]
    #[arg(long, value_parser = count, help_heading = "Multiple choice")]
    pub test_per_task: Option<usize>,
    /// Keep only the first N decoder layers (quick checks; not the real model)
    #[arg(long, value_parser = count, help_heading = "Multiple choice")]
    pub keep_layers: Option<usize>,
    /// Skip generating the test answers (exact match), which costs a pass per token
    #[arg(long, help_heading = "Multiple choice")]
    pub no_exact_match: bool,
}

/// The adapter flags, shared by every fine-tuning command.
#[derive(Args, Debug, Clone)]
pub struct MethodArgs {
    /// Fine-tuning method.
    #[arg(long, default_value = "replora", value_parser = ["replora", "lora", "dora", "full"], help_heading = "Method")]
    pub method: String,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8, value_parser = count, help_heading = "Method")]
    pub rank: usize,
    /// LoRA alpha (scale = alpha / r, or alpha / sqrt(r) with --rslora).
    #[arg(long, default_value_t = 16.0, value_parser = number(Range::Positive), allow_negative_numbers = true, help_heading = "Method")]
    pub alpha: f64,
    /// Dropout on the adapter input.
    #[arg(long, default_value_t = 0.0, value_parser = number(Range::Probability), allow_negative_numbers = true, help_heading = "Method")]
    pub dropout: f64,
    /// Linear modules to adapt: names matched exactly or as path suffixes (PEFT target_modules).
    /// Default: the attention query and value (`query,value` for BERT, `q_proj,v_proj` for LLaMA).
    #[arg(long, value_delimiter = ',', help_heading = "Method")]
    pub targets: Option<Vec<String>>,
    /// A regex (full match on the module path) instead of --targets.
    #[arg(long, help_heading = "Method")]
    pub targets_regex: Option<String>,
    /// Adapt only these layer indices (comma-separated).
    #[arg(long, value_delimiter = ',', help_heading = "Method")]
    pub layers: Option<Vec<usize>>,
    /// Scale by alpha / sqrt(r) (rsLoRA).
    #[arg(long, help_heading = "Method")]
    pub rslora: bool,
    /// Init of LoRA's A (and RepLoRA's A generator output layer).
    #[arg(long, value_enum, default_value_t = LoraInit::Kaiming, help_heading = "Method")]
    pub init: LoraInit,
    /// RepLoRA seed shape: diagonal (2r parameters per block) or full.
    #[arg(long, value_enum, default_value_t = SeedKind::Diagonal, help_heading = "Method")]
    pub seed_kind: SeedKind,
    /// RepLoRA generator hidden width h.
    #[arg(long, default_value_t = RepLoraConfig::default().hidden, value_parser = count, help_heading = "Method")]
    pub hidden: usize,
    /// RepLoRA generator activation.
    #[arg(long, value_enum, default_value_t = Activation::Tanh, help_heading = "Method")]
    pub activation: Activation,
    /// One RepLoRA generator pair for all blocks (seeds stay per block).
    #[arg(long, help_heading = "Method")]
    pub shared_generators: bool,
    /// Multiplier on RepLoRA's generator outputs: inv_sqrt_h (1/sqrt(h), the default: generated
    /// factors start and move as LoRA's do), inv_h, or one (unscaled, as replora 0.1).
    #[arg(long, value_enum, default_value_t = OutputScale::InvSqrtH, help_heading = "Method")]
    pub output_scale: OutputScale,
    /// RepLoRA generators' learning rate as a multiple of --lr (the seeds keep --lr), as LoRA+
    /// gives B its own rate.
    #[arg(long, default_value_t = 1.0, value_parser = number(Range::Positive), allow_negative_numbers = true, help_heading = "Method")]
    pub generator_lr_multiplier: f64,
}

/// The trainer flags, shared by every fine-tuning command. Unset flags take the task's
/// defaults (classification: [`TrainConfig::default`]; decoders: their own).
#[derive(Args, Debug, Clone, Default)]
pub struct TrainArgs {
    /// Passes over the training data [default: 4; multiple-choice: 1]
    #[arg(long, value_parser = count, help_heading = "Training")]
    pub epochs: Option<usize>,
    /// Examples per micro-batch [default: 16; multiple-choice: 8]
    #[arg(long, value_parser = count, help_heading = "Training")]
    pub batch_size: Option<usize>,
    /// Peak learning rate (AdamW) [default: 0.002; multiple-choice: 0.001]
    #[arg(long, value_parser = number(Range::Positive), allow_negative_numbers = true, help_heading = "Training")]
    pub lr: Option<f64>,
    /// AdamW weight decay [default: 0.01; multiple-choice: 0.01]
    #[arg(long, value_parser = number(Range::NonNegative), allow_negative_numbers = true, help_heading = "Training")]
    pub weight_decay: Option<f64>,
    /// Fraction of the steps spent on linear warm-up [default: 0.1; multiple-choice: 0.05]
    #[arg(long, value_parser = number(Range::Probability), allow_negative_numbers = true, help_heading = "Training")]
    pub warmup_ratio: Option<f64>,
    /// Learning-rate decay after warm-up [default: linear].
    #[arg(long, value_enum, help_heading = "Training")]
    pub decay: Option<Decay>,
    /// Clip the global gradient norm (0: no clipping) [default: 1].
    #[arg(long, value_parser = number(Range::NonNegative), allow_negative_numbers = true, help_heading = "Training")]
    pub grad_clip: Option<f64>,
    /// Micro-batches per optimizer step [default: 1].
    #[arg(long, value_parser = count, help_heading = "Training")]
    pub grad_accum: Option<usize>,
    /// Stop after this many epochs without validation improvement.
    #[arg(long, value_parser = count, help_heading = "Training")]
    pub patience: Option<usize>,
    /// Validation metric that picks the best checkpoint [default: accuracy].
    #[arg(long, value_enum, help_heading = "Training")]
    pub best_metric: Option<BestMetric>,
    /// Also checkpoint every N optimizer steps (always at each epoch end).
    #[arg(long, value_parser = count, help_heading = "Training")]
    pub checkpoint_every: Option<usize>,
    /// Write a metrics line every N optimizer steps [default: 10; multiple-choice: 5]
    #[arg(long, value_parser = count, help_heading = "Training")]
    pub log_every: Option<usize>,
    /// Seed of the split, the adapter/head init, shuffling and dropout [default: 0].
    #[arg(long, help_heading = "Training")]
    pub seed: Option<u64>,
}

impl MethodArgs {
    /// The tuning mode and adapter config; `default_targets` applies without --targets.
    pub fn to_adapter(&self, default_targets: &[&str], seed: u64) -> Result<(Tuning, AdapterConfig)> {
        let (tuning, method) = match self.method.as_str() {
            "full" if self.targets.is_some() || self.targets_regex.is_some() || self.layers.is_some() => {
                return Err(Error::Config(
                    "--targets, --targets-regex and --layers choose what an adapter adapts; --method full tunes every weight and takes none of them".into(),
                ));
            }
            "full" => (Tuning::Full, Method::Lora),
            m => (Tuning::Adapter, m.parse::<Method>()?),
        };
        let target_modules = match (&self.targets_regex, &self.targets) {
            (Some(re), _) => TargetModules::Regex(re.clone()),
            (None, Some(names)) => TargetModules::Names(names.clone()),
            (None, None) => TargetModules::Names(default_targets.iter().map(|s| s.to_string()).collect()),
        };
        let adapter = AdapterConfig {
            method,
            r: self.rank,
            lora_alpha: self.alpha,
            lora_dropout: self.dropout,
            use_rslora: self.rslora,
            init_lora_weights: self.init,
            target_modules,
            layers_to_transform: self.layers.clone(),
            replora: RepLoraConfig {
                seed_kind: self.seed_kind,
                hidden: self.hidden,
                activation: self.activation,
                shared_generators: self.shared_generators,
                output_scale: self.output_scale,
                generator_lr_multiplier: self.generator_lr_multiplier,
            },
            seed,
            ..Default::default()
        };
        Ok((tuning, adapter))
    }
}

impl TrainArgs {
    /// `base` with every flag given on the command line applied.
    pub fn to_train(&self, base: TrainConfig) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs.unwrap_or(base.epochs),
            batch_size: self.batch_size.unwrap_or(base.batch_size),
            lr: self.lr.unwrap_or(base.lr),
            weight_decay: self.weight_decay.unwrap_or(base.weight_decay),
            warmup_ratio: self.warmup_ratio.unwrap_or(base.warmup_ratio),
            decay: self.decay.unwrap_or(base.decay),
            grad_clip: self.grad_clip.map_or(base.grad_clip, |c| (c > 0.0).then_some(c as f32)),
            grad_accum: self.grad_accum.unwrap_or(base.grad_accum),
            patience: self.patience.or(base.patience),
            best_metric: self.best_metric.unwrap_or(base.best_metric),
            checkpoint_every: self.checkpoint_every.or(base.checkpoint_every),
            log_every: self.log_every.unwrap_or(base.log_every),
            seed: self.seed.unwrap_or(base.seed),
        }
    }
}

impl ClassificationArgs {
    /// The flags given (refused for a multiple-choice run).
    fn given(&self) -> Vec<&'static str> {
        let flags = [
            (self.data.is_some(), "--data"),
            (self.format.is_some(), "--format"),
            (self.text_column.is_some(), "--text-column"),
            (self.pair_column.is_some(), "--pair-column"),
            (self.label_column.is_some(), "--label-column"),
            (self.split.is_some(), "--split"),
            (self.pooling.is_some(), "--pooling"),
            (self.head_dropout.is_some(), "--head-dropout"),
        ];
        flags.into_iter().filter(|(given, _)| *given).map(|(_, f)| f).collect()
    }
}

impl ChoiceArgs {
    /// The flags given (refused for a classification run).
    fn given(&self) -> Vec<&'static str> {
        let flags = [
            (self.tasks.is_some(), "--tasks"),
            (self.eval_tasks.is_some(), "--eval-tasks"),
            (self.train_per_task.is_some(), "--train-per-task"),
            (self.validation_per_task.is_some(), "--validation-per-task"),
            (self.test_per_task.is_some(), "--test-per-task"),
            (self.keep_layers.is_some(), "--keep-layers"),
            (self.no_exact_match, "--no-exact-match"),
        ];
        flags.into_iter().filter(|(given, _)| *given).map(|(_, f)| f).collect()
    }
}

fn refuse(flags: Vec<&str>, task: TaskKind) -> Result<()> {
    match flags.is_empty() {
        true => Ok(()),
        false => Err(Error::Config(format!("{} {} not for a {task} run", flags.join(", "), if flags.len() == 1 { "is" } else { "are" }))),
    }
}

impl RunArgs {
    /// The task: `--task`, else the one `--model` is for, else multiple-choice where one of its
    /// flags is given, else classification.
    pub fn task(&self) -> TaskKind {
        match (&self.task, &self.model) {
            (Some(task), _) => *task,
            (None, Some(model)) => TaskKind::for_model(model),
            (None, None) if !self.choice.given().is_empty() => TaskKind::MultipleChoice,
            (None, None) => TaskKind::Classification,
        }
    }

    pub fn to_classification(&self) -> Result<ClassificationSpec> {
        refuse(self.choice.given(), TaskKind::Classification)?;
        let d = ClassificationSpec::default();
        let c = &self.classification;
        let train = self.train.to_train(d.train.clone());
        let (tuning, adapter) = self.method.to_adapter(Bert::DEFAULT_TARGETS, train.seed)?;
        let split = match &c.split {
            Some(s) => <[f64; 3]>::try_from(s.as_slice())
                .map_err(|_| Error::Config(format!("--split takes three fractions (train, validation, test), got {}: {s:?}", s.len())))?,
            None => d.split,
        };
        Ok(ClassificationSpec {
            model: self.model.clone().unwrap_or(d.model),
            data: c.data.clone().unwrap_or(d.data),
            format: c.format.clone().or(d.format),
            text_column: c.text_column.clone().unwrap_or(d.text_column),
            pair_column: match &c.pair_column {
                Some(p) => (p != "none").then(|| p.clone()),
                None => d.pair_column,
            },
            label_column: c.label_column.clone().unwrap_or(d.label_column),
            split,
            train_fraction: self.train_fraction.unwrap_or(d.train_fraction),
            max_len: self.max_len.unwrap_or(d.max_len),
            pooling: c.pooling.unwrap_or(d.pooling),
            head_dropout: c.head_dropout.unwrap_or(d.head_dropout),
            tuning,
            adapter,
            train,
        })
    }

    pub fn to_choice(&self) -> Result<MultipleChoiceSpec> {
        refuse(self.classification.given(), TaskKind::MultipleChoice)?;
        let d = MultipleChoiceSpec::default();
        let c = &self.choice;
        let train = self.train.to_train(d.train.clone());
        let (tuning, adapter) = self.method.to_adapter(Llama::DEFAULT_TARGETS, train.seed)?;
        let [n_train, n_val, n_test] = d.sizes;
        Ok(MultipleChoiceSpec {
            model: self.model.clone().unwrap_or(d.model),
            tasks: c.tasks.clone().unwrap_or(d.tasks),
            eval_tasks: c.eval_tasks.as_ref().map_or(d.eval_tasks, |t| t.iter().filter(|t| t.as_str() != "none").cloned().collect()),
            sizes: [c.train_per_task.unwrap_or(n_train), c.validation_per_task.unwrap_or(n_val), c.test_per_task.unwrap_or(n_test)],
            max_len: self.max_len.unwrap_or(d.max_len),
            keep_layers: c.keep_layers,
            exact_match: !c.no_exact_match,
            train_fraction: self.train_fraction.unwrap_or(d.train_fraction),
            tuning,
            adapter,
            train,
        })
    }
}

/// A task's spec from the command line.
pub trait SpecFromArgs: Task {
    fn spec_from(args: &RunArgs) -> Result<Self::Spec>;
}

impl SpecFromArgs for Classification {
    fn spec_from(args: &RunArgs) -> Result<ClassificationSpec> {
        args.to_classification()
    }
}

impl SpecFromArgs for MultipleChoice {
    fn spec_from(args: &RunArgs) -> Result<MultipleChoiceSpec> {
        args.to_choice()
    }
}

/// Expands `--config FILE` (TOML or JSON, keys = flag names with `_` or `-`) into flags placed
/// before the command line's own, so flags given explicitly win.
pub fn expand_config_file(args: Vec<String>) -> Result<Vec<String>> {
    let Some(pos) = args.iter().position(|a| a == "--config" || a.starts_with("--config=")) else { return Ok(args) };
    let (path, consumed) = match args[pos].strip_prefix("--config=") {
        Some(p) => (PathBuf::from(p), 1),
        None => (PathBuf::from(args.get(pos + 1).ok_or_else(|| Error::Config("--config needs a file".into()))?), 2),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let table: serde_json::Map<String, serde_json::Value> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| Error::format(&path, e))?
    } else {
        let value: toml::Value = toml::from_str(&text).map_err(|e| Error::format(&path, e))?;
        serde_json::to_value(value).map_err(|e| Error::format(&path, e))?.as_object().cloned().unwrap_or_default()
    };
    // A key that is no flag of the subcommand is named here, with the file (clap would name neither).
    let sub = if pos >= 2 { args.get(1) } else { args.get(pos + consumed) };
    let command = <crate::apps::cli::Cli as clap::CommandFactory>::command();
    let known: Option<(String, Vec<String>)> = sub.and_then(|s| command.find_subcommand(s)).map(|c| {
        (c.get_name().to_string(), c.get_arguments().filter_map(|a| a.get_long()).map(String::from).collect())
    });
    let mut flags = vec![];
    for (key, value) in table {
        let name = key.replace('_', "-");
        if let Some((sub, known)) = &known
            && !known.contains(&name)
        {
            return Err(Error::format(&path, format!("unknown key {key:?}: `replora {sub}` has no --{name} flag")));
        }
        let flag = format!("--{name}");
        match value {
            serde_json::Value::Bool(true) => flags.push(flag),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            serde_json::Value::Array(items) => {
                let joined: Vec<String> = items.iter().map(|v| v.as_str().map(String::from).unwrap_or(v.to_string())).collect();
                flags.extend([flag, joined.join(",")]);
            }
            serde_json::Value::String(s) => flags.extend([flag, s]),
            other => flags.extend([flag, other.to_string()]),
        }
    }
    // Program and subcommand first, then the file's flags, then the command line's own.
    let split = pos.min(2);
    let mut out: Vec<String> = args[..split].to_vec();
    out.extend(flags);
    out.extend(args[split..pos].iter().cloned());
    out.extend(args[pos + consumed..].iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn train_args(args: &[&str]) -> RunArgs {
        let cli = crate::apps::cli::Cli::try_parse_from(crate::apps::cli::expand_aliases(args.iter().map(|s| s.to_string()).collect())).unwrap();
        let crate::apps::cli::Command::Train { run, .. } = cli.command else { panic!("not train") };
        run
    }

    #[test]
    fn config_file_flags_come_before_and_lose_to_command_line_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        std::fs::write(&file, "method = \"lora\"\nrank = 4\ntargets = [\"query\", \"key\"]\nrslora = true\nepochs = 2\n").unwrap();
        let args = ["replora", "train", "--epochs", "3", "--config", file.to_str().unwrap()].map(String::from).to_vec();
        let cli = crate::apps::cli::Cli::parse_from(expand_config_file(args).unwrap());
        let crate::apps::cli::Command::Train { run, .. } = cli.command else { panic!("not train") };
        let spec = run.to_classification().unwrap();
        assert_eq!((spec.adapter.method, spec.adapter.r, spec.adapter.use_rslora), (Method::Lora, 4, true));
        assert_eq!(spec.adapter.target_modules, TargetModules::Names(vec!["query".into(), "key".into()]));
        assert_eq!(spec.train.epochs, 3, "the command line wins over the file");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "rank = [").unwrap();
        let err = expand_config_file(["replora", "train", "--config", bad.to_str().unwrap()].map(String::from).to_vec()).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
        let unknown = dir.path().join("unknown.toml");
        std::fs::write(&unknown, "rank = 4\nlearning_rate = 0.1\n").unwrap();
        let err = expand_config_file(["replora", "train", "--config", unknown.to_str().unwrap()].map(String::from).to_vec()).unwrap_err();
        assert!(err.to_string().contains("unknown.toml") && err.to_string().contains("\"learning_rate\""), "{err}");
    }

    /// `--resume` tells flags given from flags left alone by comparing with the spec defaults:
    /// they must be what the command line gives without flags, for each task.
    #[test]
    fn command_line_defaults_are_the_spec_defaults() {
        assert_eq!(train_args(&["replora", "train"]).to_classification().unwrap(), ClassificationSpec::default());
        let lm = train_args(&["replora", "train-lm"]);
        assert_eq!(lm.task(), TaskKind::MultipleChoice);
        assert_eq!(lm.to_choice().unwrap(), MultipleChoiceSpec::default());
    }

    /// The task comes from --task, else the model, else the flags; the other task's flags are refused.
    #[test]
    fn the_task_is_chosen_and_foreign_flags_are_refused() {
        assert_eq!(train_args(&["replora", "train"]).task(), TaskKind::Classification);
        assert_eq!(train_args(&["replora", "train", "--model", "smollm2"]).task(), TaskKind::MultipleChoice);
        assert_eq!(train_args(&["replora", "train", "--tasks", "bigbench:strategyqa"]).task(), TaskKind::MultipleChoice);
        assert_eq!(train_args(&["replora", "train", "--task", "multiple-choice", "--model", "minilm"]).task(), TaskKind::MultipleChoice);
        let e = train_args(&["replora", "train", "--pooling", "mean", "--split", "0.8,0.1,0.1"]).to_choice().unwrap_err().to_string();
        assert!(e.contains("--split, --pooling are not for a multiple-choice run"), "{e}");
        let e = train_args(&["replora", "train", "--keep-layers", "2"]).to_classification().unwrap_err().to_string();
        assert!(e.contains("--keep-layers is not for a classification run"), "{e}");
        assert_eq!(train_args(&["replora", "train-lm", "--model", "x"]).task(), TaskKind::MultipleChoice, "the alias's --task wins");
    }

    /// The trainer flags are optional (each task has its defaults); their help states both.
    #[test]
    fn help_shows_the_trainer_defaults_of_both_tasks() {
        use clap::CommandFactory;
        let mut command = crate::apps::cli::Cli::command();
        let help = command.find_subcommand_mut("train").unwrap().render_long_help().to_string();
        let (c, l) = (TrainConfig::default(), MultipleChoiceSpec::default().train);
        for (flag, a, b) in [
            ("--epochs", c.epochs.to_string(), l.epochs.to_string()),
            ("--batch-size", c.batch_size.to_string(), l.batch_size.to_string()),
            ("--lr", c.lr.to_string(), l.lr.to_string()),
            ("--weight-decay", c.weight_decay.to_string(), l.weight_decay.to_string()),
            ("--warmup-ratio", c.warmup_ratio.to_string(), l.warmup_ratio.to_string()),
            ("--log-every", c.log_every.to_string(), l.log_every.to_string()),
        ] {
            let expected = format!("[default: {a}; multiple-choice: {b}]");
            let at = help.find(&format!("{flag} <")).unwrap_or_else(|| panic!("{flag} not in help"));
            assert!(help[at..].lines().take(3).any(|line| line.contains(&expected)), "{flag}: no {expected} in {}", &help[at..at + 200]);
        }
    }

    #[test]
    fn split_takes_both_forms_and_full_tuning_takes_no_targets() {
        for split in [&["--split", "0.8,0.1,0.1"][..], &["--split", "0.8", "0.1", "0.1"]] {
            let args: Vec<&str> = ["replora", "train"].iter().chain(split).copied().collect();
            assert_eq!(train_args(&args).to_classification().unwrap().split, [0.8, 0.1, 0.1], "{split:?}");
        }
        let e = train_args(&["replora", "train", "--method", "full", "--targets", "x"]).to_classification().unwrap_err();
        assert!(e.to_string().contains("--targets"));
    }
}
