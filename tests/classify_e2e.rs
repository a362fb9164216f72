//! End to end on the real model and a real task: training lowers the loss and beats chance,
//! a killed run resumes to the same result, exported adapters reproduce predictions, and
//! the CLI fails clearly on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use burn::prelude::*;
use replora::formats::peft;
use replora::models::bert::Bert;
use replora::run::RunSummary;
use replora::tasks::Classification;
use replora::tasks::heads::SequenceClassifier;

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::MIN, f32::max);
    let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
    row.iter().map(|v| (v - max).exp() / sum).collect()
}

fn replora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replora")).args(args).output().expect("the replora binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small, fast run: a fifth of intent_recognition's training split, short sequences.
fn small_args(out: &Path, method: &str, epochs: &str) -> Vec<String> {
    let out = out.to_str().unwrap();
    [
        "train",
        "--method",
        method,
        "--train-fraction",
        "0.25",
        "--epochs",
        epochs,
        "--batch-size",
        "16",
        "--max-len",
        "48",
        "--lr",
        "3e-3",
        "--seed",
        "5",
        "--out",
        out,
    ]
    .map(String::from)
    .to_vec()
}

fn summary(out: &Path) -> RunSummary {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn training_lowers_the_loss_and_beats_chance_and_exports_reproduce_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = replora(&small_args(&out, "lora", "3").iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let s = summary(&out);
    let history = &s.training.as_ref().unwrap().history;
    eprintln!("validation losses {:?}, test accuracy {}", history.iter().map(|m| m.loss).collect::<Vec<_>>(), s.test.accuracy);
    assert!(history.last().unwrap().loss < history[0].loss, "validation loss did not fall: {history:?}");
    // Majority class of intent_recognition is 122/693 = 17.6%.
    assert!(s.test.accuracy > 0.4, "test accuracy {} is not clearly above chance", s.test.accuracy);
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(log.lines().count() >= 3);

    // The PEFT export, imported into a fresh encoder + head, predicts exactly what the run does.
    let device = Device::flex();
    let (task, model) = replora::run::open::<Classification>(&out, &device, &[replora::run::sources::Role::Model]).unwrap();
    let texts: Vec<(String, Option<String>)> =
        ["Play some jazz by Miles Davis", "Will it rain in Boston tomorrow?", "Rate this novel five stars"]
            .map(|t| (t.to_string(), None))
            .to_vec();
    let expected: Vec<Vec<f32>> = task.logits(&model, &texts).unwrap().iter().map(|r| softmax(r)).collect();
    let export = dir.path().join("peft");
    let o = replora(&["export", "--run", out.to_str().unwrap(), "--out", export.to_str().unwrap()]);
    assert!(o.status.success(), "export failed: {}", stderr(&o));
    let (encoder, modules) =
        peft::import_with_modules(replora::models::encoder::Encoder::Bert(Bert::load(&task.model_dir, "bert.", &device).unwrap()), &export)
            .unwrap();
    let head = dir.path().join("head.safetensors");
    replora::weights::tensors::write(&head, &modules, None).unwrap();
    let reimported = SequenceClassifier::new(encoder, s.labels.len(), model.pooling, 0.0, 0).load_head(&head).unwrap();
    let got: Vec<Vec<f32>> = task.logits(&reimported, &texts).unwrap().iter().map(|r| softmax(r)).collect();
    assert_eq!(got.len(), texts.len());
    for (a, b) in got.iter().flatten().zip(expected.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "prediction after export/import {a} != {b}");
    }

    // `replora logits` of the run and of its export read back as a Hugging Face SEQ_CLS adapter
    // on the base model (`--peft`, the default CLS-pooler run) agree, and are what predict saw.
    let mut logits = vec![];
    for (name, source) in
        [("run", ["--run", out.to_str().unwrap(), "", ""]), ("peft", ["--peft", export.to_str().unwrap(), "--model", "minilm"])]
    {
        let file = dir.path().join(format!("{name}.safetensors"));
        let mut args: Vec<&str> = ["logits"].into_iter().chain(source.into_iter().filter(|a| !a.is_empty())).collect();
        args.extend(texts.iter().flat_map(|(t, _)| ["--text", t.as_str()]));
        args.extend(["--out", file.to_str().unwrap()]);
        let o = replora(&args);
        assert!(o.status.success(), "logits ({name}) failed: {}", stderr(&o));
        logits.push(replora::weights::tensors::read(&file).unwrap().0);
    }
    for (i, probs) in expected.iter().enumerate() {
        let (run, peft) = (&logits[0][&format!("logits.{i}")].data, &logits[1][&format!("logits.{i}")].data);
        let max = run.iter().copied().fold(f32::MIN, f32::max);
        let sum: f32 = run.iter().map(|v| (v - max).exp()).sum();
        for ((a, b), p) in run.iter().zip(peft).zip(probs) {
            assert!((a - b).abs() < 1e-5, "text {i}: logits --run {a} != logits --peft {b}");
            assert!(((a - max).exp() / sum - p).abs() < 1e-5, "text {i}: softmax of logits != predict");
        }
    }

    // `merge` writes a plain model directory that loads without adapter code; with the default
    // (CLS pooler) it is the BertForSequenceClassification transformers computes.
    let merged = dir.path().join("merged");
    let o = replora(&["merge", "--run", out.to_str().unwrap(), "--out", merged.to_str().unwrap()]);
    assert!(o.status.success(), "merge failed: {}", stderr(&o));
    assert!(Bert::load(&merged, "bert.", &device).is_ok());
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(merged.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
}

fn wait_for_epoch(out: &Path, epoch: usize, child: &mut std::process::Child) {
    let started = Instant::now();
    loop {
        let progress = std::fs::read_to_string(out.join("checkpoint/progress.json")).ok();
        if let Some(p) = progress.and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
            && p["epoch"].as_u64() >= Some(epoch as u64)
        {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(600), "no checkpoint after epoch {epoch}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_run_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let args = small_args(&full, "replora", "3");
    let o = replora(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));

    let killed = dir.path().join("killed");
    let args = small_args(&killed, "replora", "3");
    let mut child = Command::new(env!("CARGO_BIN_EXE_replora")).args(&args).spawn().unwrap();
    wait_for_epoch(&killed, 1, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let o = replora(&["train", "--out", killed.to_str().unwrap(), "--resume"]);
    assert!(o.status.success(), "resume failed: {}", stderr(&o));
    assert!(stderr(&o).contains("resuming from"), "{}", stderr(&o));

    let (a, b) = (summary(&full), summary(&killed));
    assert_eq!(a.training.as_ref().unwrap().history, b.training.as_ref().unwrap().history, "validation metrics differ after resume");
    assert_eq!(a.test, b.test);
    assert_eq!(a.training.as_ref().unwrap().steps, b.training.as_ref().unwrap().steps);
    // The resumed run's speed counts the training time of both processes, not only its own.
    let t = b.training.as_ref().unwrap();
    let expected = b.sizes[0] as f64 * t.epochs_run as f64 / t.wall_time_s;
    assert!((b.train_examples_per_s / expected - 1.0).abs() < 1e-9, "{} examples/s, expected {expected}", b.train_examples_per_s);
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn cli_errors_are_clear_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let fail = |args: &[&str], expected: &str| {
        let o = replora(args);
        assert!(!o.status.success(), "{args:?} should fail");
        let e = stderr(&o);
        assert!(e.contains(expected), "{args:?}: expected {expected:?} in {e:?}");
    };
    fail(&["train", "--model", "/nonexistent/model", "--out", out], "/nonexistent/model");
    let good = "{\"text\": \"hello there\", \"label\": \"a\"}\n{\"text\": \"bye\", \"label\": \"b\"}\n";
    let corrupt = write(dir.path(), "corrupt.jsonl", &format!("{good}{{\"text\": \"oops\"\n"));
    fail(&["train", "--data", corrupt.to_str().unwrap(), "--out", out], "corrupt.jsonl:3: invalid JSON");
    let empty = write(dir.path(), "empty.jsonl", "");
    fail(&["train", "--data", empty.to_str().unwrap(), "--out", out], "empty");
    fail(&["fetch", "no-such-asset"], "no-such-asset");
    fail(&["train", "--method", "replora", "--activation", "swish", "--out", out], "swish");
    fail(&["train", "--rank", "0", "--out", out], "rank");
    // NaN loss: an absurd learning rate without clipping blows the weights up.
    let o = replora(&[
        "train",
        "--train-fraction",
        "0.1",
        "--epochs",
        "2",
        "--lr",
        "1e30",
        "--grad-clip",
        "0",
        "--warmup-ratio",
        "0",
        "--max-len",
        "32",
        "--out",
        out,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("loss became"), "{}", stderr(&o));

    // A trained run rejects an evaluation file with a label it does not know.
    let run = dir.path().join("tiny");
    let o = replora(&["train", "--train-fraction", "0.1", "--epochs", "1", "--max-len", "32", "--out", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let unknown = write(
        dir.path(),
        "unknown.jsonl",
        "{\"text\": \"hi\", \"label\": \"get_weather\"}\n{\"text\": \"book it\", \"label\": \"order_pizza\"}\n",
    );
    fail(&["eval", "--run", run.to_str().unwrap(), "--data", unknown.to_str().unwrap()], "unknown label \"order_pizza\"");
}
