//! Visual question answering end to end through the command line, on a tiny ViT and a tiny
//! LLaMA: train (an adapter, prefix tuning, the projector alone), predict, evaluate, export,
//! merge, compare and sweep; bad data fails naming the file and line.

mod support;

use std::path::{Path, PathBuf};

use replora::run::RunSummary;
use support::{replora, stderr};

/// Tiny models (the LLaMA with 64 positions) and a JSONL of questions about 16 images.
struct Fixture {
    dir: tempfile::TempDir,
    llama: PathBuf,
    vit: PathBuf,
    data: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (llama, vit) = (dir.path().join("llama"), dir.path().join("vit"));
    support::tiny_llama_model(&llama);
    let file = llama.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    config["max_position_embeddings"] = 64.into();
    std::fs::write(&file, config.to_string()).unwrap();
    support::tiny_dinov2(&vit);
    std::fs::create_dir_all(dir.path().join("pics")).unwrap();
    let mut lines = String::new();
    for i in 0..16 {
        let image = image::RgbImage::from_fn(20, 20, |x, y| {
            let mut px = [30u8, 30, 30];
            px[i % 3] = 200;
            px[(i + 1) % 3] = ((x * 5 + y * 3 + i as u32 * 7) % 50) as u8;
            image::Rgb(px)
        });
        image.save(dir.path().join(format!("pics/{i}.png"))).unwrap();
        for question in ["w1 w2", "w3 w4"] {
            lines += &format!(
                "{}\n",
                serde_json::json!({"image": format!("pics/{i}.png"), "question": question, "answer": format!("w{}", 10 + i % 3)})
            );
        }
    }
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, lines).unwrap();
    Fixture { dir, llama, vit, data }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn train(f: &Fixture, out: &Path, method: &[&str]) -> std::process::Output {
    let args = [
        &["train", "--task", "vqa", "--model", s(&f.llama), "--vision-model", s(&f.vit), "--data", s(&f.data)][..],
        &["--image-size", "16", "--validation-share", "0.25", "--test-share", "0.25", "--epochs", "2", "--batch-size", "4"],
        &["--lr", "1e-2", "--out", s(out)],
        method,
    ]
    .concat();
    replora(&args)
}

fn summary(out: &Path) -> RunSummary {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn a_vqa_run_trains_predicts_evaluates_exports_and_merges() {
    let f = fixture();
    let out = f.dir.path().join("run");
    let o = train(&f, &out, &["--method", "lora", "--rank", "2"]);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    eprintln!("{}", stderr(&o));
    let sum = summary(&out);
    assert_eq!(sum.sizes.iter().sum::<usize>(), 32, "every question in one split: {:?}", sum.sizes);
    assert!(sum.test.exact_match.is_some(), "the test reports exact match");
    assert!(sum.trainable_params > 0 && sum.trainable_params < sum.total_params);
    for file in ["answers.json", "projector.safetensors", "adapter"] {
        assert!(out.join(file).exists(), "the run wrote no {file}");
    }

    let input = f.dir.path().join("questions.jsonl");
    let lines = [
        serde_json::json!({"image": s(&f.dir.path().join("pics/0.png")), "question": "w1 w2"}),
        serde_json::json!({"image": s(&f.dir.path().join("pics/1.png")), "question": "w3 w4"}),
    ];
    std::fs::write(&input, lines.map(|l| l.to_string()).join("\n")).unwrap();
    let o = replora(&["predict", "--run", s(&out), "--input", s(&input)]);
    assert!(o.status.success(), "predict failed: {}", stderr(&o));
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    let answers: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 2);
    for a in &answers {
        assert!(["w10", "w11", "w12"].contains(&a["answer"].as_str().unwrap()), "{a}");
        let p = a["probability"].as_f64().unwrap();
        assert!(p > 0.0 && p <= 1.0 && a["log_likelihood"].as_f64().unwrap() <= 0.0, "{a}");
    }

    let image = f.dir.path().join("pics/0.png");
    let o = replora(&["generate", "--run", s(&out), "--image", s(&image), "--max-new-tokens", "3", "w1 w2"]);
    assert!(o.status.success(), "generate --image failed: {}", stderr(&o));
    assert!(stderr(&o).contains("new tokens"), "{}", stderr(&o));
    let o = replora(&["generate", "--run", s(&out), "w1 w2"]);
    assert!(!o.status.success() && stderr(&o).contains("--image"), "{}", stderr(&o));
    let o = replora(&["generate", "--run", s(&out), "--image", s(&f.dir.path().join("pics/none.png")), "w1 w2"]);
    assert!(!o.status.success() && stderr(&o).contains("none.png"), "{}", stderr(&o));

    let o = replora(&["eval", "--run", s(&out), "--data", s(&f.data)]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));

    let peft = f.dir.path().join("peft");
    let o = replora(&["export", "--run", s(&out), "--out", s(&peft)]);
    assert!(o.status.success(), "export failed: {}", stderr(&o));
    for file in ["adapter_config.json", "adapter_model.safetensors", "projector.safetensors", "answers.json", "README.md"] {
        assert!(peft.join(file).is_file(), "export wrote no {file}");
    }
    let merged = f.dir.path().join("merged");
    let o = replora(&["merge", "--run", s(&out), "--out", s(&merged)]);
    assert!(o.status.success(), "merge failed: {}", stderr(&o));
    for file in ["config.json", "model.safetensors", "tokenizer.json", "projector.safetensors", "answers.json"] {
        assert!(merged.join(file).is_file(), "merge wrote no {file}");
    }
}

#[test]
fn prefix_tuning_and_the_projector_alone_train() {
    let f = fixture();
    for method in ["prefix", "probe"] {
        let out = f.dir.path().join(method);
        let o = train(&f, &out, &["--method", method, "--no-exact-match"]);
        assert!(o.status.success(), "{method} failed: {}", stderr(&o));
        let sum = summary(&out);
        assert!(sum.trainable_params > 0, "{method}: the projector trains");
        assert!(sum.test.exact_match.is_none());
    }
}

#[test]
fn bad_vqa_data_names_the_file_and_line() {
    let f = fixture();
    let mut text = std::fs::read_to_string(&f.data).unwrap();
    text += &format!("{}\n", serde_json::json!({"image": "pics/missing.png", "question": "w1", "answer": "w10"}));
    std::fs::write(&f.data, text).unwrap();
    let o = train(&f, &f.dir.path().join("bad"), &["--method", "lora"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&format!("{}:33:", s(&f.data))) && e.contains("missing.png") && e.contains("no such file"), "{e}");
}

#[test]
fn vqa_settings_that_cannot_work_are_refused_by_flag() {
    let f = fixture();
    let out = f.dir.path().join("refused");
    let cases: [(&[&str], &str); 4] = [
        (&["--visual-grid", "5"], "--visual-grid 5"),
        (&["--max-len", "60"], "--max-len 60"),
        (&["--pooling", "mean"], "--pooling is not for a vqa run"),
        (&["--train-images", "10"], "--train-images is not for a vqa run"),
    ];
    for (flags, expected) in cases {
        let o = train(&f, &out, &[&["--method", "lora"][..], flags].concat());
        assert!(!o.status.success(), "{flags:?} was accepted");
        assert!(stderr(&o).contains(expected), "{flags:?}: {}", stderr(&o));
        assert!(!out.join("run.json").exists(), "{flags:?}: a refused run wrote its directory");
    }
    // A vqa flag alone picks the task.
    let o = replora(&[
        "train",
        "--visual-grid",
        "9",
        "--model",
        s(&f.llama),
        "--vision-model",
        s(&f.vit),
        "--image-size",
        "16",
        "--out",
        s(&out),
    ]);
    assert!(stderr(&o).contains("--visual-grid 9"), "{}", stderr(&o));
}

/// `compare` runs the methods it is given on the same questions and prints one table.
#[test]
fn compare_runs_vqa_methods_side_by_side() {
    let f = fixture();
    let out = f.dir.path().join("compare");
    let args = [
        &["compare", "--task", "vqa", "--model", s(&f.llama), "--vision-model", s(&f.vit), "--data", s(&f.data)][..],
        &["--image-size", "16", "--validation-share", "0.25", "--test-share", "0.25", "--epochs", "1", "--batch-size", "4"],
        &["--methods", "lora,probe", "--rank", "2", "--out", s(&out)],
    ]
    .concat();
    let o = replora(&args);
    assert!(o.status.success(), "compare failed: {}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("| lora |") && table.contains("| probe |") && table.contains(", 3 answers, "), "{table}");
    for method in ["lora", "probe"] {
        let run = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(method));
        let run = run.unwrap_or_else(|| panic!("no {method} run in {}", out.display()));
        assert!(summary(&run).test.exact_match.is_some(), "{method}");
    }
}

/// A sweep grid runs vqa cells (`task = "vqa"` among the fixed flags) and tables them.
#[test]
fn a_sweep_runs_vqa_cells() {
    let f = fixture();
    let grid = f.dir.path().join("vqa.toml");
    let text = format!(
        "metric = \"accuracy\"\nbaseline = \"lora\"\n\n[fixed]\ntask = \"vqa\"\nmodel = {:?}\nvision_model = {:?}\ndata = {:?}\nimage_size = 16\n\
         validation_share = 0.25\ntest_share = 0.25\nepochs = 1\nbatch_size = 4\nrank = 2\n\n[[grid]]\nmethod = [\"lora\", \"probe\"]\nseed = [0]\n",
        s(&f.llama),
        s(&f.vit),
        s(&f.data)
    );
    std::fs::write(&grid, text).unwrap();
    let out = f.dir.path().join("sweep");
    let o = replora(&["sweep", "--grid", s(&grid), "--out", s(&out)]);
    assert!(o.status.success(), "sweep failed: {}", stderr(&o));
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 2, "{results}");
    assert!(results.contains("\"method\":\"probe\"") && results.contains("\"method\":\"lora\""), "{results}");
}
