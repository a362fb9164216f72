//! The bad-input probe of the CLI (issue 11), each case reproduced with the real binary on a
//! tiny BERT / LLaMA and a tiny dataset: every bad command exits with an error (never 0, never
//! a panic's 101) whose message names the flag or file; run and output directories that hold
//! results are never silently replaced; a resumed run logs each step once.

use std::path::{Path, PathBuf};

mod support;

use support::cli::{assert_fails, copy_run, fixture, metric_rows, replora, run_ok, stderr};

#[test]
fn bad_flags_fail_at_parse_time_naming_the_flag() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["train", "--head-dropout", "2"], &["--head-dropout", "[0, 1)"]),
        (&["train", "--head-dropout=-0.5"], &["--head-dropout"]),
        (&["train", "--checkpoint-every", "0"], &["--checkpoint-every", "at least 1"]),
        (&["train", "--epochs", "0"], &["--epochs", "at least 1"]),
        (&["train", "--batch-size", "0"], &["--batch-size"]),
        (&["train", "--train-fraction", "1.5"], &["--train-fraction", "(0, 1]"]),
        (&["train", "--weight-decay=-1"], &["--weight-decay", ">= 0"]),
        (&["train", "--lr", "-1"], &["--lr", "> 0"]),
        (&["train", "--warmup-ratio", "1"], &["--warmup-ratio"]),
        (&["train", "--dropout", "1.5"], &["--dropout"]),
        (&["train", "--resume", "--overwrite"], &["--resume", "--overwrite"]),
        (&["generate", "--temperature=-1", "hi"], &["--temperature", ">= 0"]),
        (&["generate", "--top-p", "5", "hi"], &["--top-p", "(0, 1]"]),
        (&["train-lm", "--validation-per-task", "0"], &["--validation-per-task"]),
        // A value out of a closed set: clap's message, the choices as `--help` lists them.
        (&["train", "--pooling", "bogus"], &["invalid value 'bogus' for '--pooling <POOLING>'", "[possible values: cls, mean]"]),
        (&["train", "--task", "Classification"], &["[possible values: classification, multiple-choice, image-classification, vqa, video]"]),
        (&["train", "--best-metric", "macro_f1"], &["[possible values: accuracy, macro-f1, loss]", "similar value exists: 'macro-f1'"]),
        (&["train", "--output-scale", "half"], &["'--output-scale <OUTPUT_SCALE>'", "[possible values: one, inv_sqrt_h, inv_h]"]),
        // Parsed, then refused before any model or data is read.
        (&["train", "--method", "full", "--targets", "x"], &["--targets", "--method full"]),
        (&["train", "--split", "0.5", "0.2", "0.2"], &["--split", "sum to 1"]),
        (&["train", "--split", "0.5,0.5"], &["--split", "three fractions"]),
        (&["info", "--model", "/no/such/model.gguf"], &["/no/such/model.gguf", "no such model directory or file"]),
    ];
    // Train cases that get past parsing must not meet a run in the default --out.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("unused");
    for (args, expected) in cases {
        let mut args = args.to_vec();
        if args[0] == "train" && !args.contains(&"--resume") {
            args.extend(["--out", out.to_str().unwrap()]);
        }
        let e = assert_fails(&args, expected);
        assert!(!e.contains("unexpected argument"), "{args:?}: a negative number was taken for a flag: {e}");
    }
    assert!(!out.exists(), "a failed train wrote its output directory");
}

#[test]
fn settings_that_only_the_model_or_data_can_check_name_their_cause() {
    let f = fixture();
    let out = f.path("never-written");
    let train = |extra: &[&str]| f.train_args(&out, extra);
    let check = |args: Vec<String>, expected: &[&str]| {
        assert_fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), expected);
    };
    // Above the tiny model's 16 positions: was a panic in `predict`.
    let mut args = train(&[]);
    args.extend(["--max-len", "17"].map(String::from));
    check(args, &["--max-len 17", "16 positions"]);
    check(train(&["--layers", "99"]), &["--layers 99", "2 layers"]);
    check(train(&["--rank", "100000"]), &["rank 100000"]);
    // Every label once: validation and test would be empty, their metrics 0.
    let singletons = f.root.join("singletons.jsonl");
    let lines: String = (0..8).map(|i| format!("{{\"text\": \"w{i} w{}\", \"label\": \"only{i}\"}}\n", i + 1)).collect();
    std::fs::write(&singletons, lines).unwrap();
    let mut args = train(&[]);
    args.extend(["--data".to_string(), singletons.to_str().unwrap().to_string()]);
    check(args, &["validation split is empty", "\"only0\" (1)", "--split"]);
    assert!(!f.root.join("never-written").exists(), "a failed train wrote its output directory");

    // A config file key that is no flag names the file and the key.
    let config = f.root.join("typo.toml");
    std::fs::write(&config, "rank = 4\nlearning_rate = 0.1\n").unwrap();
    assert_fails(&["train", "--config", config.to_str().unwrap()], &["typo.toml", "\"learning_rate\""]);
}

#[test]
fn commands_on_runs_say_what_to_run_instead() {
    let f = fixture();
    let run = f.path("run");
    assert_fails(&["generate", "--run", &run, "hi"], &["classification run", "replora predict"]);
    assert_fails(&["eval-lm", "--run", &run], &["is a classification run", "not multiple-choice"]);

    let interrupted = copy_run(f, "interrupted");
    std::fs::remove_file(Path::new(&interrupted).join("summary.json")).unwrap();
    assert_fails(&["eval", "--run", &interrupted], &["unfinished run", "--resume"]);

    let empty = f.root.join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    assert_fails(&["predict", "--run", &run, "--input", empty.to_str().unwrap()], &["empty.txt", "no lines"]);

    // A run saved with a --max-len beyond the model (before it was checked) is refused on load.
    let too_long = copy_run(f, "too-long");
    let spec_file = Path::new(&too_long).join("run.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&spec_file).unwrap()).unwrap();
    spec["max_len"] = 17.into();
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    assert_fails(&["predict", "--run", &too_long, "--text", "w1 w2"], &["--max-len 17", "16 positions"]);

    // An adapter full of NaN: refused on load, naming the tensor and the file.
    let poisoned = copy_run(f, "poisoned");
    let file = Path::new(&poisoned).join("adapter/adapter_model.safetensors");
    let (mut tensors, meta) = replora::weights::tensors::read(&file).unwrap();
    let name = tensors.keys().next().unwrap().clone();
    tensors.values_mut().for_each(|t| t.data.iter_mut().for_each(|v| *v = f32::NAN));
    replora::weights::tensors::write(&file, &tensors, Some(meta)).unwrap();
    assert_fails(&["eval", "--run", &poisoned], &["adapter_model.safetensors", &name, "non-finite"]);

    // A truncated optimizer state names its file and says what is wrong with it.
    let corrupt = copy_run(f, "corrupt");
    std::fs::remove_file(Path::new(&corrupt).join("summary.json")).unwrap();
    let optimizer = Path::new(&corrupt).join("checkpoint/optimizer.bpk");
    let bytes = std::fs::read(&optimizer).unwrap();
    std::fs::write(&optimizer, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails(&["train", "--out", &corrupt, "--resume"], &["optimizer.bpk", "corrupt or truncated"]);
}

#[test]
fn a_device_this_build_lacks_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    assert_fails(
        &["train", "--device", "gpu", "--out", out],
        &["'--device <DEVICE>'", "unknown device \"gpu\": expected one of cpu, wgpu, vulkan, cuda, rocm, metal"],
    );
    assert_fails(&["eval", "--run", out, "--device", "cuda:x"], &["\"x\" is not a device index"]);
    // Data parallel lists: of one backend, and no longer than a step's micro-batches.
    assert_fails(&["train", "--out", out, "--device", "cpu,wgpu"], &["--device", "must all be of one backend (cpu and wgpu are not)"]);
    assert_fails(&["compare", "--out", out, "--device", "cpu,cpu"], &["--device lists 2 devices", "--grad-accum 1"]);
    assert_fails(&["eval", "--run", out, "--device", "cpu,cpu"], &["--device"]);
    // The default build has no GPU backend: every command that computes names the feature.
    if !cfg!(feature = "rocm") {
        let rocm = ["--device", "rocm:1"];
        let commands: [&[&str]; 11] = [
            &["train", "--out", out],
            &["compare", "--out", out],
            &["eval", "--run", out],
            &["predict", "--run", out, "--text", "a"],
            &["export", "--run", out, "--out", out],
            &["merge", "--run", out, "--out", out],
            &["logits", "--run", out, "--text", "a", "--out", out],
            &["generate", "hi"],
            &["bench"],
            &["sweep", "--grid", out, "--out", out],
            &["train-lm", "--out", out],
        ];
        for args in commands {
            assert_fails(&[args, &rocm].concat(), &["--device rocm:1", "built without the rocm backend", "--features rocm"]);
        }
    }
    // 16-bit products: refused on the CPU (its kernels multiply in f32).
    let bf16 = ["--precision", "bf16"];
    for args in [&["train", "--out", out][..], &["eval", "--run", out], &["generate", "hi"], &["bench"]] {
        assert_fails(&[args, &bf16].concat(), &["--precision bf16", "--device cpu multiplies in f32", "--quantize bf16"]);
    }
    assert_fails(&["train", "--out", out, "--precision", "f8"], &["'--precision <PRECISION>'", "f32", "bf16", "f16"]);
    assert!(!dir.path().join("out").exists(), "a refused command wrote its output");
}

#[test]
fn a_prompt_longer_than_the_context_window_is_an_error() {
    let f = fixture();
    let model = f.path("llama");
    let long: Vec<String> = (0..20).map(|i| format!("w{}", i % 30)).collect();
    assert_fails(&["generate", "--model", &model, &long.join(" ")], &["20 tokens", "context window is 16"]);
    let o = replora(&["generate", "--model", &model, "--max-new-tokens", "4", "w1 w2 w3"]);
    assert!(o.status.success(), "a short prompt generates: {}", stderr(&o));
}

/// The files of a run directory that must survive a refused or failed command, byte for byte.
fn snapshot(run: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    ["run.json", "labels.json", "summary.json", "head.safetensors", "adapter/adapter_model.safetensors", "adapter/adapter_config.json"]
        .iter()
        .map(|name| (run.join(name), std::fs::read(run.join(name)).unwrap()))
        .collect()
}

fn assert_unchanged(before: &[(PathBuf, Vec<u8>)], what: &str) {
    for (path, bytes) in before {
        assert!(std::fs::read(path).ok().as_ref() == Some(bytes), "{what} changed {}", path.display());
    }
}

#[test]
fn finished_runs_and_output_directories_are_never_silently_replaced() {
    let f = fixture();
    let run = copy_run(f, "protected");
    let run_path = Path::new(&run);
    let before = snapshot(run_path);

    // A second train into a finished run: refused, naming both ways forward.
    let o = replora(&f.train_args(&run, &["--seed", "3"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--resume") && stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert_unchanged(&before, "a refused train");
    // With --overwrite but an invalid configuration: it fails before writing anything.
    let o =
        replora(&f.train_args(&run, &["--overwrite", "--rank", "100000", "--seed", "3"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("rank 100000"), "{}", stderr(&o));
    assert_unchanged(&before, "a train that failed validation");

    // Export/merge never write into the run's own files, nor into a non-empty directory unasked.
    let adapter = run_path.join("adapter");
    assert_fails(&["export", "--run", &run, "--out", adapter.to_str().unwrap(), "--overwrite"], &["the run itself writes"]);
    assert_fails(&["merge", "--run", &run, "--out", &run, "--overwrite"], &["is a run directory"]);
    assert_unchanged(&before, "export into the run");
    let peft = f.path("peft-out");
    run_ok(&["export", "--run", &run, "--out", &peft].map(String::from));
    assert_fails(&["export", "--run", &run, "--out", &peft], &["not empty", "--overwrite"]);
    run_ok(&["export", "--run", &run, "--out", &peft, "--overwrite"].map(String::from));
    assert_fails(&["merge", "--run", &run, "--out", &peft], &["not empty", "--overwrite"]);

    // --overwrite with a valid configuration replaces the run.
    run_ok(&f.train_args(&run, &["--overwrite", "--seed", "3"]));
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(run_path.join("run.json")).unwrap()).unwrap();
    assert_eq!(spec["train"]["seed"], 3);

    // The decoder side goes through the same check (refused before any model is read).
    let o = replora(&["train-lm", "--model", &f.path("llama"), "--out", &run]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("already holds") && stderr(&o).contains("--overwrite"), "{}", stderr(&o));
}

#[test]
fn a_resumed_run_logs_each_step_once_and_names_the_flags_it_ignores() {
    let f = fixture();
    // A constant learning rate, so that the first epoch does not depend on the number of epochs.
    let flags = ["--decay", "constant", "--warmup-ratio", "0", "--log-every", "1"];
    let whole = f.path("whole");
    let mut args = f.train_args(&whole, &flags);
    args.extend(["--epochs", "2"].map(String::from));
    run_ok(&args);
    let expected = metric_rows(Path::new(&whole));

    // The state a kill during epoch 2 leaves: the checkpoint of epoch 1, and log rows after it.
    let killed = f.path("killed");
    run_ok(&f.train_args(&killed, &flags));
    let killed_path = Path::new(&killed);
    let checkpoint_step = metric_rows(killed_path).last().unwrap()["step"].as_u64().unwrap();
    let whole_log = std::fs::read_to_string(Path::new(&whole).join("metrics.jsonl")).unwrap();
    let after: Vec<&str> = whole_log
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap() > checkpoint_step)
        .take(3)
        .collect();
    assert_eq!(after.len(), 3);
    let log = killed_path.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text += &format!("{}\n{{\"step\": 9", after.join("\n"));
    std::fs::write(&log, text).unwrap();
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(killed_path.join("run.json")).unwrap()).unwrap();
    spec["train"]["epochs"] = 2.into();
    std::fs::write(killed_path.join("run.json"), spec.to_string()).unwrap();
    std::fs::remove_file(killed_path.join("summary.json")).unwrap();

    let o = run_ok(&["train", "--out", &killed, "--resume", "--lr", "0.5"].map(String::from));
    assert!(stderr(&o).contains("ignoring --lr 0.5"), "{}", stderr(&o));
    assert_eq!(metric_rows(killed_path), expected, "the resumed log differs from the uninterrupted one");
}

#[test]
fn decoder_runs_go_through_the_same_checks() {
    let f = fixture();
    let task = f.root.join("task.json");
    support::choice_task(&task, 16);
    let out = f.path("lm-run");
    let owned = support::cli::lm_train_args(f, &task, &out);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    // Beyond the tiny LLaMA's 16 positions: refused before anything is written.
    let mut too_long = args.to_vec();
    too_long.extend(["--max-len", "17"]);
    assert_fails(&too_long, &["--max-len 17", "16 positions"]);
    assert!(!Path::new(&out).exists(), "a failed train-lm wrote its output directory");
    run_ok(&owned);
    assert_fails(&args, &["already holds a finished run", "--overwrite"]);
    // The same verbs serve every task: `eval` and `predict` find the run's task themselves.
    let o = replora(&["eval", "--run", &out]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("\"examples\": 4"),
        "eval of a multiple-choice run: {}",
        stderr(&o)
    );
    assert_fails(&["predict", "--run", &out, "--text", "w1"], &["input 1", "\"question\"", "\"options\""]);
    let questions = f.root.join("questions.jsonl");
    std::fs::write(&questions, "{\"question\": \"w1 w2\", \"options\": [\"w10\", \"w12\"]}\n").unwrap();
    let o = replora(&["predict", "--run", &out, "--input", questions.to_str().unwrap()]);
    let answer: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    assert!(["w10", "w12"].contains(&answer["answer"].as_str().unwrap()), "{answer}");
    assert_eq!(answer["option_log_likelihoods"].as_array().unwrap().len(), 2, "{answer}");
    let long: Vec<String> = (0..20).map(|i| format!("w{}", i % 30)).collect();
    assert_fails(&["generate", "--run", &out, &long.join(" ")], &["20 tokens", "context window is 16"]);
    let o = replora(&["eval-lm", "--run", &out]);
    assert!(o.status.success(), "eval-lm: {}", stderr(&o));
}
