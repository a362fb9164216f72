//! Directories that already hold results, for runs of every task alike: a new
//! run never silently replaces one (`--resume` continues it, `--overwrite` replaces it), a
//! resumed run says which flags it ignores, `export`/`merge` never write into a non-empty
//! directory without `--overwrite` nor over a run's own files, and loading a run that is of
//! the other kind or unfinished says what to run instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::tasks::TaskKind;

pub const RUN_FILE: &str = "run.json";
pub const SUMMARY_FILE: &str = "summary.json";

/// Everything a run of either kind writes next to `run.json`; `--overwrite` removes these.
const ARTEFACTS: &[&str] = &[
    "labels.json", "head.safetensors", "adapter", "encoder", "model", "summary.json", "metrics.jsonl",
    "checkpoint", "checkpoint.old", "checkpoint.tmp", "best", "best.old", "best.tmp",
];

/// How `train` treats its output directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run; refused if the directory holds one.
    New,
    /// A new run that replaces the one in the directory (`--overwrite`).
    Overwrite,
    /// Continue the run in the directory from its last checkpoint (`--resume`).
    Resume,
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

/// The command that trains a run of `kind`.
fn train_command(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Classification => "train",
        TaskKind::MultipleChoice => "train --task multiple-choice",
        TaskKind::ImageClassification => "train --task image-classification",
    }
}

/// The spec a run trains with, before anything is written: `given` for a new run (refusing a
/// directory that holds a run unless overwriting), the saved one when resuming, with a warning
/// that names each flag whose value differs from the saved one (`defaults`: the spec without
/// flags, to tell flags given from flags left alone).
pub fn begin<T: Clone + Serialize + DeserializeOwned>(out: &Path, given: &T, defaults: &T, start: Start, kind: TaskKind) -> Result<T> {
    let run_file = out.join(RUN_FILE);
    match start {
        Start::Resume => {
            if !run_file.is_file() {
                return Err(Error::State(format!(
                    "--resume: {} holds no run to continue (no {RUN_FILE}); start one without --resume",
                    out.display()
                )));
            }
            if let Some(other) = kind_of(out).filter(|k| *k != kind) {
                let d = out.display();
                let command = train_command(other);
                return Err(Error::State(format!("{d} holds a {other} run: continue it with `replora {command} --out {d} --resume`")));
            }
            let (saved, _): (T, _) = super::sources::read_run_file(out)?;
            let ignored = overridden_flags(given, &saved, defaults);
            if !ignored.is_empty() {
                eprintln!(
                    "warning: --resume continues with the settings saved in {}; ignoring {}",
                    run_file.display(),
                    ignored.join(", ")
                );
            }
            Ok(saved)
        }
        Start::New if run_file.exists() => {
            let state = if out.join(SUMMARY_FILE).exists() { "a finished" } else { "an unfinished" };
            Err(Error::State(format!(
                "{} already holds {state} run; pass --resume to continue it, or --overwrite to replace it \
                 (its adapter, metrics and checkpoints are deleted), or choose another --out",
                out.display()
            )))
        }
        _ => Ok(given.clone()),
    }
}

/// Creates `out` just before a run writes its first file; when overwriting, first removes what
/// the earlier run left there (and nothing else).
pub fn create(out: &Path, start: Start) -> Result<()> {
    if start == Start::Overwrite {
        for name in ARTEFACTS.iter().chain([&RUN_FILE]) {
            let path = out.join(name);
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
                _ => {}
            }
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))
}

/// The task of the run `dir` holds, if any (read from its `run.json`).
pub fn kind_of(dir: &Path) -> Option<TaskKind> {
    let spec: Value = crate::files::read_json(&dir.join(RUN_FILE)).ok()?;
    // Each task's spec has a field no other has.
    Some(match (spec.get("tasks"), spec.get("image_size")) {
        (Some(_), _) => TaskKind::MultipleChoice,
        (None, Some(_)) => TaskKind::ImageClassification,
        (None, None) => TaskKind::Classification,
    })
}

/// Checks that `dir` holds a finished run; otherwise says what to run instead.
pub fn check_finished(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "no such run directory")));
    }
    if !dir.join(RUN_FILE).is_file() {
        return Err(Error::State(format!("{} holds no run (no {RUN_FILE}); `replora train --out DIR` writes one", dir.display())));
    }
    if !dir.join(SUMMARY_FILE).is_file() {
        let d = dir.display();
        let command = kind_of(dir).map_or("train", train_command);
        return Err(Error::State(format!(
            "{d} holds an unfinished run (its training was interrupted: no {SUMMARY_FILE}); finish it with `replora {command} --out {d} --resume`"
        )));
    }
    Ok(())
}

/// Checks that `export`/`merge` of `run` may write into `out`: never the run directory or one of
/// its own files, and an existing non-empty directory only with `--overwrite`.
pub fn check_output(out: &Path, run: &Path, overwrite: bool) -> Result<()> {
    if let (Some(o), Some(r)) = (resolve(out), resolve(run)) {
        let own = o == r || (o.parent() == Some(r.as_path()) && o.file_name().is_some_and(|n| ARTEFACTS.iter().any(|a| n == *a)));
        if own {
            return Err(Error::State(format!(
                "--out {} is the run's own directory or one of its files; write into another directory",
                out.display()
            )));
        }
    }
    if out.exists() && !out.is_dir() {
        return Err(Error::State(format!("--out {} is a file, not a directory", out.display())));
    }
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if non_empty && !overwrite {
        return Err(Error::State(format!(
            "--out {} exists and is not empty; choose a new directory, or pass --overwrite to write over its files",
            out.display()
        )));
    }
    Ok(())
}

/// An absolute path without symlinks, also for a path that does not exist yet (its parent does).
fn resolve(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Some(p);
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Some(std::fs::canonicalize(parent).ok()?.join(path.file_name()?))
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
        saved.adapter.r = 4;
        // Given on the command line: the same epochs as the run, another lr and rank.
        let mut given = RunSpec::default();
        given.train.epochs = 3;
        given.train.lr = 0.1;
        given.adapter.r = 16;
        let flags = overridden_flags(&given, &saved, &defaults);
        assert_eq!(flags, ["--rank 16 (the run's: 4)", "--lr 0.1 (the run's: 0.002)"]);
        assert!(overridden_flags(&defaults, &saved, &defaults).is_empty(), "flags left alone are not reported");
    }

    #[test]
    fn export_refuses_the_run_itself_and_non_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("adapter")).unwrap();
        for own in [run.clone(), run.join("adapter"), run.join("adapter/")] {
            let e = check_output(&own, &run, true).unwrap_err().to_string();
            assert!(e.contains("the run's own"), "{e}");
        }
        let full = dir.path().join("full");
        std::fs::create_dir_all(&full).unwrap();
        std::fs::write(full.join("x"), "x").unwrap();
        assert!(check_output(&full, &run, false).unwrap_err().to_string().contains("--overwrite"));
        assert!(check_output(&full, &run, true).is_ok());
        assert!(check_output(&dir.path().join("new"), &run, false).is_ok());
        assert!(check_output(&run.join("peft"), &run, false).is_ok(), "a new folder inside the run is fine");
    }
}
