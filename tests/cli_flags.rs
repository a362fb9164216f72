//! Flags with the real binary (issue 26): every flag either acts or is refused by name, and an
//! error about a flag, a model, a file or a setting says what is wrong with it and what the
//! flag takes.

use std::path::Path;

mod support;

use support::cli::{assert_fails, copy_run, fixture, replora, run_ok, stderr};

/// A finished multiple-choice run on the tiny LLaMA (made once).
fn lm_run() -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let f = fixture();
        let task = f.root.join("flags-task.json");
        support::choice_task(&task, 16);
        let out = f.path("flags-lm");
        run_ok(&support::cli::lm_train_args(f, &task, &out));
        out
    })
    .clone()
}

#[test]
fn eval_of_a_run_refuses_the_flags_it_would_not_use() {
    let f = fixture();
    let (run, lm, data) = (f.path("run"), lm_run(), f.path("data.jsonl"));
    assert_fails(&["eval", "--run", &lm, "--data", &data], &["--data is not for `eval --run` of a multiple-choice run", "--eval-tasks"]);
    assert_fails(
        &["eval", "--run", &run, "--eval-tasks", "bigbench:social_iqa"],
        &["--eval-tasks is not for `eval --run` of a classification run"],
    );
    assert_fails(
        &["eval", "--run", &run, "--max-len", "4", "--pooling", "mean", "--method", "dora"],
        &["--max-len, --pooling, --method are not for `eval --run`"],
    );
    // `none` is documented: no other task, so the run's own test split.
    let o = replora(&["eval", "--run", &lm, "--eval-tasks", "none"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("\"examples\": 4"), "{}", stderr(&o));
    let o = replora(&["eval", "--run", &run, "--data", &data]);
    assert!(o.status.success(), "--data acts on a classifier run: {}", stderr(&o));
}

#[test]
fn train_refuses_flags_of_other_methods_tasks_and_model_families() {
    let f = fixture();
    let out = f.path("flags-never-written");
    let train = |extra: &[&str]| f.train_args(&out, extra);
    let check = |args: Vec<String>, expected: &[&str]| assert_fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), expected);
    check(train(&["--hidden", "4"]), &["--hidden (a setting of --method replora) is not for --method lora"]);
    check(train(&["--targets", "query", "--targets-regex", ".*value"]), &["--targets-regex", "cannot be used with", "--targets"]);
    // The task is inferred from the image flag only without text flags: --image-size is blamed.
    let mut args: Vec<String> = train(&[]).into_iter().filter(|a| a != "--model").collect();
    args.retain(|a| a != &f.path("bert"));
    args.extend(["--image-size", "56"].map(String::from));
    check(args, &["--image-size is not for a classification run"]);
    check(train(&["--task", "classification", "--model", &f.path("llama")]), &["is a decoder (LLaMA)", "needs an encoder"]);
    let lm = ["train", "--task", "multiple-choice", "--model", &f.path("bert"), "--out", &out];
    assert_fails(&lm, &["is an encoder (BERT-style)", "needs a decoder"]);
    assert!(!Path::new(&out).exists(), "a refused train wrote its output directory");
}

#[test]
fn compare_lists_every_method_and_refuses_repeats_up_front() {
    let f = fixture();
    let out = f.path("flags-compare");
    let (model, data) = (f.path("bert"), f.path("data.jsonl"));
    let compare = |extra: &[&str]| {
        let mut args = vec!["compare", "--model", &model, "--data", &data, "--max-len", "16", "--epochs", "1", "--out", &out];
        args.extend(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let args = compare(&["--methods", "lora,bogus"]);
    let e = assert_fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), &["\"bogus\""]);
    for method in ["full", "probe", "lora", "dora", "replora", "adapter", "prefix"] {
        assert!(e.contains(method), "{method} not listed: {e}");
    }
    let args = compare(&["--methods", "lora,lora", "--seeds", "0,0"]);
    assert_fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), &["--methods names lora more than once"]);
    let args = compare(&["--methods", "lora", "--seeds", "0,0"]);
    assert_fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), &["--seeds names 0 more than once"]);
    assert!(!Path::new(&out).exists(), "a refused compare ran a cell");
}

#[test]
fn errors_say_what_tasks_a_config_file_and_an_output_take() {
    let f = fixture();
    let out = f.path("flags-never-written-2");
    let model = f.path("llama");
    let lm = |extra: &[&str]| {
        let mut args = vec!["train-lm", "--model", &model, "--max-len", "16", "--eval-tasks", "none", "--out", &out];
        args.extend(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let args = lm(&["--tasks", &f.path("data.jsonl")]);
    assert_fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &["data.jsonl", "a multiple-choice task (--tasks, --eval-tasks) is `bigbench:<task>` or a BIG-bench task.json"],
    );
    let args = lm(&["--tasks", ""]);
    assert_fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), &["--tasks names an empty task", "task.json"]);

    let config = f.root.join("nested.toml");
    std::fs::write(&config, "config = \"other.toml\"\n").unwrap();
    assert_fails(&["train", "--config", config.to_str().unwrap(), "--out", &out], &["nested.toml", "cannot name another config file"]);
    let config = f.root.join("bad-epochs.toml");
    std::fs::write(&config, "epochs = \"two\"\n").unwrap();
    assert_fails(&["train", "--config", config.to_str().unwrap(), "--out", &out], &["bad-epochs.toml", "--epochs", "two"]);

    let file = f.root.join("afile");
    std::fs::write(&file, "x").unwrap();
    let args = f.train_args(file.to_str().unwrap(), &[]);
    assert_fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), &["--out", "afile is a file, not a directory"]);
    assert!(!Path::new(&out).exists());
}

#[test]
fn an_edited_labels_file_is_named_with_what_no_longer_matches() {
    let f = fixture();
    let run = copy_run(f, "flags-labels");
    let labels = Path::new(&run).join("labels.json");
    let mut names: Vec<String> = serde_json::from_slice(&std::fs::read(&labels).unwrap()).unwrap();
    names.pop();
    std::fs::write(&labels, serde_json::to_string(&names).unwrap()).unwrap();
    assert_fails(&["predict", "--run", &run, "--text", "w1 w2"], &["labels.json", "lists 2 labels", "head.safetensors scores 3"]);
}

#[test]
fn a_diverging_run_blames_the_setting_it_uses() {
    let f = fixture();
    let out = f.path("flags-nan");
    let mut args = f.train_args(&out, &["--generator-lr-multiplier", "1e308"]);
    let method = args.iter().position(|a| a == "lora").unwrap();
    args[method] = "replora".into();
    let e = assert_fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &["--generator-lr-multiplier 1e308", "no checkpoint was written yet"],
    );
    assert!(!e.contains("set --grad-clip"), "clipping is on by default: {e}");
}
