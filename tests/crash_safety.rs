//! Determinism and crash safety of `replora train`, on a tiny BERT and a tiny dataset so that
//! a whole run takes about a second: the same seed gives the same bytes; a run killed at any
//! moment (SIGKILL at seeded random delays, or aborted inside a checkpoint write through
//! `REPLORA_ABORT_IN_CHECKPOINT`) resumes to the same bytes; a full or unwritable output
//! directory fails with a clear error and keeps the last checkpoint.

mod fuzz;
mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Instant;

use fuzz::Rng;
use replora::training::checkpoint;

/// A tiny model directory (BERT with 2 layers of width 8, WordPiece over 25 ids) and a
/// 48-example two-class JSONL dataset of its words.
fn fixture(root: &Path) -> (PathBuf, PathBuf) {
    let model = root.join("model");
    support::tiny_bert(&model, "", false, true);
    support::tiny_tokenizer(&model);
    let mut rng = Rng::new(5);
    let words = support::TINY_WORDS;
    let lines: String = (0..48)
        .map(|i| {
            let label = if i % 2 == 0 { "pos" } else { "neg" };
            let cue = if i % 2 == 0 { *rng.pick(&["good", "great", "fine"]) } else { *rng.pick(&["bad", "awful", "poor"]) };
            let filler: Vec<&str> = (0..3 + rng.below(5)).map(|_| *rng.pick(&words[..8])).collect();
            format!("{}\n", serde_json::json!({"text": format!("{} {cue}", filler.join(" ")), "label": label}))
        })
        .collect();
    let data = root.join("data.jsonl");
    std::fs::write(&data, lines).unwrap();
    (model, data)
}

fn train_args(model: &Path, data: &Path, out: &Path) -> Vec<String> {
    train_args_batch(model, data, out, "4")
}

fn train_args_batch(model: &Path, data: &Path, out: &Path, batch: &str) -> Vec<String> {
    let (model, data, out) = (model.to_str().unwrap(), data.to_str().unwrap(), out.to_str().unwrap());
    [
        "train",
        "--model",
        model,
        "--data",
        data,
        "--out",
        out,
        "--method",
        "replora",
        "--rank",
        "2",
        "--hidden",
        "4",
        "--max-len",
        "16",
        "--epochs",
        "3",
        "--batch-size",
        batch,
        "--lr",
        "1e-2",
        "--checkpoint-every",
        "2",
        "--log-every",
        "1",
        "--seed",
        "9",
    ]
    .map(String::from)
    .to_vec()
}

fn replora() -> Command {
    Command::new(env!("CARGO_BIN_EXE_replora"))
}

fn run(args: &[String], env: &[(&str, &str)]) -> Output {
    replora().args(args).envs(env.iter().copied()).output().expect("the replora binary runs")
}

fn resume_args(out: &Path) -> Vec<String> {
    ["train", "--out", out.to_str().unwrap(), "--resume"].map(String::from).to_vec()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What must be identical between runs: the adapter and head files, and the summary's
/// metrics without timings.
fn result(out: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>, serde_json::Value) {
    let read = |name: &str| std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("{}: {e}", out.join(name).display()));
    let mut summary: serde_json::Value = serde_json::from_slice(&read("summary.json")).unwrap();
    for key in ["train_examples_per_s", "peak_rss_mib"] {
        summary.as_object_mut().unwrap().remove(key);
    }
    summary["training"].as_object_mut().unwrap().remove("wall_time_s");
    (read("adapter/adapter_model.safetensors"), read("adapter/adapter_config.json"), read("head.safetensors"), summary)
}

/// `metrics.jsonl` without its one timing field.
fn metrics(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("examples_per_s");
            v
        })
        .collect()
}

fn assert_same_result(a: &Path, b: &Path, what: &str) {
    let (x, y) = (result(a), result(b));
    assert!(x.0 == y.0, "{what}: adapter weights differ");
    assert!(x.1 == y.1, "{what}: adapter config differs");
    assert!(x.2 == y.2, "{what}: head weights differ");
    assert_eq!(x.3, y.3, "{what}: metrics differ");
}

#[test]
fn the_same_seed_gives_identical_files_and_metrics() {
    let root = tempfile::tempdir().unwrap();
    let (model, data) = fixture(root.path());
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    for out in [&a, &b] {
        let o = run(&train_args(&model, &data, out), &[]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_same_result(&a, &b, "two runs with seed 9");
    let (ma, mb) = (metrics(&a), metrics(&b));
    assert!(ma.len() > 10, "expected a metrics row per step, got {}", ma.len());
    assert_eq!(ma, mb, "metrics.jsonl differs");
}

/// Starts or resumes the run in `out`: resumed if a checkpoint exists, else from scratch.
fn start(model: &Path, data: &Path, out: &Path, env: &[(&str, &str)]) -> Child {
    start_batch(model, data, out, "4", env)
}

fn start_batch(model: &Path, data: &Path, out: &Path, batch: &str, env: &[(&str, &str)]) -> Child {
    let args = if checkpoint::existing(&out.join("checkpoint")).is_some() {
        resume_args(out)
    } else {
        let _ = std::fs::remove_dir_all(out);
        train_args_batch(model, data, out, batch)
    };
    replora().args(args).envs(env.iter().copied()).stderr(std::process::Stdio::null()).spawn().unwrap()
}

fn finish(model: &Path, data: &Path, out: &Path) {
    finish_batch(model, data, out, "4");
}

/// Resumes the run in `out` to its end; a run that already finished is read-only to `--resume`.
fn finish_batch(model: &Path, data: &Path, out: &Path, batch: &str) {
    if out.join("summary.json").is_file() {
        return;
    }
    let o = start_batch(model, data, out, batch, &[]).wait_with_output().unwrap();
    assert!(o.status.success(), "the final resume failed");
}

#[test]
fn a_run_killed_at_random_moments_resumes_to_the_same_bytes() {
    let root = tempfile::tempdir().unwrap();
    let (model, data) = fixture(root.path());
    // Batches of one: about a hundred steps and fifty checkpoints to land in.
    let reference = root.path().join("reference");
    let started = Instant::now();
    let o = run(&train_args_batch(&model, &data, &reference, "1"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = started.elapsed();

    // SIGKILL at seeded delays within the run's length, each time resuming what is there.
    let out = root.path().join("killed");
    let mut rng = Rng::new(77);
    let mut kills = 0;
    for _ in 0..25 {
        let mut child = start_batch(&model, &data, &out, "1", &[]);
        std::thread::sleep(full.mul_f64(0.05 + 0.3 * rng.below(1000) as f64 / 1000.0));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        if kills == 6 {
            break;
        }
    }
    finish_batch(&model, &data, &out, "1");
    eprintln!("{kills} kills over a {full:?} run");
    assert!(kills >= 4, "only {kills} kills hit a running process");
    assert_same_result(&reference, &out, "after SIGKILLs");
    let reference = root.path().join("reference4");
    let o = run(&train_args(&model, &data, &reference), &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Aborts inside checkpoint writes: half-written, and between the two renames of the swap
    // (twice in a row, the second time while resuming from the `.old` copy the first left).
    for (i, faults) in
        [["checkpoint:3:partial", "checkpoint:2:partial"], ["checkpoint:2:swap", "checkpoint:1:swap"], ["best:1:swap", "best:1:partial"]]
            .iter()
            .enumerate()
    {
        let out = root.path().join(format!("fault{i}"));
        for fault in faults {
            let o = start(&model, &data, &out, &[("REPLORA_ABORT_IN_CHECKPOINT", fault)]).wait_with_output().unwrap();
            assert!(!o.status.success(), "{fault}: the run did not abort");
            assert!(checkpoint::existing(&out.join("checkpoint")).is_some(), "{fault}: no checkpoint to resume from");
        }
        finish(&model, &data, &out);
        assert_same_result(&reference, &out, &format!("after aborts at {faults:?}"));
    }
}

/// Runs `args` with writes past `bytes` failing (`RLIMIT_FSIZE`; a full disk, which also
/// blocks root, unlike file permissions).
fn run_with_file_size_limit(args: &[String], bytes: u64) -> Output {
    let mut cmd = replora();
    cmd.args(args);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn a_full_or_unwritable_output_directory_fails_clearly_and_keeps_the_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let (model, data) = fixture(root.path());
    let reference = root.path().join("reference");
    let o = run(&train_args(&model, &data, &reference), &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    // An output path below a regular file.
    let file = root.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let o = run(&train_args(&model, &data, &file.join("run")), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("a-file/run") && stderr(&o).contains("a-file is a file, not a directory"), "{}", stderr(&o));

    // A run stopped after its second checkpoint, resumed on a disk where nothing bigger than
    // 3 KiB can be written: the checkpoint files are bigger than that.
    let out = root.path().join("full");
    let o = start(&model, &data, &out, &[("REPLORA_ABORT_IN_CHECKPOINT", "checkpoint:3:partial")]).wait_with_output().unwrap();
    assert!(!o.status.success());
    let ckpt = out.join("checkpoint");
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files.iter().map(|f| (f.display().to_string(), std::fs::read(f).unwrap())).collect()
    };
    let before = snapshot(&ckpt);
    let sizes: Vec<(String, usize)> = before.iter().map(|(f, b)| (f.clone(), b.len())).collect();
    let top: Vec<(String, u64)> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.path().display().to_string(), e.metadata().unwrap().len()))
        .collect();
    assert!(before.iter().any(|(_, b)| b.len() > 3072), "the checkpoint files are too small to hit the limit: {sizes:?} {top:?}");
    let o = run_with_file_size_limit(&resume_args(&out), 3072);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("File too large") && e.contains(out.to_str().unwrap()), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(before == snapshot(&ckpt), "the checkpoint changed: {e}");

    finish(&model, &data, &out);
    assert_same_result(&reference, &out, "after a full disk");
}
