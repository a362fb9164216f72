//! Issue 26's silently wrong results and crashes, each reproduced with the real binary on a
//! tiny BERT and a tiny dataset: runs store absolute paths and content hashes of what they
//! read, a resumed run logs exactly what the uninterrupted one did, every number of an
//! evaluation comes from it, and bad data, damaged runs and sizes beyond the machine's memory
//! are refused by name instead of being scored, printed as `null` or aborting.

use std::path::Path;

mod support;

use support::cli::{Fixture, assert_fails, assert_output_fails, metric_rows, replora_in, run_ok, stdout};
use support::{copy_dir, replora, stderr};

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, value.to_string()).unwrap();
}

/// The first `n` lines of the fixture's data with `edit` applied to each label, as a new file.
fn data_variant(f: &Fixture, name: &str, n: usize, edit: impl Fn(usize, &str) -> String) -> String {
    let text = std::fs::read_to_string(f.root.join("data.jsonl")).unwrap();
    let lines: Vec<String> = text
        .lines()
        .take(n)
        .enumerate()
        .map(|(i, l)| {
            let mut row: serde_json::Value = serde_json::from_str(l).unwrap();
            row["label"] = edit(i, row["label"].as_str().unwrap()).into();
            row.to_string()
        })
        .collect();
    std::fs::write(f.root.join(name), lines.join("\n") + "\n").unwrap();
    f.path(name)
}

/// A run as replora 0.1 wrote it: no stored sources.
fn strip_sources(run: &Path) {
    let mut spec = read_json(&run.join("run.json"));
    spec.as_object_mut().unwrap().remove("sources");
    write_json(&run.join("run.json"), &spec);
}

/// Issue 26, wrong result 1: `eval --run` re-read its data relative to the current directory
/// and scored another file without a word.
#[test]
fn runs_store_absolute_paths_and_refuse_changed_files() {
    let f = Fixture::new();
    let args = [
        "train",
        "--model",
        "bert",
        "--data",
        "data.jsonl",
        "--max-len",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--method",
        "lora",
        "--out",
        "runs/base",
    ];
    let o = replora_in(&f.root, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = f.root.join("runs/base");
    let spec = read_json(&run.join("run.json"));
    let root = std::fs::canonicalize(&f.root).unwrap();
    assert_eq!(spec["data"], root.join("data.jsonl").to_str().unwrap());
    assert_eq!(spec["model"], root.join("bert").to_str().unwrap());
    let roles: Vec<&str> = spec["sources"].as_array().unwrap().iter().map(|s| s["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["model", "data"]);

    // From another directory holding another data.jsonl, the run still scores its own.
    let elsewhere = f.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("data.jsonl"), "{\"text\": \"w1 w2\", \"label\": \"label0\"}\n".repeat(12)).unwrap();
    let run_arg = run.to_str().unwrap();
    let o = replora_in(&elsewhere, &["eval", "--run", run_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    let trained = read_json(&run.join("summary.json"));
    assert!(stdout(&o).contains(&format!("\"examples\": {}", trained["test"]["examples"])), "{}", stdout(&o));

    // The data changed: eval (which re-reads it) refuses, naming it; predict reads only the model.
    let data = f.root.join("data.jsonl");
    let mut text = std::fs::read_to_string(&data).unwrap();
    text += "{\"text\": \"w3 w4\", \"label\": \"label1\"}\n";
    std::fs::write(&data, &text).unwrap();
    let data_abs = root.join("data.jsonl");
    assert_fails(&["eval", "--run", run_arg], &[data_abs.to_str().unwrap(), "the data changed"]);
    let o = replora(&["predict", "--run", run_arg, "--text", "w1 w2"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The model changed or is missing: every command that loads it refuses, naming it.
    let model = root.join("bert");
    let config = model.join("config.json");
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, original.replacen('{', "{\"note\": 1, ", 1)).unwrap();
    let peft = f.path("peft");
    for command in [vec!["predict", "--run", run_arg, "--text", "w1"], vec!["export", "--run", run_arg, "--out", &peft]] {
        assert_fails(&command, &[model.to_str().unwrap(), "the model changed"]);
    }
    std::fs::rename(&model, f.root.join("moved")).unwrap();
    assert_fails(&["predict", "--run", run_arg, "--text", "w1"], &[model.to_str().unwrap(), "is missing"]);
    std::fs::rename(f.root.join("moved"), &model).unwrap();
    std::fs::write(&config, original).unwrap();

    // A run written before sources were stored still loads, with a warning.
    strip_sources(&run);
    let o = replora(&["predict", "--run", run_arg, "--text", "w1 w2"]);
    assert!(o.status.success() && stderr(&o).contains("stores no content hashes"), "{}", stderr(&o));
}

/// Issue 26, crash 1: a label the run never saw panicked in burn's gather (exit 101).
#[test]
fn a_label_the_run_never_saw_is_an_error_naming_it() {
    let f = Fixture::new();
    let run = f.path("mut");
    run_ok(&f.train_args(&run, &[]));
    let data = f.root.join("data.jsonl");
    let mut text = std::fs::read_to_string(&data).unwrap();
    text += "{\"text\": \"w1 w2\", \"label\": \"Maybe\"}\n";
    std::fs::write(&data, &text).unwrap();
    // With stored hashes the changed file is refused; without (an older run) it is read with
    // the run's labels, and the new one is named.
    assert_fails(&["eval", "--run", &run], &["the data changed"]);
    strip_sources(Path::new(&run));
    assert_fails(&["eval", "--run", &run], &["unknown label \"Maybe\"", data.to_str().unwrap(), "label0, label1, label2"]);
    assert_fails(&["eval", "--run", &run, "--data", data.to_str().unwrap()], &["unknown label \"Maybe\"", "label0, label1, label2"]);
}

/// Issue 26, wrong result 2: a CSV's header became an input and each label was appended to its text.
#[test]
fn predict_reads_csv_and_tsv_inputs_by_their_format() {
    let f = Fixture::new();
    let run = f.path("run");
    run_ok(&f.train_args(&run, &[]));
    let texts = ["w1 w2 w3", "w14 w15, w16", "w27 w28"];
    for (name, sep) in [("in.csv", ","), ("in.tsv", "\t")] {
        let quote = |t: &str| if sep == "," && t.contains(',') { format!("\"{t}\"") } else { t.to_string() };
        let rows: Vec<String> = texts.iter().enumerate().map(|(i, t)| format!("{}{sep}label{i}", quote(t))).collect();
        std::fs::write(f.root.join(name), format!("text{sep}label\n{}\n", rows.join("\n"))).unwrap();
        let o = replora(&["predict", "--run", &run, "--input", &f.path(name)]);
        assert!(o.status.success(), "{}", stderr(&o));
        let answers: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let got: Vec<&str> = answers.iter().map(|a| a["text"].as_str().unwrap()).collect();
        assert_eq!(got, texts, "{name}");
    }
}

/// Issue 26, wrong result 5: `eval --run --data` printed the new accuracy beside a PPT from
/// the training-time test accuracy.
#[test]
fn every_number_of_an_evaluation_comes_from_it() {
    let f = Fixture::new();
    let run = f.path("run");
    run_ok(&f.train_args(&run, &[]));
    // Labels rotated on 7 examples: an accuracy unlike the test split's.
    let other = data_variant(&f, "other.jsonl", 7, |i, l| if i % 2 == 0 { l.replace('0', "1") } else { l.to_string() });
    let o = run_ok(&["eval", "--run", &run, "--data", &other].map(String::from));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    let cells = |line: &str| line.split('|').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect::<Vec<_>>();
    let (header, row) = (cells(lines[0]), cells(lines[2]));
    let column = |name: &str| row[header.iter().position(|h| h == name).unwrap()].clone();
    let metrics: serde_json::Value =
        serde_json::from_str(&lines[lines.iter().position(|l| l.starts_with('{')).unwrap()..].join("\n")).unwrap();
    let accuracy = metrics["accuracy"].as_f64().unwrap();
    let trained = read_json(&Path::new(&run).join("summary.json"));
    assert_ne!(accuracy, trained["test"]["accuracy"].as_f64().unwrap(), "pick data the run scores differently from its test split");
    let params: usize = column("trainable params").parse().unwrap();
    assert_eq!(column("PPT"), format!("{:.2}", replora::adapters::count::ppt(100.0 * accuracy, params)));
    assert_eq!(column("test accuracy %"), format!("{:.2}", 100.0 * accuracy));
}

/// Issue 26, wrong result 7: a one-class dataset trained and reported 100% accuracy.
#[test]
fn a_dataset_with_one_label_is_refused() {
    let f = Fixture::new();
    let one = data_variant(&f, "one.jsonl", 30, |_, _| "yes".into());
    let mut args = f.train_args(&f.path("never"), &[]);
    let at = args.iter().position(|a| a == "--data").unwrap();
    args[at + 1] = one.clone();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_fails(&args, &[&one, "only the label \"yes\"", "at least two labels"]);
    assert!(!f.root.join("never").exists());
}

/// Issue 26, wrong result 8: an adapter that overflows made `predict` print `null`
/// probabilities with exit 0.
#[test]
fn non_finite_outputs_are_refused_naming_the_trained_files() {
    let f = Fixture::new();
    let good = f.path("run");
    run_ok(&f.train_args(&good, &[]));
    let run = f.root.join("huge");
    copy_dir(Path::new(&good), &run);
    let file = run.join("adapter/adapter_model.safetensors");
    let (mut tensors, meta) = replora::weights::tensors::read(&file).unwrap();
    for (name, t) in tensors.iter_mut() {
        if name.contains("lora_") {
            t.data.iter_mut().for_each(|v| *v = 3e38);
        }
    }
    replora::weights::tensors::write(&file, &tensors, Some(meta)).unwrap();
    let r = run.to_str().unwrap();
    let adapter = run.join("adapter");
    let expected = ["are not finite", adapter.to_str().unwrap(), "head.safetensors"];
    assert_fails(&["predict", "--run", r, "--text", "w1 w2"], &expected);
    assert_fails(&["eval", "--run", r], &expected);
    assert_fails(&["logits", "--run", r, "--text", "w1 w2", "--out", &f.path("logits.safetensors")], &expected);
}

/// Issue 26, wrong result 4: the README said a resumed run is bit-identical, `metrics.jsonl`
/// included, but the running loss logged after a mid-epoch checkpoint lost the steps before it.
/// Also crash 3 and wrong result 8: progress files that do not fit the schedule are refused.
#[test]
fn a_resumed_run_logs_exactly_what_the_uninterrupted_one_did() {
    let f = Fixture::new();
    let flags = ["--checkpoint-every", "3", "--log-every", "2", "--epochs", "2"];
    let whole = f.path("whole");
    run_ok(&f.train_args(&whole, &flags));
    let expected = metric_rows(Path::new(&whole));

    // Killed while writing the second checkpoint (the end of epoch 1): the step-3 one remains.
    let killed = f.path("killed");
    let args = f.train_args(&killed, &flags);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_replora"))
        .args(&args)
        .env("REPLORA_ABORT_IN_CHECKPOINT", "checkpoint:2:partial")
        .output()
        .unwrap();
    assert!(!o.status.success() && stderr(&o).contains("REPLORA_ABORT_IN_CHECKPOINT"), "{}", stderr(&o));
    let progress = Path::new(&killed).join("checkpoint/progress.json");
    assert_eq!(read_json(&progress)["step"], 3);

    // Damaged copies of the killed run: refused by name, never a panic.
    let damages: [(&str, fn(&mut serde_json::Value)); 2] = [
        // Crash 3: an epoch past the last, no best epoch.
        ("restore the file, or delete", |p| {
            p["epoch"] = 2.into();
            p["best"] = serde_json::Value::Null;
        }),
        ("step 99999 does not match", |p| p["step"] = 99999.into()),
    ];
    for (i, (message, damage)) in damages.into_iter().enumerate() {
        let copy = f.root.join(format!("damaged{i}"));
        copy_dir(Path::new(&killed), &copy);
        let file = copy.join("checkpoint/progress.json");
        let mut p = read_json(&file);
        damage(&mut p);
        write_json(&file, &p);
        let c = copy.to_str().unwrap();
        let args = ["train", "--out", c, "--resume"];
        assert_output_fails(&args, replora(&args), &[file.to_str().unwrap(), message]);
    }

    run_ok(&["train", "--out", &killed, "--resume"].map(String::from));
    let resumed = metric_rows(Path::new(&killed));
    assert_eq!(resumed.len(), expected.len());
    for (a, b) in resumed.iter().zip(&expected) {
        assert_eq!(a, b, "the resumed log differs from the uninterrupted one (floats compared bit for bit)");
    }
}

/// Issue 26, crash 2: sizes inside the documented ranges aborted on allocation (exit 134), and
/// `--image-size 140000` aborted before its range check.
#[test]
fn sizes_beyond_this_machine_are_refused_with_what_fits() {
    let f = Fixture::new();
    let out = f.path("never");
    for (flags, expected) in [
        (["--method", "adapter", "--bottleneck", "100000000"], "at most --bottleneck "),
        (["--method", "replora", "--hidden", "100000000"], "at most --hidden "),
        (["--method", "prefix", "--prefix-length", "100000000"], "at most --prefix-length "),
    ] {
        let mut args = f.train_args(&out, &[]);
        let at = args.iter().position(|a| a == "--method").unwrap();
        args.drain(at..at + 2);
        args.extend(flags.map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_fails(&args, &["needs about", "MemTotal", expected]);
    }
    let dino = f.root.join("dino");
    support::tiny_dinov2(&dino);
    let image = |size: &str| {
        [
            "train",
            "--task",
            "image-classification",
            "--model",
            dino.to_str().unwrap(),
            "--data",
            "no-such-images",
            "--image-size",
            size,
            "--out",
            &out,
        ]
        .map(String::from)
    };
    let args = image("2800");
    assert_fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &["--image-size 2800", "needs about", "at most --image-size ", "or add --checkpoint-activations"],
    );
    // A video run's frames multiply the activations: refused naming --frames too.
    let mut video = image("700").to_vec();
    video[2] = "video".into();
    video.extend(["--frames", "64"].map(String::from));
    assert_fails(
        &video.iter().map(String::as_str).collect::<Vec<_>>(),
        &["--image-size 700 with --frames 64", "needs about", "MemTotal", "at most --image-size "],
    );
    let args = image("140000");
    assert_fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), &["--image-size must be at most 4096"]);
    assert!(!f.root.join("never").exists());
}
