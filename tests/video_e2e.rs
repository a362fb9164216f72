//! Video classification end to end through the command line, on a tiny ViT and a folder of
//! generated `.mp4` clips whose classes differ only in the order of their frames (moves left /
//! moves right): a LoRA run with temporal adapters trains, predicts a video's label, evaluates,
//! exports and merges; the merged model trains again as a base; bad input fails naming it.

mod support;

use std::path::Path;

use replora::data::video::{clips, write_mp4};
use replora::run::RunSummary;
use support::{replora, stderr};

/// `per_class` clips of each of the first two motions (moves left, moves right), each of a
/// different blocky garment.
fn clip_folder(dir: &Path, per_class: usize) {
    for class in 0..2 {
        let folder = dir.join(clips::MOTIONS[class]);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..per_class {
            let garment = image::RgbImage::from_fn(28, 28, |x, y| {
                let on = !(x / 7 + y / 7 + i as u32).is_multiple_of(3) && (4..24).contains(&y);
                image::Rgb([if on { 230 } else { 0 }; 3])
            });
            write_mp4(&folder.join(format!("{i}.mp4")), &clips::clip_frames(&garment, class, 5, i)).unwrap();
        }
    }
}

fn summary(out: &Path) -> RunSummary {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

/// A tiny run's flags; `extra` adds `--frames`, `--epochs` and the method.
fn train_args<'a>(model: &'a str, data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--task",
        "video",
        "--model",
        model,
        "--data",
        data,
        "--image-size",
        "16",
        "--batch-size",
        "4",
        "--lr",
        "0.02",
        "--seed",
        "3",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_video_run_trains_predicts_evaluates_exports_and_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data, out) = (tmp.path().join("vit"), tmp.path().join("clips"), tmp.path().join("run"));
    support::tiny_dinov2(&model);
    clip_folder(&data, 10);
    let (model_s, data_s, out_s) = (model.to_str().unwrap(), data.to_str().unwrap(), out.to_str().unwrap());

    let o = replora(&train_args(model_s, data_s, out_s, &["--temporal-adapters", "--frames", "4", "--epochs", "3"]));
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let s = summary(&out);
    assert_eq!(s.labels, ["moves-left", "moves-right"], "class names are the sorted subfolders");
    assert_eq!(s.sizes.iter().sum::<usize>(), 20);
    let history = &s.training.as_ref().unwrap().history;
    assert!(history.last().unwrap().loss.is_finite());
    let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let targets = spec.to_string();
    assert!(targets.contains("temporal_query") && targets.contains("temporal_value"), "--temporal-adapters targets: {targets}");

    let clip = data.join("moves-right/3.mp4");
    let listing = tmp.path().join("videos.txt");
    std::fs::write(&listing, format!("{}\n", clip.display())).unwrap();
    let o = replora(&["predict", "--run", out_s, "--input", listing.to_str().unwrap()]);
    assert!(o.status.success(), "predict failed: {}", stderr(&o));
    let answer: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert!(["moves-left", "moves-right"].contains(&answer["label"].as_str().unwrap()), "{answer}");
    let p: f64 = answer["probabilities"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert!((p - 1.0).abs() < 1e-4, "{answer}");

    let o = replora(&["eval", "--run", out_s, "--data", data_s]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));

    let exported = tmp.path().join("peft");
    let o = replora(&["export", "--run", out_s, "--out", exported.to_str().unwrap()]);
    assert!(o.status.success(), "export failed: {}", stderr(&o));
    assert!(exported.join("adapter_config.json").is_file());

    let merged = tmp.path().join("merged");
    let o = replora(&["merge", "--run", out_s, "--out", merged.to_str().unwrap()]);
    assert!(o.status.success(), "merge failed: {}", stderr(&o));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(merged.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["video_frames"], 4);

    // The merged video model is a base for another run (its temporal parts read back).
    let again = tmp.path().join("again");
    let o = replora(&train_args(
        merged.to_str().unwrap(),
        data_s,
        again.to_str().unwrap(),
        &["--method", "probe", "--frames", "4", "--epochs", "1"],
    ));
    assert!(o.status.success(), "training from the merged model failed: {}", stderr(&o));
}

#[test]
fn bad_video_input_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = (tmp.path().join("vit"), tmp.path().join("clips"));
    support::tiny_dinov2(&model);
    clip_folder(&data, 3);
    std::fs::write(data.join("moves-left/broken.mp4"), b"not a video at all").unwrap();
    let out = tmp.path().join("run");
    let o =
        replora(&train_args(model.to_str().unwrap(), data.to_str().unwrap(), out.to_str().unwrap(), &["--frames", "4", "--epochs", "1"]));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("broken.mp4") && e.contains("not a readable MP4"), "{e}");

    std::fs::remove_file(data.join("moves-left/broken.mp4")).unwrap();
    let out = tmp.path().join("run2");
    let o =
        replora(&train_args(model.to_str().unwrap(), data.to_str().unwrap(), out.to_str().unwrap(), &["--frames", "17", "--epochs", "1"]));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(".mp4") && e.contains("fewer than the 17"), "{e}");
}

/// `compare` and `sweep` run the video task through the same lifecycle as train: a method per
/// run, one table; a grid of cells with the task in `[fixed]`, selected on validation.
#[test]
fn compare_and_sweep_run_the_video_task() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = (tmp.path().join("vit"), tmp.path().join("clips"));
    support::tiny_dinov2(&model);
    clip_folder(&data, 6);
    let (model_s, data_s) = (model.to_str().unwrap(), data.to_str().unwrap());

    let compared = tmp.path().join("compare");
    let mut args = train_args(model_s, data_s, compared.to_str().unwrap(), &["--frames", "4", "--epochs", "1", "--methods", "probe,lora"]);
    args[0] = "compare";
    let o = replora(&args);
    assert!(o.status.success(), "compare failed: {}", stderr(&o));
    let table = std::fs::read_to_string(compared.join("compare.md")).unwrap();
    assert!(table.contains("probe") && table.contains("lora"), "{table}");
    let runs: Vec<_> = std::fs::read_dir(&compared).unwrap().flatten().filter(|e| e.path().join("summary.json").is_file()).collect();
    assert_eq!(runs.len(), 2, "one run per method");
    for run in runs {
        assert_eq!(summary(&run.path()).sizes.iter().sum::<usize>(), 12);
    }

    let grid = tmp.path().join("grid.toml");
    let text = format!(
        "metric = \"accuracy\"\nbaseline = \"lora\"\n\n[fixed]\ntask = \"video\"\nmodel = {model_s:?}\ndata = {data_s:?}\nimage_size = 16\nframes = 4\nepochs = 1\nbatch_size = 4\n\n[[grid]]\nmethod = [\"lora\"]\ntemporal_adapters = [true]\nlr = [0.01, 0.02]\nseed = [0]\n"
    );
    std::fs::write(&grid, text).unwrap();
    let out = tmp.path().join("sweep");
    let o = replora(&["sweep", "--grid", grid.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "sweep failed: {}", stderr(&o));
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "one row per learning rate");
    assert!(rows.iter().all(|r| r["validation"]["accuracy"].is_f64() && r["test"]["accuracy"].is_f64()), "{rows:?}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["selected"].as_array().unwrap().len(), 1, "{report}");
    let cells: Vec<_> = std::fs::read_dir(tmp.path().join("cells")).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
    assert_eq!(cells.len(), 2, "one cell per learning rate");
    let spec = std::fs::read_to_string(cells[0].path().join("run.json")).unwrap();
    assert!(spec.contains("\"frames\": 4") && spec.contains("temporal_query"), "{spec}");
}
