//! The flags that define a classification run (shared by `train` and `compare`).

use std::path::PathBuf;

use clap::Args;

use crate::adapters::{Activation, AdapterConfig, LoraInit, Method, RepLoraConfig, SeedKind, TargetModules};
use crate::classify::{RunSpec, Tuning};
use crate::error::{Error, Result};
use crate::models::bert::Pooling;
use crate::training::{BestMetric, Decay, TrainConfig};

#[derive(Args, Debug, Clone)]
pub struct SpecArgs {
    /// Model directory (config.json, model.safetensors, tokenizer.json) or asset name (`minilm`).
    #[arg(long, default_value = "minilm", help_heading = "Data")]
    pub model: String,
    /// Dataset: a .jsonl/.csv/.tsv file or `bigbench:<task>` (fetched on demand).
    #[arg(long, default_value = "bigbench:intent_recognition", help_heading = "Data")]
    pub data: String,
    /// Dataset format (jsonl, csv, tsv, bigbench); default: from the file extension.
    #[arg(long, help_heading = "Data")]
    pub format: Option<String>,
    /// JSONL field / CSV column holding the text.
    #[arg(long, default_value = "text", help_heading = "Data")]
    pub text_column: String,
    /// Field / column holding the second text of a pair ("none": never read one).
    #[arg(long, default_value = "text_pair", help_heading = "Data")]
    pub pair_column: String,
    /// Field / column holding the label.
    #[arg(long, default_value = "label", help_heading = "Data")]
    pub label_column: String,
    /// Train,validation,test fractions of the dataset (stratified, seeded by --seed).
    #[arg(long, default_value = "0.7,0.15,0.15", value_delimiter = ',', num_args = 3, help_heading = "Data")]
    pub split: Vec<f64>,
    /// Use only this stratified fraction of the training split (sample-efficiency runs).
    #[arg(long, default_value_t = 1.0, help_heading = "Data")]
    pub train_fraction: f64,
    /// Truncate inputs to this many tokens.
    #[arg(long, default_value_t = 128, help_heading = "Data")]
    pub max_len: usize,

    /// Fine-tuning method.
    #[arg(long, default_value = "replora", value_parser = ["replora", "lora", "dora", "full"], help_heading = "Method")]
    pub method: String,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8, help_heading = "Method")]
    pub rank: usize,
    /// LoRA alpha (scale = alpha / r, or alpha / sqrt(r) with --rslora).
    #[arg(long, default_value_t = 16.0, help_heading = "Method")]
    pub alpha: f64,
    /// Dropout on the adapter input.
    #[arg(long, default_value_t = 0.0, help_heading = "Method")]
    pub dropout: f64,
    /// Linear modules to adapt: names matched exactly or as path suffixes (PEFT target_modules).
    #[arg(long, default_value = "query,value", value_delimiter = ',', help_heading = "Method")]
    pub targets: Vec<String>,
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
    #[arg(long, default_value = "kaiming", value_parser = ["kaiming", "gaussian"], help_heading = "Method")]
    pub init: String,
    /// RepLoRA seed shape: diagonal (2r parameters per block) or full.
    #[arg(long, default_value = "diagonal", value_parser = ["diagonal", "full"], help_heading = "Method")]
    pub seed_kind: String,
    /// RepLoRA generator hidden width h.
    #[arg(long, default_value_t = RepLoraConfig::default().hidden, help_heading = "Method")]
    pub hidden: usize,
    /// RepLoRA generator activation.
    #[arg(long, default_value = "tanh", value_parser = ["tanh", "relu", "gelu", "identity"], help_heading = "Method")]
    pub activation: String,
    /// One RepLoRA generator pair for all blocks (seeds stay per block).
    #[arg(long, help_heading = "Method")]
    pub shared_generators: bool,
    /// Sentence representation fed to the head.
    #[arg(long, default_value = "mean", value_parser = ["mean", "cls"], help_heading = "Method")]
    pub pooling: String,
    /// Dropout before the classification head.
    #[arg(long, default_value_t = 0.1, help_heading = "Method")]
    pub head_dropout: f64,

    #[arg(long, default_value_t = TrainConfig::default().epochs, help_heading = "Training")]
    pub epochs: usize,
    #[arg(long, default_value_t = TrainConfig::default().batch_size, help_heading = "Training")]
    pub batch_size: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = TrainConfig::default().lr, help_heading = "Training")]
    pub lr: f64,
    #[arg(long, default_value_t = TrainConfig::default().weight_decay, help_heading = "Training")]
    pub weight_decay: f64,
    /// Fraction of the steps spent on linear warm-up.
    #[arg(long, default_value_t = TrainConfig::default().warmup_ratio, help_heading = "Training")]
    pub warmup_ratio: f64,
    /// Learning-rate decay after warm-up.
    #[arg(long, value_enum, default_value = "linear", help_heading = "Training")]
    pub decay: Decay,
    /// Clip the global gradient norm (0: no clipping).
    #[arg(long, default_value_t = 1.0, help_heading = "Training")]
    pub grad_clip: f32,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1, help_heading = "Training")]
    pub grad_accum: usize,
    /// Stop after this many epochs without validation improvement.
    #[arg(long, help_heading = "Training")]
    pub patience: Option<usize>,
    /// Validation metric that picks the best checkpoint.
    #[arg(long, value_enum, default_value = "accuracy", help_heading = "Training")]
    pub best_metric: BestMetric,
    /// Also checkpoint every N optimizer steps (always at each epoch end).
    #[arg(long, help_heading = "Training")]
    pub checkpoint_every: Option<usize>,
    /// Write a metrics line every N optimizer steps.
    #[arg(long, default_value_t = 10, help_heading = "Training")]
    pub log_every: usize,
    /// Seed of the split, the adapter/head init, shuffling and dropout.
    #[arg(long, default_value_t = 0, help_heading = "Training")]
    pub seed: u64,
}

fn parse<T: std::str::FromStr<Err = Error>>(s: &str) -> Result<T> {
    s.parse()
}

impl SpecArgs {
    pub fn to_spec(&self) -> Result<RunSpec> {
        let (tuning, method) = match self.method.as_str() {
            "full" => (Tuning::Full, Method::Lora),
            m => (Tuning::Adapter, parse::<Method>(m)?),
        };
        let target_modules = match &self.targets_regex {
            Some(re) => TargetModules::Regex(re.clone()),
            None => TargetModules::Names(self.targets.clone()),
        };
        let adapter = AdapterConfig {
            method,
            r: self.rank,
            lora_alpha: self.alpha,
            lora_dropout: self.dropout,
            use_rslora: self.rslora,
            init_lora_weights: parse::<LoraInit>(&self.init)?,
            target_modules,
            layers_to_transform: self.layers.clone(),
            replora: RepLoraConfig {
                seed_kind: parse::<SeedKind>(&self.seed_kind)?,
                hidden: self.hidden,
                activation: parse::<Activation>(&self.activation)?,
                shared_generators: self.shared_generators,
            },
            seed: self.seed,
            ..Default::default()
        };
        let train = TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            weight_decay: self.weight_decay,
            warmup_ratio: self.warmup_ratio,
            decay: self.decay,
            grad_clip: (self.grad_clip > 0.0).then_some(self.grad_clip),
            grad_accum: self.grad_accum,
            patience: self.patience,
            best_metric: self.best_metric,
            checkpoint_every: self.checkpoint_every,
            log_every: self.log_every,
            seed: self.seed,
        };
        Ok(RunSpec {
            model: self.model.clone(),
            data: self.data.clone(),
            format: self.format.clone(),
            text_column: self.text_column.clone(),
            pair_column: (self.pair_column != "none").then(|| self.pair_column.clone()),
            label_column: self.label_column.clone(),
            split: [self.split[0], self.split[1], self.split[2]],
            train_fraction: self.train_fraction,
            max_len: self.max_len,
            pooling: parse::<Pooling>(&self.pooling)?,
            head_dropout: self.head_dropout,
            tuning,
            adapter,
            train,
        })
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
    let mut flags = vec![];
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
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

    #[test]
    fn config_file_flags_come_before_and_lose_to_command_line_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        std::fs::write(&file, "method = \"lora\"\nrank = 4\ntargets = [\"query\", \"key\"]\nrslora = true\nepochs = 2\n").unwrap();
        let args = ["replora", "train", "--epochs", "3", "--config", file.to_str().unwrap()].map(String::from).to_vec();
        let cli = crate::cli::Cli::parse_from(expand_config_file(args).unwrap());
        let crate::cli::Command::Train { spec, .. } = cli.command else { panic!("not train") };
        let spec = spec.to_spec().unwrap();
        assert_eq!((spec.adapter.method, spec.adapter.r, spec.adapter.use_rslora), (Method::Lora, 4, true));
        assert_eq!(spec.adapter.target_modules, TargetModules::Names(vec!["query".into(), "key".into()]));
        assert_eq!(spec.train.epochs, 3, "the command line wins over the file");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "rank = [").unwrap();
        let err = expand_config_file(["replora", "train", "--config", bad.to_str().unwrap()].map(String::from).to_vec()).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
    }
}
