//! What `train` does with its output directory, for runs of every task alike: a new run never
//! silently replaces one (`--resume` continues an unfinished one, `--overwrite` replaces one, a
//! finished run is never written again otherwise), a resumed run says which flags it ignores,
//! and loading a run that is of the other kind, unfinished or being trained says what to run
//! instead. The layout is [`crate::layout`]'s, the lock [`super::lock`]'s.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::layout::{self, CHECKPOINT_DIR, RUN_FILE, SUMMARY_FILE};
use crate::tasks::TaskKind;

/// How `train` treats its output directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run; refused if the directory holds one.
    New,
    /// A new run that replaces the one in the directory (`--overwrite`).
    Overwrite,
    /// Continue the unfinished run in the directory from its last checkpoint (`--resume`).
    Resume,
    /// A sweep's cell: read back if finished, resumed if it has a checkpoint, else (re)started.
    /// Decided once the directory is locked, so two sweeps never both train a cell.
    Continue,
}

impl Start {
    pub fn from_flags(resume: bool, overwrite: bool) -> Self {
        match (resume, overwrite) {
            (true, _) => Start::Resume,
            (false, true) => Start::Overwrite,
            (false, false) => Start::New,
        }
    }
}

/// What [`begin`] decided.
pub enum Begin<T> {
    /// Train with this spec: `start` is `New`, `Overwrite` or `Resume`.
    Train { spec: T, start: Start },
    /// The directory holds a finished run ([`Start::Continue`] only): read it back.
    Finished,
}

/// The command that trains a run of `kind`.
fn train_command(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Classification => "train",
        TaskKind::MultipleChoice => "train --task multiple-choice",
        TaskKind::ImageClassification => "train --task image-classification",
        TaskKind::Vqa => "train --task vqa",
        TaskKind::Video => "train --task video",
    }
}

/// The spec a run trains with, decided with the directory locked and before anything is
/// written: `given` for a new run (refusing a directory that holds a run unless overwriting),
/// the saved one when resuming (refusing a finished run), with a warning that names each flag
/// whose value differs from the saved one (`defaults`: the spec without flags, to tell flags
/// given from flags left alone).
pub fn begin<T: Clone + Serialize + DeserializeOwned>(
    out: &Path,
    given: &T,
    defaults: &T,
    start: Start,
    kind: TaskKind,
) -> Result<Begin<T>> {
    let run_file = out.join(RUN_FILE);
    let d = out.display();
    let start = match start {
        Start::Continue if layout::is_finished(out) && layout::is_run(out) => return Ok(Begin::Finished),
        Start::Continue if layout::is_run(out) && crate::training::checkpoint::existing(&out.join(CHECKPOINT_DIR)).is_some() => {
            Start::Resume
        }
        Start::Continue => Start::Overwrite,
        other => other,
    };
    match start {
        Start::Resume => {
            if !layout::is_run(out) {
                return Err(Error::State(format!("--resume: {d} holds no run to continue (no {RUN_FILE}); start one without --resume")));
            }
            match super::run_file::kind(out)? {
                other if other != kind => {
                    let command = train_command(other);
                    return Err(Error::State(format!("{d} holds a {other} run: continue it with `replora {command} --out {d} --resume`")));
                }
                _ => {}
            }
            if layout::is_finished(out) {
                return Err(Error::State(format!(
                    "--resume: {d} holds a finished run (it has {SUMMARY_FILE}), which --resume leaves as it is; use it with \
                     `replora eval --run {d}` or `replora predict --run {d}`, or train it again with --overwrite"
                )));
            }
            let (saved, _): (T, _) = super::run_file::read(out, kind)?;
            let ignored = overridden_flags(given, &saved, defaults);
            if !ignored.is_empty() {
                eprintln!("warning: --resume continues with the settings saved in {}; ignoring {}", run_file.display(), ignored.join(", "));
            }
            Ok(Begin::Train { spec: saved, start })
        }
        Start::New if layout::is_run(out) => {
            let state = if layout::is_finished(out) { "a finished" } else { "an unfinished" };
            Err(Error::State(format!(
                "{d} already holds {state} run; pass --resume to continue it, or --overwrite to replace it \
                 (its adapter, metrics and checkpoints are deleted), or choose another --out"
            )))
        }
        _ => Ok(Begin::Train { spec: given.clone(), start }),
    }
}

/// Just before a run writes its first file: when overwriting, removes what the earlier run
/// wrote there (the names of [`layout::ARTEFACTS`] and their temporary twins) and nothing else.
pub fn clear(out: &Path, start: Start) -> Result<()> {
    if start != Start::Overwrite || !layout::is_run(out) {
        return Ok(());
    }
    let entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    // run.json last: a clean-up cut short still leaves a run directory, which --overwrite takes.
    let mut doomed: Vec<_> = entries.flatten().filter(|e| layout::is_artefact(&e.file_name())).map(|e| e.path()).collect();
    doomed.sort_by_key(|p| p.file_name().is_some_and(|n| n == RUN_FILE));
    for path in doomed {
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
            _ => {}
        }
    }
    Ok(())
}

/// The task of the run `dir` holds, if its `run.json` says (see [`super::run_file::kind`]).
pub fn kind_of(dir: &Path) -> Option<TaskKind> {
    super::run_file::kind(dir).ok()
}

/// Checks that `dir` holds a finished run; otherwise says what to run instead, or, for an
/// unfinished run another process is training, which process.
pub fn check_finished(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "no such run directory")));
    }
    if !layout::is_run(dir) {
        return Err(Error::State(format!("{} holds no run (no {RUN_FILE}); `replora train --out DIR` writes one", dir.display())));
    }
    if !layout::is_finished(dir) {
        super::lock::check_free(dir)?;
        let d = dir.display();
        let command = kind_of(dir).map_or("train", train_command);
        return Err(Error::State(format!(
            "{d} holds an unfinished run (its training was interrupted: no {SUMMARY_FILE}); finish it with `replora {command} --out {d} --resume`"
        )));
    }
    Ok(())
}

/// The flags whose value in `given` differs from both `saved` and `defaults` (so was set on the
/// command line or in a config file), as `--flag value (the run's: saved)`.
fn overridden_flags<T: Serialize>(given: &T, saved: &T, defaults: &T) -> Vec<String> {
    let [given, saved, defaults] = [given, saved, defaults].map(|t| {
        let mut out = BTreeMap::new();
        leaves("", &serde_json::to_value(t).expect("specs serialize"), &mut out);
        out
    });
    let mut flags: Vec<String> = vec![];
    for (key, value) in &given {
        if saved.get(key) == Some(value) || defaults.get(key) == Some(value) {
            continue;
        }
        let name = flag(key);
        if !flags.iter().any(|f| f.starts_with(&format!("{name} "))) {
            let was = saved.get(key).map_or("unset".into(), Value::to_string);
            flags.push(format!("{name} {value} (the run's: {was})"));
        }
    }
    flags
}

fn leaves(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                leaves(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The command-line flag that sets a spec field.
fn flag(key: &str) -> String {
    let name = match key.rsplit('.').next().unwrap_or(key) {
        "r" => "rank",
        "lora_alpha" => "alpha",
        "lora_dropout" => "dropout",
        "use_rslora" => "rslora",
        "init_lora_weights" => "init",
        "target_modules" => "targets",
        "layers_to_transform" => "layers",
        "tuning" => "method",
        "sizes" => "train-per-task/--validation-per-task/--test-per-task",
        "exact_match" => "no-exact-match",
        other => other,
    };
    format!("--{}", name.replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::classification::ClassificationSpec as RunSpec;

    #[test]
    fn resume_names_only_the_flags_that_differ_from_the_run() {
        let defaults = RunSpec::default();
        let mut saved = RunSpec::default();
        saved.train.epochs = 3;
        saved.tuning.adapter_mut().unwrap().r = 4;
        // Given on the command line: the same epochs as the run, another lr and rank.
        let mut given = RunSpec::default();
        given.train.epochs = 3;
        given.train.lr = 0.1;
        given.tuning.adapter_mut().unwrap().r = 16;
        let flags = overridden_flags(&given, &saved, &defaults);
        assert_eq!(flags, ["--rank 16 (the run's: 4)", "--lr 0.1 (the run's: 0.002)"]);
        assert!(overridden_flags(&defaults, &saved, &defaults).is_empty(), "flags left alone are not reported");
    }
}
