//! Resumable checkpoints: trainable tensors, optimizer state and loop progress, written to a
//! temporary directory and swapped in, so a kill at any moment leaves a complete checkpoint.
//!
//! Test hook: `REPLORA_ABORT_IN_CHECKPOINT=<dir name>:<n>:<stage>` aborts the process during
//! the `n`-th write (1-based) of directories named `<dir name>` (`checkpoint`, `best`), at
//! `partial` (the new copy half written) or `swap` (just before the new copy is renamed into
//! place), so that tests can crash a run at the worst moments (tests/crash_safety.rs).

use super::loss_scale::LossScale;
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::prelude::*;
use burn::tensor::{Bytes, DType};
use serde::{Deserialize, Serialize};

use super::metrics::EvalMetrics;
use super::state::TrainableState;
use crate::error::{Error, Result};

/// Where the loop stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// Micro-batches of `epoch` already trained.
    pub batch_in_epoch: usize,
    /// Optimizer steps taken.
    pub step: usize,
    /// Best validation score so far (higher is better) and its epoch.
    pub best: Option<(f64, usize)>,
    pub evals_without_improvement: usize,
    /// Validation metrics after each finished epoch.
    pub history: Vec<EvalMetrics>,
    /// Training wall time before this process started, seconds.
    pub elapsed_s: f64,
    /// The running loss of the log line in progress: the example-weighted loss sum and the
    /// examples since the last logged step of `epoch`, so that a resumed run logs what the
    /// uninterrupted one did. (Absent in checkpoints of older versions: read as 0.)
    #[serde(default)]
    pub window_loss: f64,
    #[serde(default)]
    pub window_examples: usize,
    /// Loss scaling's state, in a run whose products are f16 (`--precision f16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScale>,
}

/// What a run's progress must agree with: its epochs, micro-batches per epoch and accumulation.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub epochs: usize,
    pub batches_per_epoch: usize,
    pub grad_accum: usize,
}

impl Schedule {
    pub fn steps_per_epoch(&self) -> usize {
        self.batches_per_epoch.div_ceil(self.grad_accum)
    }
}

impl Progress {
    /// Checks that the progress is one the training loop of `schedule` can have written: an
    /// epoch within the run, a step that matches the epoch and batch, one validation per
    /// finished epoch and a best epoch among them.
    pub fn check(&self, schedule: &Schedule) -> std::result::Result<(), String> {
        let s = schedule;
        if self.epoch > s.epochs {
            return Err(format!("epoch {} is beyond the run's {} epochs", self.epoch + 1, s.epochs));
        }
        if self.batch_in_epoch >= s.batches_per_epoch.max(1) || (self.epoch == s.epochs && self.batch_in_epoch > 0) {
            return Err(format!("batch {} is beyond the epoch's {} batches", self.batch_in_epoch, s.batches_per_epoch));
        }
        let expected = self.epoch * s.steps_per_epoch() + self.batch_in_epoch.div_ceil(s.grad_accum);
        if self.step != expected {
            let total = s.steps_per_epoch() * s.epochs;
            return Err(format!(
                "step {} does not match epoch {}, batch {} of the run's schedule (that is step {expected} of {total})",
                self.step,
                self.epoch + 1,
                self.batch_in_epoch
            ));
        }
        if self.history.len() != self.epoch {
            return Err(format!("{} validation results for {} finished epochs", self.history.len(), self.epoch));
        }
        match self.best {
            None if self.epoch > 0 => return Err(format!("no best epoch, though {} epochs were evaluated", self.epoch)),
            Some((score, best)) if best >= self.epoch || !score.is_finite() => {
                return Err(format!("best epoch {} (score {score}) is not one of the {} evaluated", best + 1, self.epoch));
            }
            _ => {}
        }
        if self.evals_without_improvement > self.epoch {
            return Err(format!("{} evaluations without improvement in {} epochs", self.evals_without_improvement, self.epoch));
        }
        if !self.window_loss.is_finite() || !self.elapsed_s.is_finite() {
            return Err("a non-finite running loss or elapsed time".into());
        }
        Ok(())
    }
}

const TENSORS: &str = "trainable.safetensors";
const OPTIMIZER: &str = "optimizer.bpk";
pub const PROGRESS: &str = "progress.json";

fn record_error(path: &Path, e: impl std::fmt::Debug) -> Error {
    Error::format(path, format!("{e:?}"))
}

/// Writes `state` (+ optimizer and progress when given) as directory `dir`, atomically.
pub fn write_dir(dir: &Path, state: &TrainableState, optim: Option<&ModuleOptimizer>, progress: Option<&Progress>) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let old = dir.with_extension("old");
    let fault = fault_injection(dir);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    state.save(&tmp.join(TENSORS))?;
    fault("partial");
    if let Some(optim) = optim {
        let file = tmp.join(OPTIMIZER);
        optim.to_record().save(&file).map_err(|e| record_error(&file, e))?;
    }
    if let Some(progress) = progress {
        crate::files::write_json(&tmp.join(PROGRESS), progress)?;
    }
    // Swap: the previous directory survives as `.old` until the new one is in place. Where
    // `dir` is missing, an interrupted swap left the last good copy in `.old`: keep it.
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    fault("swap");
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// The module doc's test hook: a function that aborts at the configured stage of this write.
fn fault_injection(dir: &Path) -> impl Fn(&str) {
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let spec = std::env::var("REPLORA_ABORT_IN_CHECKPOINT").unwrap_or_default();
    let mut parts = spec.splitn(3, ':');
    let (name, n, stage) = (parts.next().unwrap_or(""), parts.next().and_then(|n| n.parse::<usize>().ok()), parts.next().unwrap_or(""));
    let this = dir.file_name().is_some_and(|f| f == name) && Some(WRITES.fetch_add(1, Ordering::SeqCst) + 1) == n;
    let stage = stage.to_string();
    move |at: &str| {
        if this && at == stage {
            eprintln!("REPLORA_ABORT_IN_CHECKPOINT: aborting at {at} of {}", dir.display());
            std::process::abort();
        }
    }
}

/// The directory to resume from: `dir`, or its `.old` twin if a swap was interrupted.
pub fn existing(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.with_extension("old")].into_iter().find(|d| d.join(TENSORS).exists())
}

pub fn read_state(dir: &Path) -> Result<TrainableState> {
    TrainableState::load(&dir.join(TENSORS))
}

/// The progress saved in `dir`, checked against the run's `schedule` (a hand-edited or foreign
/// file is refused, naming it, rather than resumed at a wrong step or learning rate).
pub fn read_progress(dir: &Path, schedule: &Schedule) -> Result<Progress> {
    let file = dir.join(PROGRESS);
    let progress: Progress = crate::files::read_json(&file)?;
    progress.check(schedule).map_err(|what| {
        Error::format(&file, format!("{what}; restore the file, or delete {} to train again from the start", dir.display()))
    })?;
    Ok(progress)
}

pub fn read_optimizer(dir: &Path, optim: ModuleOptimizer) -> Result<ModuleOptimizer> {
    let file = dir.join(OPTIMIZER);
    // Read whole (bounded by the file's size), then checked against the checkpoint's tensors:
    // burn panics on a state it cannot place, and reserves a header's declared size unread.
    let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    check_optimizer_state(&file, &bytes, &read_state(dir)?)?;
    let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| corrupt_optimizer(&file, format!("{e:?}")))?;
    Ok(optim.load_record(record))
}

fn corrupt_optimizer(file: &Path, what: String) -> Error {
    let dir = file.parent().unwrap_or(file).display();
    Error::format(file, format!("corrupt or truncated optimizer state: {what}; restore it, or delete {dir} to train again from the start"))
}

/// Every optimizer state tensor must belong to a saved parameter (`<param id>.<field>`) and
/// have its shape, in f32; every recorded rank must be that parameter's.
fn check_optimizer_state(file: &Path, bytes: &[u8], state: &TrainableState) -> Result<()> {
    let params: HashMap<u64, &[usize]> = state.ids.iter().map(|(name, id)| (*id, state.tensors[name].shape.as_slice())).collect();
    let bad = |what: String| corrupt_optimizer(file, what);
    let reader = burn_pack::Reader::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).map_err(|e| bad(format!("{e:?}")))?;
    for (key, value) in reader.scalars() {
        if let Some(id) = key.strip_suffix(".__rank") {
            let shape =
                id.parse().ok().and_then(|id: u64| params.get(&id)).ok_or_else(|| bad(format!("{key} names no saved parameter")))?;
            if usize::try_from(*value).ok() != Some(shape.len()) {
                return Err(bad(format!("{key} is not the parameter's rank {}", shape.len())));
            }
        }
    }
    for t in reader.into_tensors().map_err(|e| bad(format!("{e:?}")))? {
        let shape = t.param_id.filter(|id| t.name.split('.').next() == Some(&id.to_string())).and_then(|id| params.get(&id));
        let shape = shape.ok_or_else(|| bad(format!("tensor {} belongs to no saved parameter", t.name)))?;
        if t.dtype != DType::F32 || t.shape.as_slice() != *shape {
            return Err(bad(format!("tensor {} is {:?} {:?}, its parameter {:?} f32", t.name, t.dtype, t.shape.as_slice(), shape)));
        }
    }
    Ok(())
}

/// Restores a module's trainable tensors from a checkpoint or best-model directory.
pub fn restore<M: Module>(dir: &Path, module: M) -> Result<M> {
    read_state(dir)?.restore(module)
}

#[cfg(test)]
mod tests {
    use super::{Progress, Schedule, read_progress};
    use crate::training::EvalMetrics;

    /// 3 epochs of 5 micro-batches, 2 per step: 3 steps an epoch.
    const SCHEDULE: Schedule = Schedule { epochs: 3, batches_per_epoch: 5, grad_accum: 2 };

    fn after_epochs(n: usize) -> Progress {
        Progress {
            epoch: n,
            step: 3 * n,
            best: (n > 0).then_some((0.5, 0)),
            history: vec![EvalMetrics::default(); n],
            ..Progress::default()
        }
    }

    #[test]
    fn progress_the_loop_can_write_is_accepted() {
        for n in 0..=3 {
            assert_eq!(after_epochs(n).check(&SCHEDULE), Ok(()), "after {n} epochs");
        }
        let mid = Progress { batch_in_epoch: 4, step: 3 + 2, ..after_epochs(1) };
        assert_eq!(mid.check(&SCHEDULE), Ok(()));
    }

    #[test]
    fn progress_beyond_the_schedule_is_refused_naming_the_file() {
        let cases = [
            (Progress { step: 99999, ..after_epochs(1) }, "step 99999 does not match"),
            (Progress { epoch: 7, step: 21, ..after_epochs(1) }, "epoch 8 is beyond the run's 3 epochs"),
            (Progress { batch_in_epoch: 5, ..after_epochs(1) }, "batch 5 is beyond"),
            // The panic of issue 26 (crash 3): an evaluated epoch and no best.
            (Progress { best: None, ..after_epochs(2) }, "no best epoch"),
            (Progress { best: Some((0.5, 2)), ..after_epochs(2) }, "best epoch 3"),
            (Progress { history: vec![], ..after_epochs(2) }, "0 validation results for 2 finished epochs"),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (progress, expected) in cases {
            crate::files::write_json(&dir.path().join("progress.json"), &progress).unwrap();
            let e = read_progress(dir.path(), &SCHEDULE).unwrap_err().to_string();
            assert!(e.contains("progress.json") && e.contains(expected), "{expected:?} not in {e}");
        }
    }

    /// Resume compares new validation scores with the stored best: a score read back one ulp
    /// off (serde_json without `float_roundtrip` reads 2/13 as 0.15384615384615383) picks a
    /// different best epoch than the uninterrupted run.
    #[test]
    fn progress_scores_round_trip_bit_exactly() {
        let scores = [2.0 / 13.0, 0.1 + 0.2, 1.0 / 3.0, 0.9615384615384616, f64::MIN_POSITIVE];
        for s in scores {
            let p = Progress { best: Some((s, 1)), elapsed_s: s, ..Progress::default() };
            let back: Progress = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
            assert_eq!(back.best.unwrap().0.to_bits(), s.to_bits(), "{s} read back as {}", back.best.unwrap().0);
            assert_eq!(back.elapsed_s.to_bits(), s.to_bits());
        }
    }
}
