//! Value ranges of the run settings, in one place: the CLI's value parsers use them (a bad flag
//! fails at parse time, named by clap) and so do the spec checks that `run.json`, `--config`
//! files and library callers go through. Messages name the flag.

use crate::error::{Error, Result};
use crate::tasks::classification::ClassificationSpec;
use crate::tasks::image_classification::ImageClassificationSpec;
use crate::tasks::multiple_choice::MultipleChoiceSpec;

/// The set a number must lie in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    /// `[0, 1)`: dropout probabilities, the warm-up ratio.
    Probability,
    /// `(0, 1]`: fractions of data that must keep something, nucleus `top_p`.
    Fraction,
    /// `[0, 1]`: one part of the train/validation/test split.
    Share,
    /// `>= 0`: weight decay, temperature, clipping (0 = off).
    NonNegative,
    /// `> 0`: learning rate, alpha.
    Positive,
}

impl Range {
    pub fn holds(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Range::Probability => (0.0..1.0).contains(&v),
                Range::Fraction => v > 0.0 && v <= 1.0,
                Range::Share => (0.0..=1.0).contains(&v),
                Range::NonNegative => v >= 0.0,
                Range::Positive => v > 0.0,
            }
    }

    fn describe(self) -> &'static str {
        match self {
            Range::Probability => "a number in [0, 1)",
            Range::Fraction => "a number in (0, 1]",
            Range::Share => "a number in [0, 1]",
            Range::NonNegative => "a number >= 0",
            Range::Positive => "a number > 0",
        }
    }

    /// The message for a value outside the range (clap prefixes it with the flag).
    pub fn message(self, v: f64) -> String {
        format!("must be {}, got {v}", self.describe())
    }
}

/// `--flag` must lie in `range`.
pub fn check(flag: &str, value: f64, range: Range) -> Result<()> {
    if range.holds(value) { Ok(()) } else { Err(Error::Config(format!("--{flag} {}", range.message(value)))) }
}

/// `--flag` must be at least 1.
pub fn at_least_one(flag: &str, value: usize) -> Result<()> {
    if value >= 1 { Ok(()) } else { Err(Error::Config(format!("--{flag} must be at least 1, got {value}"))) }
}

/// Checks a run's settings against the model they are used with: sequences must fit its
/// position table (longer ones would fail inside the model), `--layers` must exist in it.
pub fn fits_model(max_len: usize, max_positions: usize, layers: Option<&[usize]>, num_layers: usize) -> Result<()> {
    if max_len > max_positions {
        return Err(Error::Config(format!("--max-len {max_len} exceeds the model's {max_positions} positions (max_position_embeddings)")));
    }
    if let Some(bad) = layers.into_iter().flatten().find(|&&l| l >= num_layers) {
        return Err(Error::Config(format!("--layers {bad}: the model has {num_layers} layers (0 to {})", num_layers.saturating_sub(1))));
    }
    Ok(())
}

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
        if self.tuning == crate::tasks::Tuning::Probe {
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
    fn ranges_reject_what_they_should() {
        assert!(Range::Probability.holds(0.0) && !Range::Probability.holds(1.0) && !Range::Probability.holds(-0.5));
        assert!(Range::Fraction.holds(1.0) && !Range::Fraction.holds(0.0) && !Range::Fraction.holds(1.5));
        assert!(Range::NonNegative.holds(0.0) && !Range::NonNegative.holds(-1.0) && !Range::NonNegative.holds(f64::NAN));
        assert!(!Range::Positive.holds(0.0) && !Range::Positive.holds(f64::INFINITY));
        let e = check("weight-decay", -1.0, Range::NonNegative).unwrap_err().to_string();
        assert!(e.contains("--weight-decay") && e.contains("-1"), "{e}");
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

    #[test]
    fn model_fit_names_max_len_and_layers() {
        assert!(fits_model(512, 512, Some(&[0, 5]), 6).is_ok());
        assert!(fits_model(513, 512, None, 6).unwrap_err().to_string().contains("--max-len 513"));
        let e = fits_model(128, 512, Some(&[99]), 6).unwrap_err().to_string();
        assert!(e.contains("--layers 99") && e.contains("6 layers"), "{e}");
    }
}
