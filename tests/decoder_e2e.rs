//! SmolLM2-135M end to end through the CLI, on a two-layer slice to stay fast: a short
//! fine-tuning run lowers the answer-token loss, the run evaluates, generates, exports and
//! merges, and bad input fails clearly.

use std::path::Path;
use std::process::{Command, Output};

use replora::run::RunSummary;

fn replora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replora")).args(args).output().expect("the replora binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn summary(out: &Path) -> RunSummary {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

/// The data of the first test's run, and of the zero-shot evaluation of its merged model, which
/// must score the same test questions to be compared with it.
const DATA: &[&str] = &[
    "--tasks",
    "bigbench:strategyqa",
    "--eval-tasks",
    "none",
    "--train-per-task",
    "48",
    "--validation-per-task",
    "16",
    "--test-per-task",
    "8",
    "--max-len",
    "64",
    "--batch-size",
    "8",
    "--no-exact-match",
];

#[test]
fn short_fine_tuning_lowers_the_answer_loss_and_the_run_generates_exports_and_merges() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let train = ["train-lm", "--method", "replora", "--keep-layers", "2", "--epochs", "2", "--lr", "3e-3", "--out", out_s];
    let o = replora(&[&train[..], DATA].concat());
    assert!(o.status.success(), "train-lm failed: {}", stderr(&o));
    let s = summary(&out);
    let history = &s.training.as_ref().unwrap().history;
    eprintln!("validation answer losses {:?}", history.iter().map(|m| m.loss).collect::<Vec<_>>());
    assert!(history[1].loss < history[0].loss, "the answer-token loss did not fall: {history:?}");
    assert_eq!(s.sizes, [48, 16, 8]);
    assert_eq!(s.per_task.len(), 1);
    assert!(s.peak_rss_mib.is_some() && s.train_tokens_per_s.is_some_and(|t| t > 0.0));

    let o = replora(&["eval-lm", "--run", out_s]);
    assert!(o.status.success(), "eval-lm failed: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("strategyqa"));

    let o = replora(&["generate", "--run", out_s, "--max-new-tokens", "3", "Question: Is water wet?\nAnswer:"]);
    assert!(o.status.success(), "generate failed: {}", stderr(&o));

    let peft = dir.path().join("peft");
    let o = replora(&["export", "--run", out_s, "--out", peft.to_str().unwrap()]);
    assert!(o.status.success(), "export failed: {}", stderr(&o));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["task_type"], "CAUSAL_LM");
    assert_eq!(config["peft_type"], "LORA");

    let merged = dir.path().join("merged");
    let o = replora(&["merge", "--run", out_s, "--out", merged.to_str().unwrap()]);
    assert!(o.status.success(), "merge failed: {}", stderr(&o));
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(said.contains("q4_1 weights are written as f32"), "merge did not say the Q4_1 base became f32: {said}");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(merged.join(f).is_file(), "merge wrote no {f}");
    }
    let tokenizer_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("tokenizer_config.json")).unwrap()).unwrap();
    assert!(tokenizer_config["chat_template"].as_str().unwrap().contains("<|im_start|>"), "the chat template was not kept");
    // The merged directory is a model of its own: its zero-shot scores equal the adapted run's.
    let merged_s = merged.to_str().unwrap();
    // The run was trained with --no-exact-match; `eval --run` keeps its settings.
    let direct = replora(&["eval-lm", "--run", out_s]);
    let plain = replora(&[&["eval-lm", "--model", merged_s][..], DATA].concat());
    assert!(plain.status.success(), "eval-lm on the merged model failed: {}", stderr(&plain));
    assert!(direct.status.success(), "eval-lm --run failed: {}", stderr(&direct));
    // `eval` prints a table, then the test metrics as JSON.
    let metrics = |o: &Output| -> serde_json::Value {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let json = text.find("\n{").unwrap_or_else(|| panic!("no metrics JSON in:\n{text}"));
        serde_json::from_str(&text[json..]).unwrap()
    };
    let (direct, plain) = (metrics(&direct), metrics(&plain));
    assert_eq!(direct["examples"], 8, "{direct}");
    assert!(direct["accuracy"].is_f64() && direct["loss"].is_f64(), "{direct}");
    assert_eq!(direct["accuracy"], plain["accuracy"], "merged model scores differ: {direct} vs {plain}");
    let (a, b) = (direct["loss"].as_f64().unwrap(), plain["loss"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-4, "merged model answer losses differ: {a} vs {b}");
}

#[test]
fn a_full_fine_tuning_run_reloads_from_its_own_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("full");
    let out_s = out.to_str().unwrap();
    let o = replora(&[
        "train-lm",
        "--method",
        "full",
        "--keep-layers",
        "1",
        "--tasks",
        "bigbench:strategyqa",
        "--eval-tasks",
        "none",
        "--train-per-task",
        "8",
        "--validation-per-task",
        "8",
        "--test-per-task",
        "8",
        "--max-len",
        "48",
        "--batch-size",
        "8",
        "--lr",
        "1e-5",
        "--no-exact-match",
        "--out",
        out_s,
    ]);
    assert!(o.status.success(), "train-lm --method full failed: {}", stderr(&o));
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(out.join("model").join(f).is_file(), "the full run wrote no model/{f}");
    }
    let o = replora(&["generate", "--run", out_s, "--chat", "--max-new-tokens", "2", "Hi"]);
    assert!(o.status.success(), "generate --chat on a full run failed: {}", stderr(&o));
    let o = replora(&["export", "--run", out_s, "--out", dir.path().join("peft").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("no adapter"), "export of a full run: {}", stderr(&o));
}

#[test]
fn decoder_commands_fail_clearly_on_bad_input() {
    let o = replora(&["generate", "--model", "/no/such/model.gguf", "hello"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/no/such/model.gguf"), "{}", stderr(&o));

    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, b"not a gguf file at all").unwrap();
    let o = replora(&["generate", "--model", fake.to_str().unwrap(), "hello"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("fake.gguf"), "{}", stderr(&o));

    let o = replora(&[
        "train-lm",
        "--keep-layers",
        "1",
        "--tasks",
        "bigbench:no_such_task_here",
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no_such_task_here"), "{}", stderr(&o));

    let o = replora(&["eval-lm", "--run", dir.path().join("missing").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
}

#[test]
fn a_prefix_run_generates_exports_peft_prefix_tuning_and_refuses_merge() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prefix");
    let out_s = out.to_str().unwrap();
    let o = replora(&[
        "train-lm",
        "--method",
        "prefix",
        "--prefix-length",
        "4",
        "--keep-layers",
        "2",
        "--tasks",
        "bigbench:strategyqa",
        "--eval-tasks",
        "none",
        "--train-per-task",
        "16",
        "--validation-per-task",
        "8",
        "--test-per-task",
        "8",
        "--max-len",
        "48",
        "--batch-size",
        "8",
        "--lr",
        "1e-2",
        "--no-exact-match",
        "--out",
        out_s,
    ]);
    assert!(o.status.success(), "train-lm --method prefix failed: {}", stderr(&o));
    let o = replora(&["generate", "--run", out_s, "--max-new-tokens", "2", "Question: Is water wet?\nAnswer:"]);
    assert!(o.status.success(), "generate with a prefix failed: {}", stderr(&o));

    let peft = dir.path().join("peft");
    let o = replora(&["export", "--run", out_s, "--out", peft.to_str().unwrap()]);
    assert!(o.status.success(), "export failed: {}", stderr(&o));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["peft_type"].as_str(), config["num_virtual_tokens"].as_u64(), config["num_layers"].as_u64()),
        (Some("PREFIX_TUNING"), Some(4), Some(2))
    );
    // SmolLM2: 3 key/value heads of 64: token_dim 192, each layer's keys then values.
    assert_eq!((config["token_dim"].as_u64(), config["num_attention_heads"].as_u64()), (Some(192), Some(3)));
    let (tensors, _) = replora::weights::tensors::read(&peft.join("adapter_model.safetensors")).unwrap();
    assert_eq!(tensors["prompt_embeddings"].shape, [4, 2 * 2 * 192]);

    let o = replora(&["merge", "--run", out_s, "--out", dir.path().join("merged").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("prefix tuning"), "merge of a prefix run: {}", stderr(&o));
    assert!(!dir.path().join("merged").exists(), "a refused merge writes nothing");

    let o = replora(&[
        "train-lm",
        "--method",
        "prefix",
        "--prefix-length",
        "9000",
        "--keep-layers",
        "1",
        "--tasks",
        "bigbench:strategyqa",
        "--out",
        dir.path().join("long").to_str().unwrap(),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("shorten --max-len or --prefix-length"), "{}", stderr(&o));
}

/// `--quantize` chooses how the frozen base is held, `run.json` keeps the choice, and a reopened
/// run holds its base the same way: `eval --run` gives the test loss the training run reported.
#[test]
fn quantize_chooses_the_base_weights_and_a_run_keeps_the_choice() {
    let zero_shot_loss = |quantize: &str| {
        let o = replora(&[&["eval-lm", "--keep-layers", "1", "--quantize", quantize][..], DATA].concat());
        assert!(o.status.success(), "eval-lm --quantize {quantize} failed: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let json: serde_json::Value = serde_json::from_str(&text[text.find("\n{").expect("metrics JSON")..]).unwrap();
        json["loss"].as_f64().unwrap()
    };
    let (stored, widened, q4_0) = (zero_shot_loss("stored"), zero_shot_loss("none"), zero_shot_loss("q4_0"));
    assert!((stored - widened).abs() < 1e-4, "the stored Q4_1 blocks and their f32 widening differ: {stored} vs {widened}");
    assert!((stored - q4_0).abs() > 1e-3, "requantizing to Q4_0 changed nothing: {stored} vs {q4_0}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let train = ["train-lm", "--method", "lora", "--keep-layers", "1", "--quantize", "q8_0", "--out", out_s];
    let o = replora(&[&train[..], DATA].concat());
    assert!(o.status.success(), "train-lm --quantize q8_0 failed: {}", stderr(&o));
    let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(spec.to_string().matches("\"quantize\":\"q8_0\"").count(), 1, "run.json: {spec}");
    let o = replora(&["eval-lm", "--run", out_s]);
    assert!(o.status.success(), "eval-lm --run failed: {}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let json: serde_json::Value = serde_json::from_str(&text[text.find("\n{").expect("metrics JSON")..]).unwrap();
    let (reopened, trained) = (json["loss"].as_f64().unwrap(), summary(&out).test.loss);
    assert!((reopened - trained).abs() < 1e-6, "the reopened run's test loss {reopened} is not the run's {trained}");
}
