//! The TensorBoard event files every run writes (issue 34), read back with the reference reader,
//! the `tensorboard` Python package (`scripts/setup-python` installs it into `.venv`): every
//! scalar equals its number in `metrics.jsonl` or `summary.json`, each (tag, step) is written
//! once over all the run's files even when the run was killed and resumed, and `--report-to
//! none` writes none.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::cli::{Fixture, run_ok, stderr};

/// Reads a run directory with tensorboard: every scalar of every event file as TensorBoard's
/// record reader decodes it, before its compatibility layers turn `simple_value` into tensors
/// (`raw`: file, step, tag, value; the reader checks each record's CRCs), and
/// what TensorBoard shows (`shown`: tag -> [step, value], through its `EventAccumulator`, which
/// reads the files in order and keeps the latest value per step).
const READER: &str = r#"
import glob, json, os, sys
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run = sys.argv[1]
raw = []
for path in sorted(glob.glob(os.path.join(run, "events.out.tfevents.*"))):
    for event in LegacyEventFileLoader(path).Load():
        if event.HasField("file_version"):
            raw.append([os.path.basename(path), event.step, "file_version:" + event.file_version, 0.0])
        for value in event.summary.value:
            raw.append([os.path.basename(path), event.step, value.tag, value.simple_value])
accumulator = EventAccumulator(run, size_guidance={"scalars": 0})
accumulator.Reload()
shown = {tag: [[e.step, e.value] for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
print(json.dumps({"raw": raw, "shown": shown}))
"#;

/// The interpreter with tensorboard: `REPLORA_PYTHON`, else the project's `.venv`.
fn python_with_tensorboard() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("REPLORA_PYTHON").map(PathBuf::from).unwrap_or(root.join(".venv/bin/python"));
    let ok = Command::new(&python).args(["-c", "import tensorboard"]).status().is_ok_and(|s| s.success());
    assert!(ok, "{} lacks tensorboard: run scripts/test (it installs it into .venv) or set REPLORA_PYTHON", python.display());
    python
}

struct Read {
    /// (file, step, tag, value) of every scalar, file by file.
    raw: Vec<(String, u64, String, f32)>,
    shown: BTreeMap<String, Vec<(u64, f32)>>,
}

fn read_with_tensorboard(run: &Path) -> Read {
    let o = Command::new(python_with_tensorboard()).args(["-c", READER, run.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "tensorboard's reader failed: {}", stderr(&o));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    let raw = json["raw"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap(), r[2].as_str().unwrap().to_string(), r[3].as_f64().unwrap() as f32)
        })
        .collect();
    let shown = json["shown"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(tag, points)| {
            let points = points.as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap() as f32)).collect();
            (tag.clone(), points)
        })
        .collect();
    Read { raw, shown }
}

/// What the run's event files must hold: tag -> (step, value) from `metrics.jsonl` (a step
/// line's numbers as `train/...`, a validation line's metrics as `validation/...`) and
/// `summary.json` (`test/...` and the throughput, at the last step), as 32-bit floats.
fn expected_scalars(run: &Path) -> BTreeMap<String, Vec<(u64, f32)>> {
    let mut expected: BTreeMap<String, Vec<(u64, f32)>> = BTreeMap::new();
    let mut add = |tag: String, step: u64, v: &Value| {
        if let Some(v) = v.as_f64() {
            expected.entry(tag).or_default().push((step, v as f32));
        }
    };
    for line in std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        let step = line["step"].as_u64().unwrap();
        match line.get("validation") {
            Some(metrics) => {
                for (k, v) in metrics.as_object().unwrap().iter().filter(|(k, _)| *k != "examples") {
                    add(format!("validation/{k}"), step, v);
                }
            }
            None => {
                for (k, v) in line.as_object().unwrap().iter().filter(|(k, _)| *k != "step") {
                    add(format!("train/{k}"), step, v);
                }
            }
        }
    }
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let last = summary["training"]["steps"].as_u64().unwrap();
    for (k, v) in summary["test"].as_object().unwrap().iter().filter(|(k, _)| *k != "examples") {
        add(format!("test/{k}"), last, v);
    }
    add("run/train_examples_per_s".into(), last, &summary["train_examples_per_s"]);
    add("run/train_tokens_per_s".into(), last, &summary["train_tokens_per_s"]);
    expected
}

/// Every scalar of the run is in its event files once, equal to metrics.jsonl and summary.json,
/// and TensorBoard shows exactly those; returns how many event files the run has.
fn assert_event_files_match_the_metrics(run: &Path) -> usize {
    let read = read_with_tensorboard(run);
    let expected = expected_scalars(run);
    assert!(expected.contains_key("train/loss") && expected.contains_key("train/lr") && expected.contains_key("validation/accuracy"));
    assert!(expected.contains_key("train/update_norm") && expected.contains_key("test/accuracy"), "{:?}", expected.keys());

    let files: Vec<&String> = read.raw.iter().map(|r| &r.0).fold(vec![], |mut v, f| {
        if v.last() != Some(&f) {
            v.push(f)
        }
        v
    });
    for file in &files {
        let first = read.raw.iter().find(|r| &r.0 == *file).unwrap();
        assert_eq!(first.2, "file_version:brain.Event:2", "{file} starts with its version record");
    }
    let mut written: BTreeMap<String, Vec<(u64, f32)>> = BTreeMap::new();
    for (_, step, tag, v) in read.raw.iter().filter(|r| !r.2.starts_with("file_version:")) {
        written.entry(tag.clone()).or_default().push((*step, *v));
    }
    for points in written.values_mut() {
        points.sort_by_key(|p| p.0);
    }
    assert_eq!(written, expected, "the event files hold each scalar of metrics.jsonl and summary.json once");
    assert_eq!(read.shown, expected, "TensorBoard shows metrics.jsonl's and summary.json's numbers");
    files.len()
}

#[test]
fn every_scalar_of_a_run_reads_back_with_tensorboard_equal_to_metrics_jsonl() {
    let f = Fixture::new();
    let out = f.root.join("run");
    let o = run_ok(&f.train_args(out.to_str().unwrap(), &["--method", "replora", "--epochs", "2", "--log-every", "1"]));
    assert!(o.status.success());
    assert_eq!(assert_event_files_match_the_metrics(&out), 1);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("generator_grad_norm"), "a RepLoRA run logs its generators' gradient norm");
    let read = read_with_tensorboard(&out);
    for tag in ["train/generator_grad_norm", "train/generated_a_norm", "train/generated_b_norm"] {
        assert!(read.shown.contains_key(tag), "{tag} not in {:?}", read.shown.keys());
    }

    let none = f.root.join("none");
    run_ok(&f.train_args(none.to_str().unwrap(), &["--report-to", "none"]));
    let names: Vec<String> = std::fs::read_dir(&none).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.starts_with("events.out.tfevents")), "--report-to none wrote {names:?}");
    assert!(names.contains(&"metrics.jsonl".to_string()));
}

/// A run killed after its second checkpoint has logged steps past it; the resumed run logs them
/// again into its own file, and the first file is cut back to the checkpoint, as metrics.jsonl is.
#[test]
fn a_killed_and_resumed_run_has_each_scalar_once_over_its_two_files() {
    let f = Fixture::new();
    let out = f.root.join("resumed");
    let args = f.train_args(out.to_str().unwrap(), &["--epochs", "2", "--log-every", "1", "--checkpoint-every", "2"]);
    let o = Command::new(env!("CARGO_BIN_EXE_replora"))
        .args(&args)
        .env("REPLORA_ABORT_IN_CHECKPOINT", "checkpoint:3:partial")
        .output()
        .expect("the replora binary runs");
    assert!(!o.status.success(), "the run did not abort: {}", stderr(&o));
    let progress: Value = serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint/progress.json")).unwrap()).unwrap();
    let checkpoint_step = progress["step"].as_u64().unwrap();
    let logged: Vec<u64> = read_with_tensorboard(&out).raw.iter().filter(|r| r.2 == "train/loss").map(|r| r.1).collect();
    assert!(logged.iter().any(|&s| s > checkpoint_step), "steps after the checkpoint ({checkpoint_step}) were logged: {logged:?}");

    run_ok(&["train", "--out", out.to_str().unwrap(), "--resume"].map(String::from));
    assert_eq!(assert_event_files_match_the_metrics(&out), 2, "one event file per process");
}
