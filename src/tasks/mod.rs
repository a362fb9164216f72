//! The task layer: what a run learns and how it is scored. Each task is one [`Task`]
//! implementation; [`crate::run`] drives every task through the same lifecycle (train, resume,
//! evaluate, predict, export, merge, compare). Adding a task is one file here plus one line in
//! [`TaskKind`] and [`with_task!`](crate::with_task).

/// Implements [`TaskSpec`] for a spec struct with the fields `model`, `tuning`,
/// `train`, `train_fraction` and an inherent `validate`; `|spec| expr` names its data, and
/// `|spec| paths` lists its data fields (`&mut String`s that may be paths).
macro_rules! task_spec {
    ($spec:ty, |$s:ident| $data:expr, |$m:ident| $data_paths:expr) => {
        impl $crate::tasks::TaskSpec for $spec {
            fn model(&self) -> &str {
                &self.model
            }
            fn tuning(&self) -> &$crate::tasks::Tuning {
                &self.tuning
            }
            fn train(&self) -> &$crate::training::TrainConfig {
                &self.train
            }
            fn data_name(&self) -> String {
                let $s = self;
                $data
            }
            fn train_fraction(&self) -> f64 {
                self.train_fraction
            }
            fn validate(&self) -> $crate::error::Result<()> {
                <$spec>::validate(self)
            }
            fn paths_mut(&mut self) -> Vec<($crate::tasks::Role, &mut String)> {
                let $m = self;
                let data: Vec<&mut String> = $data_paths;
                let mut paths = vec![($crate::tasks::Role::Model, &mut $m.model)];
                paths.extend(data.into_iter().map(|p| ($crate::tasks::Role::Data, p)));
                paths
            }
        }
    };
}

pub mod choice_model;
pub mod classification;
pub mod heads;
pub mod hf_layout;
pub mod image_classification;
pub mod multiple_choice;
pub mod spec_checks;
pub mod tuning;
pub mod video_classification;
pub mod vqa;
pub mod vqa_model;

pub use tuning::Tuning;

use std::fmt::Debug;
use std::path::Path;

use burn::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::adapters::PeftModel;
use crate::error::{Error, Result};
use crate::models::Architecture;
use crate::training::{EvalMetrics, Objective, TrainConfig};

pub use classification::Classification;
pub use image_classification::ImageClassification;
pub use multiple_choice::MultipleChoice;
pub use video_classification::VideoClassification;
pub use vqa::Vqa;

crate::choice_enum! {
    /// The registry of tasks: `--task`, and the `task` a run directory records.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum TaskKind: "task" {
        /// Text (or text-pair) classification with an encoder and a linear head.
        Classification => "classification",
        /// Multiple-choice questions answered by a decoder, trained as causal language modelling.
        MultipleChoice => "multiple-choice",
        /// Images classified by a vision transformer with a linear head.
        ImageClassification => "image-classification",
        /// Visual question answering: a frozen ViT's visual tokens, through a trained projector,
        /// read by a decoder before the question; answers chosen among the training answers.
        Vqa => "vqa",
        /// Video clips classified by a video transformer grown from an image ViT (TimeSformer's
        /// divided space-time attention) with a linear head.
        Video => "video",
    }
}

impl TaskKind {
    /// The task a model is fine-tuned for by default: decoders answer multiple-choice
    /// questions, vision transformers classify images, encoders classify text.
    pub fn for_model(model: &str) -> Self {
        match crate::models::Family::detect(model) {
            Some(crate::models::Family::Llama) => TaskKind::MultipleChoice,
            Some(crate::models::Family::Dinov2) => TaskKind::ImageClassification,
            _ => TaskKind::Classification,
        }
    }

    /// What a run's `labels` are: the classes, or for question answering the answers it
    /// chooses among.
    pub fn labels_noun(self) -> &'static str {
        match self {
            TaskKind::Vqa => "answers",
            _ => "labels",
        }
    }
}

/// Runs `$body` with the type alias `$T` bound to the [`Task`] of `$kind`: the one place that
/// maps task kinds to implementations.
#[macro_export]
macro_rules! with_task {
    ($kind:expr, $T:ident => $body:expr) => {
        match $kind {
            $crate::tasks::TaskKind::Classification => {
                type $T = $crate::tasks::Classification;
                $body
            }
            $crate::tasks::TaskKind::MultipleChoice => {
                type $T = $crate::tasks::MultipleChoice;
                $body
            }
            $crate::tasks::TaskKind::ImageClassification => {
                type $T = $crate::tasks::ImageClassification;
                $body
            }
            $crate::tasks::TaskKind::Vqa => {
                type $T = $crate::tasks::Vqa;
                $body
            }
            $crate::tasks::TaskKind::Video => {
                type $T = $crate::tasks::VideoClassification;
                $body
            }
        }
    };
}

/// What a stored path is to the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Model,
    Data,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Model => "model",
            Role::Data => "data",
        })
    }
}

/// What every task's run spec (`run.json`) holds besides its data settings.
pub trait TaskSpec: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Default {
    /// A model directory, file or asset name.
    fn model(&self) -> &str;
    fn tuning(&self) -> &Tuning;
    fn train(&self) -> &TrainConfig;
    /// The data the run learns from, for tables.
    fn data_name(&self) -> String;
    /// The stratified share of the training split used (sample-efficiency runs).
    fn train_fraction(&self) -> f64;
    /// Checks every setting that does not depend on the model or the data.
    fn validate(&self) -> Result<()>;
    /// The model and the data as the spec names them (paths or built-in names), to be stored
    /// as absolute paths ([`crate::run::sources`]).
    fn paths_mut(&mut self) -> Vec<(Role, &mut String)>;

    /// `lora`, `dora`, `replora`, `adapter`, `prefix`, `full` or `probe`.
    fn method_name(&self) -> String {
        self.tuning().name()
    }
}

/// Test results: overall metrics and, for runs over several sub-tasks, one line each.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestScores {
    pub overall: EvalMetrics,
    pub per_task: Vec<SubtaskScore>,
}

/// Results on one sub-task of a multi-task run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubtaskScore {
    pub task: String,
    pub examples: usize,
    pub accuracy: f64,
    /// Mean per-token negative log-likelihood of the correct answers.
    pub answer_loss: f64,
    /// Greedy generation equals the correct answer, where measured.
    pub exact_match: Option<f64>,
}

/// A task: the data a run learns from, the model it trains (pre-trained architecture, adapter,
/// head), its loss and metrics, and the files it writes. An implementation holds the opened
/// spec, pre-trained model and tokenizer; [`crate::run`] does the rest.
pub trait Task: Sized {
    const KIND: TaskKind;
    /// Where a full fine-tuning run keeps its tuned weights (Hugging Face layout).
    const FULL_MODEL_DIR: &'static str;
    type Spec: TaskSpec;
    /// The pre-trained architecture the adapters go into.
    type Arch: Architecture;
    /// What trains: the adapted architecture plus any head.
    type Model: Objective + Clone;
    /// The run's splits, ready to batch.
    type Data;

    /// Opens the pre-trained model and tokenizer of `spec` and checks the spec fits them.
    fn open(spec: Self::Spec, device: &Device) -> Result<Self>;
    fn spec(&self) -> &Self::Spec;
    /// Loads, splits and tokenizes the spec's data.
    fn data(&self) -> Result<Self::Data>;
    /// A labelled file (classification) or sub-task list (multiple choice) as a test split.
    fn test_data(&self, source: &str) -> Result<Self::Data>;
    /// Examples in the train, validation and test splits.
    fn sizes(data: &Self::Data) -> [usize; 3];
    /// Training tokens per epoch, for tasks whose throughput is counted in tokens.
    fn train_tokens(_data: &Self::Data) -> Option<usize> {
        None
    }
    /// Class names, for tasks with a fixed label set.
    fn labels(_data: &Self::Data) -> Vec<String> {
        vec![]
    }

    /// The model to train: pre-trained weights, a fresh adapter (or all weights trainable) and head.
    fn build(&self, data: &Self::Data) -> Result<Self::Model>;
    /// The pre-trained model with no adapter, for zero-shot evaluation; `None` where the task
    /// needs a trained head.
    fn zero_shot(&self) -> Option<Self::Model> {
        None
    }
    fn adapted(model: &Self::Model) -> &PeftModel<Self::Arch>;
    /// Parameters of the pre-trained architecture that train besides the adapter in an
    /// adapter run (a video model's new temporal parts); counted as trainable.
    fn base_params_trained(_model: &Self::Model) -> usize {
        0
    }
    /// Epoch `epoch`'s training batches: always the same for the same epoch (exact resume).
    fn train_batches(&self, data: &Self::Data, epoch: usize) -> Vec<<Self::Model as Objective>::Batch>;
    /// Scores the model on the validation split (no dropout, no gradients).
    fn validate(&self, data: &Self::Data, model: &Self::Model) -> EvalMetrics;
    /// Scores the model on the test split.
    fn test(&self, data: &Self::Data, model: &Self::Model) -> Result<TestScores>;
    /// Whether validation reports macro-F1 (so `--best-metric macro-f1` means something).
    fn has_macro_f1() -> bool {
        false
    }

    /// Writes what the task adds to a run directory beside the adapter (a head, the labels,
    /// a tokenizer for full fine-tuning).
    fn save_extra(&self, data: &Self::Data, model: &Self::Model, out: &Path) -> Result<()>;
    /// Rebuilds a finished run's model from `out` around this task's pre-trained model.
    fn restore(&self, out: &Path, device: &Device) -> Result<Self::Model>;
    /// Answers for raw inputs (JSON objects; fields per task), one JSON object each.
    fn predict(&self, model: &Self::Model, inputs: &[serde_json::Value]) -> Result<Vec<serde_json::Value>>;
    /// Writes the adapter (RepLoRA materialized) in PEFT's layout; returns how Python loads it.
    fn export_peft(&self, model: &Self::Model, dir: &Path) -> Result<String>;
    /// Writes the model with the adapter folded in as a plain Hugging Face directory; returns
    /// how Python loads it.
    fn merge(&self, model: Self::Model, dir: &Path) -> Result<String>;
}

/// Refuses model outputs that are NaN or infinite (`what`: which outputs), rather than printing
/// them as `null`; the run layer adds the run's trained files to the error.
pub fn check_finite<V: Copy + Into<f64>>(values: &[V], what: impl FnOnce() -> String) -> Result<()> {
    match values.iter().all(|&v| v.into().is_finite()) {
        true => Ok(()),
        false => Err(Error::NonFiniteOutput { what: what(), files: vec![] }),
    }
}

/// Refuses a `--best-metric` the task does not compute.
pub fn check_best_metric<T: Task>(spec: &T::Spec) -> Result<()> {
    if spec.train().best_metric == crate::training::BestMetric::MacroF1 && !T::has_macro_f1() {
        return Err(Error::Config(format!(
            "--best-metric macro-f1 is a classification metric; a {} run picks its best epoch by accuracy or loss",
            T::KIND
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--overwrite` deletes only listed names: a task whose full fine-tuning writes an unlisted
    /// folder (image classification's `backbone/` once) would leave it behind.
    #[test]
    fn every_tasks_full_model_folder_is_a_run_artefact() {
        for kind in <TaskKind as crate::choice::Choice>::ALL {
            let dir = crate::with_task!(kind, T => <T as Task>::FULL_MODEL_DIR);
            assert!(crate::layout::ARTEFACTS.contains(&dir), "{kind}: {dir}");
        }
    }
}
