//! Watching runs (issue 34) with the real binary on tiny runs: `replora runs` lists finished,
//! interrupted and failed runs, a run of an older version and a corrupt one; `replora plot`
//! draws several runs on shared axes; `train` writes `curves.png`; `--quiet` silences progress.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::cli::{Fixture, assert_fails, copy_dir, replora, run_ok, stderr, stdout};

fn replora_with(args: &[String], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replora")).args(args).envs(env.iter().copied()).output().expect("the replora binary runs")
}

/// Runs `args` with writes past `bytes` failing (`RLIMIT_FSIZE`, as a full disk).
fn replora_with_file_size_limit(args: &[String], bytes: u64) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_replora"));
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

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The runs of one folder: finished (LoRA, and DoRA with `--quiet`), interrupted after its second
/// checkpoint, failed on a full disk when resumed, one as replora 0.1 wrote it, and a corrupt one.
#[test]
fn runs_lists_every_kind_of_run_and_names_what_it_cannot_read() {
    let f = Fixture::new();
    let runs = f.root.join("runs");
    let path = |name: &str| runs.join(name).to_str().unwrap().to_string();
    let finished = run_ok(&f.train_args(&path("lora"), &["--epochs", "2"]));
    assert!(runs.join("lora/curves.png").is_file(), "train draws the run's curves: {}", stderr(&finished));
    let png = std::fs::read(runs.join("lora/curves.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // Progress lines every step where stderr is no terminal (REPLORA_PROGRESS_EVERY=0), none with --quiet.
    let every_step = [("REPLORA_PROGRESS_EVERY", "0")];
    let loud = replora_with(&f.train_args(&path("dora"), &["--method", "dora", "--epochs", "2", "--rank", "2"]), &every_step);
    assert!(loud.status.success(), "{}", stderr(&loud));
    assert!(stderr(&loud).contains("step 1/"), "progress lines: {}", stderr(&loud));
    let quiet_args = f.train_args(&path("dora"), &["--method", "dora", "--epochs", "2", "--rank", "2", "--overwrite", "--quiet"]);
    let quiet = replora_with(&quiet_args, &every_step);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert!(!stderr(&quiet).contains("step 1/"), "--quiet printed progress: {}", stderr(&quiet));
    assert!(stderr(&quiet).contains("epoch 2: validation"), "--quiet keeps the results: {}", stderr(&quiet));
    // DoRA's magnitudes move away from ||W0|| as it trains, and the metrics say how far.
    let metrics = std::fs::read_to_string(runs.join("dora/metrics.jsonl")).unwrap();
    let drift: Vec<f64> = metrics.lines().filter_map(|l| serde_json::from_str::<Value>(l).unwrap()["magnitude_drift"].as_f64()).collect();
    assert!(!drift.is_empty() && drift.iter().all(|d| d.is_finite()) && *drift.last().unwrap() > 0.0, "{metrics}");

    let interrupted = f.train_args(&path("interrupted"), &["--epochs", "2", "--log-every", "1", "--checkpoint-every", "2"]);
    let o = replora_with(&interrupted, &[("REPLORA_ABORT_IN_CHECKPOINT", "checkpoint:3:partial")]);
    assert!(!o.status.success(), "the run did not abort: {}", stderr(&o));
    copy_dir(&runs.join("interrupted"), &runs.join("failed"));
    let o = replora_with_file_size_limit(&["train", "--out", &path("failed"), "--resume"].map(String::from), 3 * 1024);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(runs.join("failed/failed.json").is_file(), "{}", stderr(&o));

    // replora 0.1: no task tag, format or sources in run.json; a summary without its training report.
    copy_dir(&runs.join("lora"), &runs.join("old"));
    let mut spec = json(&runs.join("old/run.json"));
    for key in ["task", "run_format", "sources"] {
        spec.as_object_mut().unwrap().remove(key);
    }
    std::fs::write(runs.join("old/run.json"), spec.to_string()).unwrap();
    let mut summary = json(&runs.join("old/summary.json"));
    for key in ["training", "trainable_percent", "peak_rss_mib"] {
        summary.as_object_mut().unwrap().remove(key);
    }
    std::fs::write(runs.join("old/summary.json"), summary.to_string()).unwrap();
    std::fs::create_dir_all(runs.join("nested/corrupt")).unwrap();
    std::fs::write(runs.join("nested/corrupt/run.json"), "{\"task\": \"classification\", \"model\": ").unwrap();
    std::fs::create_dir_all(runs.join("not-a-run")).unwrap();

    let o = run_ok(&["runs".to_string(), runs.to_str().unwrap().to_string()]);
    let table = stdout(&o);
    let row = |name: &str| table.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name} row:\n{table}"));
    let lora_test = json(&runs.join("lora/summary.json"))["test"]["accuracy"].as_f64().unwrap();
    assert!(row("lora").contains("finished") && row("lora").contains(&format!("acc {lora_test:.4}")), "{table}");
    assert!(row("lora").contains("classification") && row("lora").contains(" lora ") && row("lora").contains("ep 2"), "{table}");
    assert!(row("dora").contains(" dora ") && row("dora").contains(" 2 "), "rank 2: {table}");
    let interrupted_step = json(&runs.join("interrupted/checkpoint/progress.json"))["step"].as_u64().unwrap();
    assert!(row("interrupted").contains("interrupted at step "), "{table}");
    assert!(row("failed").contains("failed at step "), "{table}");
    assert!(row("old").contains("finished") && row("old").contains(" lora "), "{table}");
    assert!(table.contains("cannot read nested/corrupt: ") && table.contains("run.json"), "{table}");
    assert!(!table.contains("not-a-run"), "{table}");

    let o = run_ok(&["runs".to_string(), runs.to_str().unwrap().to_string(), "--json".into()]);
    let lines: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let entry = |name: &str| lines.iter().find(|l| l["dir"].as_str().unwrap().ends_with(&format!("/{name}"))).unwrap().clone();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert_eq!(entry("lora")["status"], "finished");
    assert_eq!(entry("lora")["test"]["accuracy"].as_f64(), Some(lora_test));
    let best = json(&runs.join("lora/summary.json"))["training"]["best_validation"]["accuracy"].as_f64();
    assert_eq!(entry("lora")["best_validation"].as_f64(), best);
    assert_eq!(entry("lora")["rank"], 8);
    assert_eq!(entry("interrupted")["status"], "interrupted");
    let logged_last = std::fs::read_to_string(runs.join("interrupted/metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["step"].as_u64())
        .max();
    assert_eq!(entry("interrupted")["step"].as_u64(), logged_last);
    assert!(logged_last.unwrap() > interrupted_step, "the killed run logged past its checkpoint");
    assert_eq!(entry("failed")["status"], "failed");
    assert!(entry("failed")["error"].as_str().unwrap().contains("too large"), "the full disk's error: {}", entry("failed"));
    assert_eq!(entry("dora")["rank"], 2);
    assert_eq!(entry("dora")["method"], "dora");
    assert_eq!(entry("old")["status"], "finished");
    assert_eq!(entry("old")["task"], "classification");
    assert_eq!(entry("old")["trainable_percent"], Value::Null);
    assert_eq!(entry("corrupt")["status"], "unreadable");
    assert!(entry("corrupt")["error"].as_str().unwrap().contains("run.json"), "{}", entry("corrupt"));

    assert_fails(&["runs", f.root.join("nowhere").to_str().unwrap()], &["nowhere", "no such directory"]);
}

#[test]
fn plot_draws_several_runs_on_shared_axes() {
    let f = Fixture::new();
    let (a, b) = (f.path("a"), f.path("b"));
    run_ok(&f.train_args(&a, &["--log-every", "1"]));
    run_ok(&f.train_args(&b, &["--method", "replora", "--log-every", "1"]));
    let out = f.root.join("plots/curves.png");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    run_ok(&["plot", "--run", &a, "--run", &b, "--out", out.to_str().unwrap()].map(String::from));
    assert_eq!(&std::fs::read(&out).unwrap()[1..4], b"PNG");
    let svg = std::fs::read_to_string(out.with_extension("svg")).unwrap();
    for label in ["a train", "a validation", "b train", "b accuracy"] {
        assert!(svg.contains(label), "{label} not in the legend");
    }
    assert_fails(&["plot", "--run", f.root.to_str().unwrap(), "--out", out.to_str().unwrap()], &["holds no run"]);
    assert_fails(&["plot", "--run", &a, "--out", &f.path("x.jpg")], &["--out", ".png"]);
    assert_fails(&["plot", "--run", &a, "--out", &format!("{a}/curves.png")], &["curves.png", "the run itself writes"]);
    let o = replora(&["plot", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "--run is required");
}
