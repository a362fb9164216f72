//! `compare`: methods x seeds x training fractions of one task, each a full run in its own
//! directory, summarized in one table (`compare.md`) and one JSON file (`compare.json`).

use std::path::Path;

use super::results::{RunSummary, table};
use super::{Start, evaluate_base, train};
use crate::error::{Error, Result};
use crate::files::{write_atomic, write_json};
use crate::tasks::{Task, TaskSpec};

/// One arm of a comparison: the pre-trained model zero-shot, or a run of a `--method`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arm {
    /// The pre-trained model zero-shot (`base` in `--methods`).
    Base,
    /// A `--method` value.
    Method(String),
}

impl Arm {
    /// `base` is the zero-shot arm; any other name a method.
    pub fn parse(name: &str) -> Self {
        match name {
            "base" => Arm::Base,
            method => Arm::Method(method.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Arm::Base => "base",
            Arm::Method(m) => m,
        }
    }
}

impl std::fmt::Display for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a comparison runs.
pub struct Plan {
    pub methods: Vec<Arm>,
    pub seeds: Vec<u64>,
    pub fractions: Vec<f64>,
}

/// The run directory of one cell: `{method}-seed{seed}`, with `-frac{f}` below the full data.
pub fn run_name(method: &str, seed: u64, fraction: f64) -> String {
    match fraction < 1.0 {
        true => format!("{method}-seed{seed}-frac{fraction}"),
        false => format!("{method}-seed{seed}"),
    }
}

/// Runs every cell of `plan` into `out`, on `devices` (several: data parallel, see [`train`]). `spec_for(arm, seed, fraction)` makes each cell's
/// spec; all are made (and checked) before the first run starts. The base model is evaluated
/// once (it has neither seed nor training data).
pub fn compare<T: Task>(
    plan: &Plan,
    spec_for: &dyn Fn(&Arm, u64, f64) -> Result<T::Spec>,
    out: &Path,
    start: Start,
    devices: &[burn::prelude::Device],
) -> Result<Vec<RunSummary>> {
    let Some(device) = devices.first() else { return Err(Error::Config("--device: no device given".into())) };
    if plan.methods.is_empty() || plan.seeds.is_empty() || plan.fractions.is_empty() {
        return Err(Error::Config("--methods, --seeds and --train-fractions each need at least one value".into()));
    }
    refuse_repeats("--methods", &plan.methods)?;
    refuse_repeats("--seeds", &plan.seeds)?;
    refuse_repeats("--train-fractions", &plan.fractions)?;
    let mut cells = vec![];
    for &fraction in &plan.fractions {
        for arm in &plan.methods {
            for &seed in &plan.seeds {
                let base = *arm == Arm::Base;
                if base && (seed != plan.seeds[0] || fraction != plan.fractions[0]) {
                    continue;
                }
                // The zero-shot model sees no training data: it is the same at every fraction.
                let spec = spec_for(arm, seed, if base { 1.0 } else { fraction })?;
                spec.validate()?;
                cells.push((arm.clone(), run_name(arm.name(), seed, spec.train_fraction()), spec));
            }
        }
    }
    let mut summaries = vec![];
    for (i, (arm, name, spec)) in cells.iter().enumerate() {
        eprintln!("== [{}/{}] {name} ==", i + 1, cells.len());
        summaries.push(match arm {
            Arm::Base => evaluate_base::<T>(spec, device)?,
            Arm::Method(_) => train::<T>(spec, &out.join(name), start, devices)?,
        });
    }
    Ok(summaries)
}

/// Refuses a list of the plan that names a value twice (two cells would be one run).
pub fn refuse_repeats<T: PartialEq + std::fmt::Display>(flag: &str, values: &[T]) -> Result<()> {
    let mut repeated: Vec<String> = vec![];
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) && !repeated.contains(&v.to_string()) {
            repeated.push(v.to_string());
        }
    }
    match repeated.is_empty() {
        true => Ok(()),
        false => Err(Error::Config(format!("{flag} names {} more than once: each value is one run, so give it once", repeated.join(", ")))),
    }
}

/// Writes `compare.md` (a header naming the model, data and sizes, then the table) and
/// `compare.json` (every run's summary); returns the Markdown.
pub fn write(summaries: &[RunSummary], out: &Path) -> Result<String> {
    let Some(s) = summaries.iter().find(|s| s.training.is_some()).or(summaries.first()) else {
        return Err(Error::Config("no runs to compare".into()));
    };
    let labels = if s.labels.is_empty() { String::new() } else { format!(", {} {}", s.labels.len(), s.task.labels_noun()) };
    let epochs = s.training.as_ref().map_or(String::new(), |t| format!(", {} epochs", t.epochs_run));
    let header = format!(
        "{} {} on {} ({} train / {} validation / {} test examples{labels}{epochs})\n\n",
        s.task, s.model, s.data, s.sizes[0], s.sizes[1], s.sizes[2]
    );
    let text = format!("{header}{}", table(summaries));
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_atomic(&out.join("compare.md"), text.as_bytes())?;
    write_json(&out.join("compare.json"), &summaries)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_that_names_a_value_twice_is_refused_naming_it() {
        let e = refuse_repeats("--methods", &["lora", "replora", "lora", "lora"]).unwrap_err().to_string();
        assert!(e.contains("--methods names lora more than once"), "{e}");
        let e = refuse_repeats("--seeds", &[0, 1, 0, 1]).unwrap_err().to_string();
        assert!(e.contains("--seeds names 0, 1 more than once"), "{e}");
        assert!(refuse_repeats("--train-fractions", &[0.1, 0.5]).is_ok());
    }
}
