//! Value ranges of the run settings, in one place: the CLI's value parsers use them (a bad flag
//! fails at parse time, named by clap) and so do the spec checks that `run.json`, `--config`
//! files and library callers go through ([`crate::tasks::spec_checks`]). Messages name the flag.

use crate::error::{Error, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn model_fit_names_max_len_and_layers() {
        assert!(fits_model(512, 512, Some(&[0, 5]), 6).is_ok());
        assert!(fits_model(513, 512, None, 6).unwrap_err().to_string().contains("--max-len 513"));
        let e = fits_model(128, 512, Some(&[99]), 6).unwrap_err().to_string();
        assert!(e.contains("--layers 99") && e.contains("6 layers"), "{e}");
    }
}
