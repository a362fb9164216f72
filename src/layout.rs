//! The layout of a run directory, in one place: every file and folder a run writes. `train
//! --overwrite` deletes exactly these, and no command writes into them but the run's own
//! training (see [`crate::run::output`]). docs/run-directory.md describes them for users.

use std::ffi::OsStr;
use std::path::Path;

/// The run's spec; a directory holding it is a run directory.
pub const RUN_FILE: &str = "run.json";
/// Written last: a run directory with it holds a finished run.
pub const SUMMARY_FILE: &str = "summary.json";
/// One JSON line per logged step and per epoch's validation.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// TensorBoard's event files, beside `metrics.jsonl` and holding its numbers (unless
/// `--report-to none`): one per process that trained the run, named
/// `events.out.tfevents.SECONDS.HOST.PID.replora` (see [`crate::training::event_log`]).
pub const EVENTS_FILE_PREFIX: &str = "events.out.tfevents.";
/// The loss and validation curves, drawn by the command line at the end of `train`.
pub const CURVES_FILE: &str = "curves.png";
/// Written when training or testing fails with an error (a non-finite loss, a full disk): the
/// error and the step. A run killed (SIGKILL, a power cut) leaves none: it was interrupted.
pub const FAILED_FILE: &str = "failed.json";
/// The adapter, in replora's native format.
pub const ADAPTER_DIR: &str = "adapter";
/// A classifier's label names and head (classification and image classification).
pub const LABELS_FILE: &str = "labels.json";
pub const HEAD_FILE: &str = "head.safetensors";
/// A visual question answering run's answer set and its projector (visual tokens to the
/// decoder's embeddings).
pub const ANSWERS_FILE: &str = "answers.json";
pub const PROJECTOR_FILE: &str = "projector.safetensors";
/// The last resumable checkpoint, and the best epoch's trainable tensors.
pub const CHECKPOINT_DIR: &str = "checkpoint";
pub const BEST_DIR: &str = "best";
/// A full fine-tuning run's tuned weights, per task: text classification, multiple choice,
/// image classification.
pub const ENCODER_DIR: &str = "encoder";
pub const MODEL_DIR: &str = "model";
pub const BACKBONE_DIR: &str = "backbone";
/// Held (`flock`) by the process that writes the run, with its PID inside (see [`crate::run::lock`]).
/// Never deleted by `--overwrite`: a lock file replaced under a waiting process would let two
/// processes hold "the" lock.
pub const LOCK_FILE: &str = "run.lock";

/// Everything a run of any task writes beside its lock file and its event files (whose names
/// vary: [`is_event_file`]).
pub const ARTEFACTS: &[&str] = &[
    RUN_FILE,
    SUMMARY_FILE,
    METRICS_FILE,
    CURVES_FILE,
    FAILED_FILE,
    ADAPTER_DIR,
    LABELS_FILE,
    HEAD_FILE,
    ANSWERS_FILE,
    PROJECTOR_FILE,
    CHECKPOINT_DIR,
    BEST_DIR,
    ENCODER_DIR,
    MODEL_DIR,
    BACKBONE_DIR,
];

/// Suffixes of the twins of a checkpoint swap: `checkpoint.tmp` / `checkpoint.old` (also `best`).
const SWAP_SUFFIXES: &[&str] = &[".tmp", ".old"];

/// Whether `name` (one path component inside a run directory) is something a run writes: an
/// artefact, or a temporary twin a crash can leave (a swap's, or `files::write_atomic`'s). The
/// lock file is not one.
pub fn is_artefact(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else { return false };
    let base = crate::files::temporary_of(name).or_else(|| SWAP_SUFFIXES.iter().find_map(|s| name.strip_suffix(s))).unwrap_or(name);
    ARTEFACTS.contains(&base) || is_event_file(base)
}

/// Whether `name` is one of a run's TensorBoard event files (or a temporary twin of one).
pub fn is_event_file(name: &str) -> bool {
    name.strip_prefix(EVENTS_FILE_PREFIX).is_some_and(|rest| !rest.is_empty())
}

/// Whether `dir` is a run directory (it holds `run.json`).
pub fn is_run(dir: &Path) -> bool {
    dir.join(RUN_FILE).is_file()
}

/// Whether the run in `dir` finished (wrote `summary.json`).
pub fn is_finished(dir: &Path) -> bool {
    dir.join(SUMMARY_FILE).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artefacts_and_their_twins_are_a_runs_and_nothing_else_is() {
        for name in [
            "run.json",
            "run.json.4242.tmp",
            "backbone",
            "encoder",
            "model",
            "checkpoint.old",
            "best.tmp",
            "metrics.jsonl.tmp",
            "head.safetensors",
            "curves.png",
            "failed.json",
            "events.out.tfevents.1764680000.host.4242.replora",
            "events.out.tfevents.1764680000.host.4242.replora.4242.tmp",
        ] {
            assert!(is_artefact(OsStr::new(name)), "{name}");
        }
        for name in [
            "run.lock",
            "notes.txt",
            "peft",
            "checkpoints",
            "model.bak",
            "my-model",
            ".tmp",
            "run.json.x.tmp",
            "events.out.tfevents.",
            "curves.svg",
        ] {
            assert!(!is_artefact(OsStr::new(name)), "{name}");
        }
    }
}
