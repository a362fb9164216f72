//! Each task spec's checks of the settings that do not depend on the model or the data, run
//! before anything is opened; the ranges are [`crate::validate`]'s, so messages name the flag.

use super::classification::ClassificationSpec;
use super::image_classification::ImageClassificationSpec;
use super::multiple_choice::MultipleChoiceSpec;
use super::video_classification::VideoClassificationSpec;
use super::vqa::VqaSpec;
use crate::error::{Error, Result};
use crate::validate::{Range, at_least_one, check};

impl ClassificationSpec {
    /// Checks every setting that does not depend on the model or the data.
    pub fn validate(&self) -> Result<()> {
        let [train, validation, test] = self.split;
        crate::data::SplitConfig { train, validation, test, seed: 0 }.validate()?;
        check("train-fraction", self.train_fraction, Range::Fraction)?;
        check("head-dropout", self.head_dropout, Range::Probability)?;
        at_least_one("max-len", self.max_len)?;
        self.tuning.validate()?;
        self.train.validate()
    }
}

impl MultipleChoiceSpec {
    /// Checks every setting that does not depend on the model or the tasks.
    pub fn validate(&self) -> Result<()> {
        let [train, validation, test] = self.sizes;
        at_least_one("train-per-task", train)?;
        at_least_one("validation-per-task", validation)?;
        at_least_one("test-per-task", test)?;
        at_least_one("max-len", self.max_len)?;
        if let Some(n) = self.keep_layers {
            at_least_one("keep-layers", n)?;
        }
        for (flag, tasks) in [("--tasks", &self.tasks), ("--eval-tasks", &self.eval_tasks)] {
            if tasks.iter().any(|t| t.trim().is_empty()) {
                return Err(Error::Config(format!("{flag} names an empty task: each task is {}", crate::data::bigbench::CHOICE_TASKS)));
            }
        }
        if self.tuning == super::Tuning::Probe {
            return Err(Error::Config("--method probe trains only a task head; a multiple-choice run has none (it scores options with the language model's own output layer)".into()));
        }
        self.tuning.validate()?;
        self.train.validate()
    }
}

impl ImageClassificationSpec {
    /// Checks every setting that does not depend on the model or the data.
    pub fn validate(&self) -> Result<()> {
        let [train, validation, test] = self.images;
        at_least_one("train-images", train)?;
        at_least_one("val-images", validation)?;
        at_least_one("test-images", test)?;
        at_least_one("image-size", self.image_size)?;
        // Before the model is opened: resizing its position table to a huge size aborts.
        let max = crate::data::images::MAX_IMAGE_SIZE;
        if self.image_size > max {
            return Err(Error::Config(format!("--image-size must be at most {max} pixels, got {}", self.image_size)));
        }
        check("train-fraction", self.train_fraction, Range::Fraction)?;
        self.tuning.validate()?;
        self.train.validate()
    }
}

impl VqaSpec {
    /// Checks every setting that does not depend on the models or the data.
    pub fn validate(&self) -> Result<()> {
        let [train, validation, test] = self.questions;
        at_least_one("train-questions", train)?;
        at_least_one("val-questions", validation)?;
        at_least_one("test-questions", test)?;
        at_least_one("image-size", self.image_size)?;
        at_least_one("visual-grid", self.visual_grid)?;
        at_least_one("max-len", self.max_len)?;
        if let Some(n) = self.keep_layers {
            at_least_one("keep-layers", n)?;
        }
        let max = crate::data::images::MAX_IMAGE_SIZE;
        if self.image_size > max {
            return Err(Error::Config(format!("--image-size must be at most {max} pixels, got {}", self.image_size)));
        }
        check("train-fraction", self.train_fraction, Range::Fraction)?;
        check("validation-share", self.validation_share, Range::Fraction)?;
        check("test-share", self.test_share, Range::Fraction)?;
        self.tuning.validate()?;
        self.train.validate()
    }
}

impl VideoClassificationSpec {
    /// Checks every setting that does not depend on the model or the data.
    pub fn validate(&self) -> Result<()> {
        at_least_one("image-size", self.image_size)?;
        at_least_one("frames", self.frames)?;
        let max = crate::data::images::MAX_IMAGE_SIZE;
        if self.image_size > max {
            return Err(Error::Config(format!("--image-size must be at most {max} pixels, got {}", self.image_size)));
        }
        let max_frames = crate::data::video::MAX_FRAMES;
        if self.frames > max_frames {
            return Err(Error::Config(format!("--frames must be at most {max_frames}, got {}", self.frames)));
        }
        check("train-fraction", self.train_fraction, Range::Fraction)?;
        check("validation-share", self.validation_share, Range::Fraction)?;
        check("test-share", self.test_share, Range::Fraction)?;
        self.tuning.validate()?;
        self.train.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 26 (crash 2): `--image-size 140000` aborted resizing the position table before
    /// the range check in the image loader ran.
    #[test]
    fn image_sizes_beyond_the_range_are_refused_before_the_model_opens() {
        let spec = ImageClassificationSpec { image_size: 140_000, ..Default::default() };
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.contains("--image-size must be at most 4096 pixels, got 140000"), "{e}");
        assert!(ImageClassificationSpec { image_size: 4096, ..Default::default() }.validate().is_ok());
    }

    #[test]
    fn spec_checks_name_the_flag() {
        let cases: [(&str, Box<dyn Fn(&mut ClassificationSpec)>); 5] = [
            ("--head-dropout", Box::new(|s| s.head_dropout = 2.0)),
            ("--train-fraction", Box::new(|s| s.train_fraction = 1.5)),
            ("--checkpoint-every", Box::new(|s| s.train.checkpoint_every = Some(0))),
            ("--weight-decay", Box::new(|s| s.train.weight_decay = -1.0)),
            ("--grad-accum", Box::new(|s| s.train.grad_accum = 0)),
        ];
        for (flag, edit) in cases {
            let mut spec = ClassificationSpec::default();
            edit(&mut spec);
            let e = spec.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{flag}: {e}");
        }
        assert!(ClassificationSpec::default().validate().is_ok());
        let lm = MultipleChoiceSpec { sizes: [4, 0, 4], ..Default::default() };
        assert!(lm.validate().unwrap_err().to_string().contains("--validation-per-task"));
    }
}
