//! A run's TensorBoard event files (issue 34): every number of every `metrics.jsonl` line as a
//! scalar at the line's step, and the test metrics and throughput once the run is tested, so
//! `tensorboard --logdir runs/` shows what `metrics.jsonl` and `summary.json` hold.
//!
//! Tags: a step line's fields become `train/FIELD` (`train/loss`, `train/lr`,
//! `train/examples_per_s`, `train/update_norm`, and the adapter diagnostics the line carries:
//! `train/factor_grad_norm`, RepLoRA's `train/generator_grad_norm`, ...); an epoch's validation
//! line becomes `validation/METRIC` (`validation/loss`, `validation/accuracy`,
//! `validation/macro_f1`); the end of the run writes `test/METRIC` and `run/train_examples_per_s`
//! (`run/train_tokens_per_s` where the task counts tokens) at the last step.
//!
//! Each process that trains a run writes its own file, as TensorBoard's writers do. A resumed
//! run first cuts the earlier files back to the checkpoint's step, exactly as `metrics.jsonl`
//! is cut, so that the files together hold each step once, with the values of `metrics.jsonl`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::config::ReportTo;
use super::metrics::EvalMetrics;
use crate::error::{Error, Result};
use crate::formats::tfevents::{self, Event};
use crate::layout;

/// The prefixes of the tags written once the run has been tested: a resumed run writes them again.
const END_OF_RUN_PREFIXES: [&str; 2] = ["test/", "run/"];

/// Where this process writes a run's scalars; nowhere with `--report-to none`.
pub struct EventLog {
    file: Option<PathBuf>,
}

impl EventLog {
    /// The log of a run that starts training in `dir`: a new run (`resumed_at: None`) deletes the
    /// event files an earlier run left, a resumed one cuts them back to the checkpoint's step.
    pub fn start(dir: &Path, report_to: ReportTo, resumed_at: Option<usize>) -> Result<Self> {
        for file in event_files(dir)? {
            match resumed_at {
                None => std::fs::remove_file(&file).map_err(|e| Error::io(&file, e))?,
                Some(step) => cut_back(&file, step as u64)?,
            }
        }
        Ok(Self::append(dir, report_to))
    }

    /// This process's log in `dir`, to add to (the test metrics, after training).
    pub fn append(dir: &Path, report_to: ReportTo) -> Self {
        EventLog { file: (report_to == ReportTo::Tensorboard).then(|| this_process_file(dir)) }
    }

    /// The scalars of one `metrics.jsonl` line, at its step.
    pub fn line(&self, line: &Value) -> Result<()> {
        match line.get("step").and_then(Value::as_u64) {
            Some(step) => self.scalars(step, &scalars_of_line(line)),
            None => Ok(()),
        }
    }

    /// Appends `scalars` at `step` (the file starts with its version record).
    pub fn scalars(&self, step: u64, scalars: &[(String, f64)]) -> Result<()> {
        let Some(path) = &self.file else { return Ok(()) };
        if scalars.is_empty() {
            return Ok(());
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        let empty = file.metadata().map_err(|e| Error::io(path, e))?.len() == 0;
        let mut bytes = if empty { Event::version_record(now).record() } else { vec![] };
        bytes.extend(Event::scalars(now, step, scalars).record());
        file.write_all(&bytes).map_err(|e| Error::io(path, e))
    }
}

/// The scalars of a `metrics.jsonl` line: `train/FIELD` for each number of a step line but its
/// step, `validation/METRIC` for each metric of a validation line but its example count.
pub fn scalars_of_line(line: &Value) -> Vec<(String, f64)> {
    match line.get("validation") {
        Some(validation) => metric_scalars("validation", validation),
        None => numbers(line).filter(|(key, _)| *key != "step").map(|(key, v)| (format!("train/{key}"), v)).collect(),
    }
}

/// The scalars written when the run is tested: its test metrics and training throughput.
pub fn end_of_run_scalars(test: &EvalMetrics, train_examples_per_s: f64, train_tokens_per_s: Option<f64>) -> Vec<(String, f64)> {
    let mut scalars = metric_scalars("test", &serde_json::to_value(test).expect("metrics serialize"));
    scalars.push(("run/train_examples_per_s".into(), train_examples_per_s));
    scalars.extend(train_tokens_per_s.map(|t| ("run/train_tokens_per_s".into(), t)));
    scalars
}

fn metric_scalars(prefix: &str, metrics: &Value) -> Vec<(String, f64)> {
    numbers(metrics).filter(|(key, _)| *key != "examples").map(|(key, v)| (format!("{prefix}/{key}"), v)).collect()
}

/// The numeric fields of a JSON object (a `null`, as a missing `update_norm`, is none).
fn numbers(object: &Value) -> impl Iterator<Item = (&str, f64)> {
    object.as_object().into_iter().flatten().filter_map(|(key, v)| Some((key.as_str(), v.as_f64()?)))
}

/// The event files in `dir`, in name order (which is the order they were started in).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| layout::is_event_file(n) && crate::files::temporary_of(n).is_none()))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Drops the events after `step` and those written at the end of a run (a resumed run writes
/// them again), and a record a kill cut short; rewrites the file only if that drops anything.
fn cut_back(file: &Path, step: u64) -> Result<()> {
    let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    let (records, used) = tfevents::unframe(&bytes);
    let mut kept = vec![];
    let mut scalars_kept = 0;
    for data in &records {
        let event: Event = prost::Message::decode(*data).map_err(|e| Error::format(file, format!("not a TensorBoard event: {e}")))?;
        let end_of_run = event.scalar_values().any(|(tag, _)| END_OF_RUN_PREFIXES.iter().any(|p| tag.starts_with(p)));
        let is_scalars = event.file_version.is_none();
        if !is_scalars || (event.step as u64 <= step && !end_of_run) {
            kept.extend(tfevents::frame(data));
            scalars_kept += usize::from(is_scalars);
        }
    }
    match (scalars_kept, kept.len() == used && used == bytes.len()) {
        (0, _) => std::fs::remove_file(file).map_err(|e| Error::io(file, e)),
        (_, true) => Ok(()),
        (_, false) => crate::files::write_atomic(file, &kept),
    }
}

/// This process's event file in the run directory `dir`: `events.out.tfevents.SECONDS.HOST.PID.replora`,
/// named on first use. Each process that trains a run adds its own file, and TensorBoard reads
/// a directory's files in name order, so SECONDS is now or, if that does not sort after the
/// files already there (a resume in the same second as the kill), one more than theirs.
fn this_process_file(dir: &Path) -> PathBuf {
    static CHOSEN: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    let mut chosen = CHOSEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    chosen
        .entry(dir.to_path_buf())
        .or_insert_with(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let seconds_of = |file: &PathBuf| -> Option<u64> {
                let name = file.file_name()?.to_str()?.strip_prefix(layout::EVENTS_FILE_PREFIX)?;
                name.split('.').next()?.parse().ok()
            };
            let latest = event_files(dir).unwrap_or_default().iter().filter_map(seconds_of).max();
            let seconds = latest.map_or(now, |s| now.max(s + 1));
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let host: String = host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
            let host = if host.is_empty() { "localhost".to_string() } else { host };
            dir.join(format!("{}{seconds:010}.{host}.{}.replora", layout::EVENTS_FILE_PREFIX, std::process::id()))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tags_and_steps(dir: &Path) -> Vec<(u64, String, f32)> {
        let mut out = vec![];
        for file in event_files(dir).unwrap() {
            let events = tfevents::read(&file).unwrap();
            assert_eq!(events[0].file_version.as_deref(), Some(tfevents::FILE_VERSION), "{}", file.display());
            for e in &events[1..] {
                out.extend(e.scalar_values().map(|(tag, v)| (e.step as u64, tag.to_string(), v)));
            }
        }
        out
    }

    #[test]
    fn a_metrics_line_becomes_train_or_validation_scalars() {
        let step =
            json!({"step": 10, "epoch": 1, "loss": 0.5, "lr": 0.001, "examples_per_s": 80.0, "update_norm": null, "factor_grad_norm": 2.0});
        let mut scalars = scalars_of_line(&step);
        scalars.sort_by(|a, b| a.0.cmp(&b.0));
        let tags: Vec<&str> = scalars.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, ["train/epoch", "train/examples_per_s", "train/factor_grad_norm", "train/loss", "train/lr"]);
        let validation = json!({"epoch": 1, "step": 10, "validation": {"loss": 0.7, "accuracy": 0.5, "macro_f1": 0.4, "examples": 12}});
        let mut scalars = scalars_of_line(&validation);
        scalars.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(scalars, [("validation/accuracy".into(), 0.5), ("validation/loss".into(), 0.7), ("validation/macro_f1".into(), 0.4)]);
    }

    /// A resumed run's files keep the steps up to the checkpoint and lose the end-of-run scalars
    /// and a cut-short record; a new run deletes them; `none` writes nothing.
    #[test]
    fn resuming_cuts_the_files_back_to_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::start(dir.path(), ReportTo::Tensorboard, None).unwrap();
        for step in [1, 2, 3, 4] {
            log.line(&json!({"step": step, "loss": step as f64 / 10.0})).unwrap();
        }
        log.scalars(4, &end_of_run_scalars(&EvalMetrics { loss: 0.1, accuracy: 0.9, ..Default::default() }, 5.0, None)).unwrap();
        let file = event_files(dir.path()).unwrap().remove(0);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.extend_from_slice(&[7, 0, 0]);
        std::fs::write(&file, bytes).unwrap();
        assert_eq!(tags_and_steps(dir.path()).len(), 4 + 3);

        EventLog::start(dir.path(), ReportTo::Tensorboard, Some(2)).unwrap();
        assert_eq!(tags_and_steps(dir.path()), [(1, "train/loss".into(), 0.1), (2, "train/loss".into(), 0.2)]);
        assert_eq!(tfevents::unframe(&std::fs::read(&file).unwrap()).1, std::fs::metadata(&file).unwrap().len() as usize);

        EventLog::start(dir.path(), ReportTo::Tensorboard, Some(0)).unwrap();
        assert!(event_files(dir.path()).unwrap().is_empty(), "a file left with no scalars is removed");
        log.line(&json!({"step": 1, "loss": 1.0})).unwrap();
        let off = EventLog::start(dir.path(), ReportTo::None, None).unwrap();
        off.line(&json!({"step": 1, "loss": 1.0})).unwrap();
        assert!(event_files(dir.path()).unwrap().is_empty(), "a new run deletes the old files; none writes nothing");
    }
}
