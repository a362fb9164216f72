//! The real binary on a tiny BERT, a tiny LLaMA and a tiny dataset, shared by the end-to-end
//! command-line tests: the fixture, a finished classifier run made once per test binary, and
//! the checks of a failing command.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub use super::{copy_dir, replora, stderr};

/// Runs `replora args` in `dir`.
pub fn replora_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replora")).current_dir(dir).args(args).output().expect("the replora binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A temporary directory with a tiny BERT (`bert/`), a tiny LLaMA (`llama/`) and a 3-label,
/// 30-line dataset (`data.jsonl`).
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        super::tiny_bert_model(&root.join("bert"));
        super::tiny_llama_model(&root.join("llama"));
        super::word_dataset(&root.join("data.jsonl"), 3, 10);
        Fixture { _dir: dir, root }
    }

    pub fn path(&self, name: &str) -> String {
        self.root.join(name).to_str().unwrap().to_string()
    }

    /// `train` on the tiny BERT and the data, 1 epoch, into `out`, with `extra` flags.
    pub fn train_args(&self, out: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            "--model",
            &self.path("bert"),
            "--data",
            &self.path("data.jsonl"),
            "--max-len",
            "16",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--method",
            "lora",
            "--out",
            out,
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }
}

/// `train-lm` on the tiny LLaMA and the BIG-bench-style `task` file, 1 epoch, into `out`.
pub fn lm_train_args(f: &Fixture, task: &Path, out: &str) -> Vec<String> {
    let (model, task) = (f.path("llama"), task.to_str().unwrap().to_string());
    let args = [
        "train-lm",
        "--model",
        &model,
        "--tasks",
        &task,
        "--eval-tasks",
        "none",
        "--train-per-task",
        "8",
        "--validation-per-task",
        "4",
        "--test-per-task",
        "4",
        "--max-len",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--no-exact-match",
        "--out",
        out,
    ];
    args.map(String::from).to_vec()
}

/// The shared fixture, with one finished classifier run (`run`), made once per test binary.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let f = Fixture::new();
        run_ok(&f.train_args(&f.path("run"), &[]));
        f
    })
}

/// A copy of the finished run, to damage.
pub fn copy_run(f: &Fixture, name: &str) -> String {
    let to = f.root.join(name);
    copy_dir(&f.root.join("run"), &to);
    to.to_str().unwrap().to_string()
}

/// Runs `args`, which must succeed.
pub fn run_ok(args: &[String]) -> Output {
    let o = replora(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
    o
}

/// Exit code 1 or 2 (our error or clap's), never success or a panic, and every `expected`
/// piece in stderr, which is returned.
pub fn assert_fails(args: &[&str], expected: &[&str]) -> String {
    assert_output_fails(args, replora(args), expected)
}

/// [`assert_fails`] for an output already run (`args` name it in messages).
pub fn assert_output_fails(args: &[&str], o: Output, expected: &[&str]) -> String {
    let code = o.status.code();
    let e = stderr(&o);
    assert!(matches!(code, Some(1) | Some(2)), "{args:?}: exit {code:?} (expected an error, not success or a panic): {e}");
    for piece in expected {
        assert!(e.contains(piece), "{args:?}: expected {piece:?} in stderr:\n{e}");
    }
    e
}

/// metrics.jsonl rows without their timing (the only field that differs between processes).
pub fn metric_rows(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut row: serde_json::Value = serde_json::from_str(l).unwrap();
            row.as_object_mut().unwrap().remove("examples_per_s");
            row
        })
        .collect()
}
