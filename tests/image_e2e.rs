//! Image classification end to end through the command line, on a tiny ViT and a generated image
//! folder: training lowers the validation loss, the run predicts, evaluates, exports (PEFT, head
//! in modules_to_save) and merges (`Dinov2ForImageClassification`), a linear probe trains only
//! its head, and bad input fails with a message naming it.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use replora::run::RunSummary;
use replora::weights::tensors;

const CLASSES: [&str; 3] = ["red", "green", "blue"];

fn replora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replora")).args(args).output().expect("the replora binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn train_args<'a>(model: &'a str, data: &'a str, out: &'a str, method: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--task",
        "image-classification",
        "--model",
        model,
        "--data",
        data,
        "--method",
        method,
        "--image-size",
        "16",
        "--train-images",
        "18",
        "--val-images",
        "6",
        "--test-images",
        "9",
        "--epochs",
        "4",
        "--batch-size",
        "6",
        "--lr",
        "0.02",
        "--seed",
        "3",
        "--out",
        out,
    ]
}

fn summary(out: &Path) -> RunSummary {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn an_image_run_trains_predicts_evaluates_exports_and_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data, out) = (tmp.path().join("vit"), tmp.path().join("images"), tmp.path().join("run"));
    support::tiny_dinov2(&model);
    support::image_folder(&data, &CLASSES, 12);
    let (model_s, data_s, out_s) = (model.to_str().unwrap(), data.to_str().unwrap(), out.to_str().unwrap());

    let o = replora(&train_args(model_s, data_s, out_s, "lora"));
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let s = summary(&out);
    assert_eq!(s.sizes, [18, 6, 9]);
    assert_eq!(s.labels, ["blue", "green", "red"], "class names are the sorted subfolders");
    let history = &s.training.as_ref().unwrap().history;
    assert!(history.last().unwrap().loss < history[0].loss, "validation loss did not fall: {history:?}");

    let listing = tmp.path().join("images.txt");
    std::fs::write(&listing, format!("{}\n{}\n", data.join("red/0.png").display(), data.join("blue/1.png").display())).unwrap();
    let o = replora(&["predict", "--run", out_s, "--input", listing.to_str().unwrap()]);
    assert!(o.status.success(), "predict failed: {}", stderr(&o));
    let answers: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 2);
    for a in &answers {
        assert!(CLASSES.contains(&a["label"].as_str().unwrap()), "{a}");
        let total: f64 = CLASSES.iter().map(|c| a["probabilities"][c].as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");
    }

    let o = replora(&["eval", "--run", out_s, "--data", data_s]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    let other = tmp.path().join("other");
    support::image_folder(&other, &["red", "purple"], 2);
    let o = replora(&["eval", "--run", out_s, "--data", other.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("purple"), "an unknown class must be named: {}", stderr(&o));

    let export = tmp.path().join("peft");
    let o = replora(&["export", "--run", out_s, "--out", export.to_str().unwrap()]);
    assert!(o.status.success(), "export failed: {}", stderr(&o));
    let (t, _) = tensors::read(&export.join("adapter_model.safetensors")).unwrap();
    // transformers 5's module names (it renames Dinov2's `attention.attention.value` on load).
    assert!(t.contains_key("base_model.model.dinov2.encoder.layer.1.attention.v_proj.lora_B.weight"), "{:?}", t.keys());
    assert_eq!(t["base_model.model.classifier.weight"].shape, [3, 32], "the head as Dinov2ForImageClassification holds it");

    let merged = tmp.path().join("merged");
    let o = replora(&["merge", "--run", out_s, "--out", merged.to_str().unwrap()]);
    assert!(o.status.success(), "merge failed: {}", stderr(&o));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(merged.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "Dinov2ForImageClassification");
    assert_eq!(config["image_size"], 16, "the merged position table is the run's");
}

#[test]
fn a_linear_probe_trains_only_its_head_and_has_nothing_to_export() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data, out) = (tmp.path().join("vit"), tmp.path().join("images"), tmp.path().join("run"));
    support::tiny_dinov2(&model);
    support::image_folder(&data, &CLASSES, 12);
    let o = replora(&train_args(model.to_str().unwrap(), data.to_str().unwrap(), out.to_str().unwrap(), "probe"));
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let s = summary(&out);
    assert_eq!((s.method.as_str(), s.trainable_params), ("probe", 16 * 3 + 3), "only the head (hidden 16 -> 3 classes) trains");
    let o = replora(&["export", "--run", out.to_str().unwrap(), "--out", tmp.path().join("peft").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("linear probe"), "{}", stderr(&o));
    let o = replora(&["merge", "--run", out.to_str().unwrap(), "--out", tmp.path().join("merged").to_str().unwrap()]);
    assert!(o.status.success(), "merge failed: {}", stderr(&o));
}

#[test]
fn bad_image_input_names_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = (tmp.path().join("vit"), tmp.path().join("images"));
    support::tiny_dinov2(&model);
    // 11 a class: the protocol (18 + 6 + 9) draws every image, the truncated one included.
    support::image_folder(&data, &CLASSES, 11);
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let out = tmp.path().join("run");
    let o_s = out.to_str().unwrap();

    let mut args = train_args(m, d, o_s, "lora");
    args.splice(args.iter().position(|a| *a == "16").unwrap()..=args.iter().position(|a| *a == "16").unwrap(), ["15"]);
    let o = replora(&args);
    assert!(!o.status.success() && stderr(&o).contains("multiple of the patch size 4"), "{}", stderr(&o));

    let mut args = train_args(m, d, o_s, "lora");
    args.extend(["--max-len", "64"]);
    let o = replora(&args);
    assert!(!o.status.success() && stderr(&o).contains("--max-len is not for an image-classification run"), "{}", stderr(&o));

    let png = data.join("green/3.png");
    let bytes = std::fs::read(&png).unwrap();
    std::fs::write(&png, &bytes[..bytes.len() / 2]).unwrap();
    let o = replora(&train_args(m, d, o_s, "lora"));
    assert!(!o.status.success() && stderr(&o).contains("3.png"), "a truncated PNG must be named: {}", stderr(&o));
    assert!(!out.join("summary.json").exists());

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = replora(&train_args(m, empty.to_str().unwrap(), o_s, "lora"));
    assert!(!o.status.success() && stderr(&o).contains("empty"), "an empty folder must be named: {}", stderr(&o));
}
