//! `replora sweep` with the real binary on a tiny BERT and dataset: every cell runs once and
//! lands in results.jsonl, the report selects on validation and pairs by seed, a second call
//! reruns nothing, a bad grid fails before any run, a failing cell is recorded and skipped, and
//! a compare over the multiple-choice task goes through the same lifecycle.

use std::path::Path;

mod support;

use support::cli::{replora, stderr};

fn write_grid(path: &Path, model: &Path, data: &Path, extra: &str) {
    let grid = format!(
        "baseline = \"lora\"\n{extra}\n[fixed]\nmodel = {:?}\ndata = {:?}\nmax_len = 16\nepochs = 2\nbatch_size = 4\n\n[grid]\nmethod = [\"lora\", \"replora\"]\nlr = [0.002, 0.004]\nseed = [0, 1]\n",
        model.to_str().unwrap(),
        data.to_str().unwrap()
    );
    std::fs::write(path, grid).unwrap();
}

#[test]
fn a_sweep_runs_each_cell_once_selects_on_validation_and_pairs_by_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (dir.path().join("bert"), dir.path().join("data.jsonl"));
    support::tiny_bert_model(&model);
    support::word_dataset(&data, 3, 10);
    let grid = dir.path().join("g.toml");
    write_grid(&grid, &model, &data, "");
    let out = dir.path().join("sweep");
    let args = ["sweep", "--grid", grid.to_str().unwrap(), "--out", out.to_str().unwrap()];
    let o = replora(&args);
    assert!(o.status.success(), "sweep failed: {}", stderr(&o));
    assert!(stderr(&o).contains("8 cells, 0 finished, 8 to run"), "{}", stderr(&o));

    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 8);
    let mut cells: Vec<(String, String, u64)> = rows
        .iter()
        .map(|r| (r["method"].as_str().unwrap().to_string(), r["flags"]["lr"].as_str().unwrap().to_string(), r["seed"].as_u64().unwrap()))
        .collect();
    cells.sort();
    cells.dedup();
    assert_eq!(cells.len(), 8, "every (method, lr, seed) once: {cells:?}");
    assert!(rows.iter().all(|r| r["validation"]["accuracy"].is_f64() && r["test"]["accuracy"].is_f64()));

    // Selection: per method, the lr with the best mean validation accuracy; RepLoRA paired with LoRA.
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let selected = report["selected"].as_array().unwrap();
    assert_eq!(selected.len(), 2, "{selected:?}");
    let mean = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum::<f64>() / 2.0;
    for s in selected {
        let method = s["config"]["method"].as_str().unwrap();
        let best = report["configurations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["method"] == method)
            .map(|c| mean(&c["validation"]))
            .fold(f64::MIN, f64::max);
        assert_eq!(mean(&s["config"]["validation"]), best, "{method}: not the best validation mean");
    }
    let rep = selected.iter().find(|s| s["config"]["method"] == "replora").unwrap();
    let lora = selected.iter().find(|s| s["config"]["method"] == "lora").unwrap();
    let diff = rep["vs_baseline"].as_array().unwrap();
    let by_seed: f64 = (0..2)
        .map(|i| rep["config"]["test_accuracy"][i].as_f64().unwrap() - lora["config"]["test_accuracy"][i].as_f64().unwrap())
        .sum::<f64>()
        * 100.0
        / 2.0;
    assert!((diff[0].as_f64().unwrap() - by_seed).abs() < 1e-9, "paired mean {diff:?} != {by_seed}");
    assert_eq!(diff[3], 2, "two seed pairs");
    assert!(lora["vs_baseline"].is_null());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Selected configurations") && md.contains("| replora |") && md.contains("(n=2)"), "{md}");
    for plot in ["report.png", "report.svg"] {
        assert!(std::fs::metadata(out.join(plot)).unwrap().len() > 1000, "{plot} missing or empty");
    }

    // A second call reads the finished cells back and trains nothing.
    let o = replora(&args);
    assert!(o.status.success() && stderr(&o).contains("8 finished, 0 to run") && !stderr(&o).contains("== sweep ["), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().count(), 8);

    // Another grid over some of the same cells finds them in the shared store.
    let text = std::fs::read_to_string(&grid).unwrap().replace("method = [\"lora\", \"replora\"]", "method = [\"lora\"]");
    let grid2 = dir.path().join("g2.toml");
    std::fs::write(&grid2, text).unwrap();
    let o = replora(&["sweep", "--grid", grid2.to_str().unwrap(), "--out", dir.path().join("sweep2").to_str().unwrap()]);
    assert!(o.status.success() && stderr(&o).contains("4 cells, 4 finished, 0 to run"), "{}", stderr(&o));
}

#[test]
fn a_bad_grid_fails_before_any_run() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (dir.path().join("bert"), dir.path().join("data.jsonl"));
    let grid = dir.path().join("bad.toml");
    for (extra, expected) in [("[oops]\nx = 1", "unknown field"), ("", "lr")] {
        write_grid(&grid, &model, &data, extra);
        if extra.is_empty() {
            let text = std::fs::read_to_string(&grid).unwrap().replace("lr = [0.002, 0.004]", "lr = [0.002, -1.0]");
            std::fs::write(&grid, text).unwrap();
        }
        let out = dir.path().join("never");
        let o = replora(&["sweep", "--grid", grid.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(o.status.code() == Some(1), "{extra:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(expected) && stderr(&o).contains(if extra.is_empty() { "sweep cell" } else { "bad.toml" }),
            "{}",
            stderr(&o)
        );
        assert!(!dir.path().join("cells").exists(), "a bad grid started runs");
    }
}

#[test]
fn compare_runs_the_multiple_choice_task_through_the_same_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("llama");
    support::tiny_llama_model(&model);
    let task = dir.path().join("task.json");
    support::choice_task(&task, 24);
    let out = dir.path().join("cmp");
    let o = replora(&[
        "compare-lm",
        "--model",
        model.to_str().unwrap(),
        "--tasks",
        task.to_str().unwrap(),
        "--eval-tasks",
        "none",
        "--methods",
        "base,lora",
        "--seeds",
        "0,1",
        "--train-fractions",
        "0.5,1",
        "--train-per-task",
        "12",
        "--validation-per-task",
        "4",
        "--test-per-task",
        "8",
        "--max-len",
        "16",
        "--batch-size",
        "4",
        "--no-exact-match",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "compare-lm failed: {}", stderr(&o));
    let runs: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    // base once; lora at 2 seeds x 2 fractions, with 6 and 12 training questions.
    assert_eq!(runs.len(), 5);
    let sizes: Vec<u64> = runs.iter().filter(|r| r["method"] == "lora").map(|r| r["sizes"][0].as_u64().unwrap()).collect();
    assert_eq!(sizes, [6, 6, 12, 12]);
    for name in ["lora-seed0-frac0.5", "lora-seed1-frac0.5", "lora-seed0", "lora-seed1"] {
        assert!(out.join(name).join("summary.json").is_file(), "no run {name}");
    }
    let table = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(table.contains("| lora | 0.5 | 2 |") && table.contains("| base | 1 | 1 |"), "{table}");
}

#[test]
fn a_failing_cell_is_recorded_reported_and_retried_while_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let (model, good, bad) = (dir.path().join("bert"), dir.path().join("good.jsonl"), dir.path().join("bad.jsonl"));
    support::tiny_bert_model(&model);
    support::word_dataset(&good, 3, 10);
    std::fs::write(&bad, "{\"text\": \"w1 w2\", \"label\": \"a\"}\nnot json\n").unwrap();
    let grid = dir.path().join("g.toml");
    let text = format!(
        "[fixed]\nmodel = {:?}\nmax_len = 16\nepochs = 1\nbatch_size = 4\nmethod = \"lora\"\n\n[grid]\ndata = [{:?}, {:?}]\nseed = [0]\n",
        model.to_str().unwrap(),
        bad.to_str().unwrap(),
        good.to_str().unwrap()
    );
    std::fs::write(&grid, text).unwrap();
    let out = dir.path().join("sweep");
    let args = ["sweep", "--grid", grid.to_str().unwrap(), "--out", out.to_str().unwrap()];

    // Before any run, --report-only says how many cells are unrun, and writes no empty report.
    let o = replora(&[&args[..], &["--report-only"]].concat());
    assert!(stderr(&o).contains("2 cells, 0 finished, 2 unrun") && !o.status.success(), "{}", stderr(&o));
    assert!(!out.join("report.md").exists());

    // The bad cell fails first; the good one still runs; the sweep then fails naming the count.
    let o = replora(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("failed, going on") && stderr(&o).contains("1 of 2 cells failed"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().count(), 1);
    let failed = std::fs::read_to_string(out.join("failed.jsonl")).unwrap();
    assert!(failed.lines().count() == 1 && failed.contains("bad.jsonl"), "{failed}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Failed cells (1;") && md.contains("bad.jsonl"), "{md}");

    // Fixed, the rerun retries only the failed cell and succeeds.
    support::word_dataset(&bad, 3, 10);
    let o = replora(&args);
    assert!(o.status.success() && stderr(&o).contains("1 finished, 1 to run"), "{}", stderr(&o));
    assert!(!out.join("failed.jsonl").exists() && !std::fs::read_to_string(out.join("report.md")).unwrap().contains("Failed cells"));
}
