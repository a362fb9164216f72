//! `run.json`, the one file that makes a directory a run: the task's spec, tagged with the task
//! and the format it was written in, and the sources it was trained from.
//!
//! ```json
//! {"task": "classification", "run_format": 1, "model": "...", "data": "...", ..., "sources": [...]}
//! ```
//!
//! Runs written before the tag have neither `task` nor `run_format`:
//! they read as format 0, and their task is told from the keys only one task's spec has.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::sources::Source;
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::layout::RUN_FILE;
use crate::tasks::TaskKind;

/// The `run.json` format this replora writes, and the newest it reads. Raise it when a change
/// would make an older replora misread a run.
pub const RUN_FORMAT: u64 = 1;

const TASK_KEY: &str = "task";
const FORMAT_KEY: &str = "run_format";
/// Lists the sources, beside the spec's own fields.
const SOURCES_KEY: &str = "sources";

/// Writes `run.json`: the task, the format, the spec's fields and the `sources` where known.
pub fn write<S: Serialize>(dir: &Path, kind: TaskKind, spec: &S, sources: Option<&[Source]>) -> Result<()> {
    let Value::Object(fields) = serde_json::to_value(spec).expect("specs serialize") else { unreachable!("a spec is a struct") };
    let mut value = Map::new();
    value.insert(TASK_KEY.into(), kind.name().into());
    value.insert(FORMAT_KEY.into(), RUN_FORMAT.into());
    value.extend(fields);
    if let Some(sources) = sources {
        value.insert(SOURCES_KEY.into(), serde_json::to_value(sources).expect("sources serialize"));
    }
    write_json(&dir.join(RUN_FILE), &Value::Object(value))
}

/// Reads a run's spec and its sources (`None`: a run written before sources were stored). A
/// run of another task, or of a newer format, is refused with what to do.
pub fn read<S: DeserializeOwned>(dir: &Path, kind: TaskKind) -> Result<(S, Option<Vec<Source>>)> {
    let file = dir.join(RUN_FILE);
    let mut object = read_object(&file)?;
    let found = task_of(&file, &object)?;
    if found != kind {
        return Err(Error::State(format!("{} is a {found} run, not a {kind} run", dir.display())));
    }
    for key in [TASK_KEY, FORMAT_KEY] {
        object.remove(key);
    }
    let sources = object.remove(SOURCES_KEY);
    let sources = sources.map(serde_json::from_value).transpose().map_err(|e| Error::format(&file, format!("{SOURCES_KEY}: {e}")))?;
    let spec = serde_json::from_value(Value::Object(object)).map_err(|e| Error::format(&file, e))?;
    Ok((spec, sources))
}

/// The task of the run `dir` holds: its `task` tag, or for a run written before the tag, the
/// task whose spec has its keys. An error when `run.json` is unreadable, of a newer format, or
/// names no known task.
pub fn kind(dir: &Path) -> Result<TaskKind> {
    let file = dir.join(RUN_FILE);
    task_of(&file, &read_object(&file)?)
}

fn read_object(file: &Path) -> Result<Map<String, Value>> {
    match read_json(file)? {
        Value::Object(object) => Ok(object),
        _ => Err(Error::format(file, "not a run spec: not a JSON object")),
    }
}

fn task_of(file: &Path, object: &Map<String, Value>) -> Result<TaskKind> {
    let format = match object.get(FORMAT_KEY) {
        None => 0,
        Some(v) => v.as_u64().ok_or_else(|| Error::format(file, format!("\"{FORMAT_KEY}\" is not a whole number: {v}")))?,
    };
    if format > RUN_FORMAT {
        return Err(Error::format(
            file,
            format!(
                "written in run format {format} by a newer replora; this one reads formats up to {RUN_FORMAT}: upgrade replora to use this run"
            ),
        ));
    }
    match object.get(TASK_KEY) {
        Some(Value::String(name)) => TaskKind::from_name(name)
            .ok_or_else(|| Error::format(file, format!("unknown task {name:?} (this replora knows {})", TaskKind::names().join(", ")))),
        Some(v) => Err(Error::format(file, format!("\"{TASK_KEY}\" is not a task name: {v}"))),
        // Before the tag each task's spec had a field no other has.
        None => Ok(match (object.get("tasks"), object.get("image_size")) {
            (Some(_), _) => TaskKind::MultipleChoice,
            (None, Some(_)) => TaskKind::ImageClassification,
            (None, None) => TaskKind::Classification,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::classification::ClassificationSpec;
    use crate::tasks::image_classification::ImageClassificationSpec;
    use crate::tasks::multiple_choice::MultipleChoiceSpec;

    #[test]
    fn the_task_and_format_are_written_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ImageClassificationSpec::default();
        write(dir.path(), TaskKind::ImageClassification, &spec, None).unwrap();
        let json: Value = read_json(&dir.path().join(RUN_FILE)).unwrap();
        assert_eq!((&json["task"], &json["run_format"]), (&Value::from("image-classification"), &Value::from(RUN_FORMAT)));
        assert_eq!(kind(dir.path()).unwrap(), TaskKind::ImageClassification);
        let (back, sources): (ImageClassificationSpec, _) = read(dir.path(), TaskKind::ImageClassification).unwrap();
        assert_eq!((back, sources), (spec, None));
        let e = read::<ClassificationSpec>(dir.path(), TaskKind::Classification).unwrap_err().to_string();
        assert!(e.contains("is a image-classification run, not a classification run"), "{e}");

        let mut newer = json.clone();
        newer["run_format"] = (RUN_FORMAT + 1).into();
        write_json(&dir.path().join(RUN_FILE), &newer).unwrap();
        let e = kind(dir.path()).unwrap_err().to_string();
        assert!(e.contains("newer replora") && e.contains("upgrade"), "{e}");
        let mut unknown = json;
        unknown["task"] = "segmentation".into();
        write_json(&dir.path().join(RUN_FILE), &unknown).unwrap();
        let e = kind(dir.path()).unwrap_err().to_string();
        assert!(e.contains("unknown task \"segmentation\""), "{e}");
    }

    /// Runs written before the tag: no `task`, no `format`; each opens as its own task.
    #[test]
    fn untagged_runs_are_told_by_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(RUN_FILE);
        for (kind_expected, spec) in [
            (TaskKind::Classification, serde_json::to_value(ClassificationSpec::default()).unwrap()),
            (TaskKind::MultipleChoice, serde_json::to_value(MultipleChoiceSpec::default()).unwrap()),
            (TaskKind::ImageClassification, serde_json::to_value(ImageClassificationSpec::default()).unwrap()),
        ] {
            write_json(&file, &spec).unwrap();
            assert_eq!(kind(dir.path()).unwrap(), kind_expected);
        }
        let (back, _): (ImageClassificationSpec, _) = read(dir.path(), TaskKind::ImageClassification).unwrap();
        assert_eq!(back, ImageClassificationSpec::default());
    }
}
