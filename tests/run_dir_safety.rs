//! Run directories are never lost (issue 26, data loss 1-7 and misleading error 8), with the
//! real binary on a tiny BERT and dataset: no command writes over a run's files or into another
//! run; `train` takes only a new or empty directory or a run, and `--overwrite` deletes only
//! what a run writes; a finished run is read-only to `--resume`; one process at a time writes
//! a run directory (real concurrent processes: two trains, a resume, readers, a SIGKILLed
//! holder, two sweeps sharing their cells); `sweep --report-only` never empties a report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod support;

use support::{copy_dir, replora, stderr};

/// The fixtures' folder: a tiny BERT (`bert`), a 3-label dataset (`data.jsonl`) and one
/// finished run (`base`), made once.
fn root() -> &'static Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        support::tiny_bert_model(&dir.path().join("bert"));
        support::word_dataset(&dir.path().join("data.jsonl"), 3, 10);
        let base = dir.path().join("base");
        let o = replora(&strs(&train_in(dir.path(), &base, &[])));
        assert!(o.status.success(), "the fixture run failed: {}", stderr(&o));
        dir
    })
    .path()
}

fn at(name: &str) -> PathBuf {
    root().join(name)
}

/// `train` on the tiny model and data (1 epoch) into `out`, with `extra` flags.
fn train(out: &Path, extra: &[&str]) -> Vec<String> {
    train_in(root(), out, extra)
}

fn train_in(fixtures: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let (model, data) = (fixtures.join("bert"), fixtures.join("data.jsonl"));
    let mut args: Vec<String> = vec![
        "train".into(),
        "--model".into(),
        model.display().to_string(),
        "--data".into(),
        data.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(["--max-len", "16", "--epochs", "1", "--batch-size", "4", "--method", "lora"].iter().chain(extra).map(|s| s.to_string()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn run_ok(args: &[&str]) {
    let o = replora(args);
    assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
}

/// Exit code 1 (our error, not success or a panic) with every `expected` piece in stderr.
fn assert_fails(args: &[&str], expected: &[&str]) -> String {
    let o = replora(args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: expected an error: {e}");
    for piece in expected {
        assert!(e.contains(piece), "{args:?}: expected {piece:?} in stderr:\n{e}");
    }
    e
}

/// A copy of the finished run `base`.
fn copy_run(name: &str) -> PathBuf {
    let to = at(name);
    copy_dir(&at("base"), &to);
    to
}

/// Every file under `dir` with its bytes, sorted; `run.lock` aside, which holds the PID of
/// the last process that took the lock (also to refuse).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.ends_with("run.lock") {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

fn assert_unchanged(dir: &Path, before: &[(PathBuf, Vec<u8>)], what: &str) {
    let after = snapshot(dir);
    let names = |s: &[(PathBuf, Vec<u8>)]| s.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(before), "{what} changed the files of {}", dir.display());
    for ((path, a), (_, b)) in after.iter().zip(before) {
        assert!(a == b, "{what} changed {}", path.display());
    }
}

/// Data loss 1: `logits --out` went over the run's head and adapter.
#[test]
fn logits_never_writes_over_a_runs_files() {
    let run = copy_run("logits-run");
    let before = snapshot(&run);
    let r = run.to_str().unwrap();
    for own in ["head.safetensors", "adapter/adapter_model.safetensors", "checkpoint/x.safetensors", "run.json"] {
        let out = run.join(own);
        assert_fails(
            &["logits", "--run", r, "--text", "hi", "--out", out.to_str().unwrap()],
            &[own.split('/').next().unwrap(), "the run itself writes"],
        );
    }
    assert_fails(&["logits", "--run", r, "--text", "hi", "--out", r], &["is a run directory"]);
    assert_unchanged(&run, &before, "a refused logits");
    let o = replora(&["predict", "--run", r, "--text", "w1 w2"]);
    assert!(o.status.success(), "predict after a refused logits: {}", stderr(&o));
    // A file of its own beside the run's is the user's to write.
    run_ok(&["logits", "--run", r, "--text", "hi", "--out", run.join("logits.safetensors").to_str().unwrap()]);
}

/// Data loss 2: a directory that holds no run lost its files to `train`.
#[test]
fn train_takes_only_a_new_or_empty_directory_or_a_run() {
    let project = at("proj");
    std::fs::create_dir_all(project.join("model")).unwrap();
    std::fs::write(project.join("model/config.json"), "{\"mine\": 1}").unwrap();
    std::fs::create_dir_all(project.join("best")).unwrap();
    std::fs::write(project.join("best/notes.txt"), "keep me").unwrap();
    std::fs::write(project.join("labels.json"), "[\"mine\"]").unwrap();
    let before = snapshot(&project);
    let p = project.to_str().unwrap();
    for extra in [&[][..], &["--overwrite"][..]] {
        assert_fails(&strs(&train(&project, extra)), &[p, "no replora run", "best, labels.json, model"]);
        assert_unchanged(&project, &before, "a refused train");
    }
    assert_fails(&strs(&train(Path::new("/"), &["--overwrite"])), &["--out /", "root"]);

    // An empty directory, or one left holding only a lock file, is taken.
    let empty = at("empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("run.lock"), "").unwrap();
    run_ok(&strs(&train(&empty, &[])));
}

/// Data loss 2: `--overwrite` deleted what no run writes, and missed what one does
/// (image full fine-tuning's `backbone/`).
#[test]
fn overwrite_deletes_what_a_run_writes_and_nothing_else() {
    let run = copy_run("overwritten");
    // The user's files beside the run's, and what an earlier run (or a crash) may leave.
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    std::fs::create_dir_all(run.join("peft")).unwrap();
    std::fs::write(run.join("peft/adapter_config.json"), "{}").unwrap();
    for leftover in ["backbone", "encoder", "checkpoint.old", "best.tmp"] {
        std::fs::create_dir_all(run.join(leftover)).unwrap();
        std::fs::write(run.join(leftover).join("x"), "stale").unwrap();
    }
    std::fs::write(run.join("summary.json.4242.tmp"), "stale").unwrap();
    run_ok(&strs(&train(&run, &["--overwrite", "--seed", "5"])));
    assert_eq!(std::fs::read_to_string(run.join("notes.txt")).unwrap(), "mine");
    assert!(run.join("peft/adapter_config.json").is_file(), "the user's folder was deleted");
    for leftover in ["backbone", "encoder", "checkpoint.old", "best.tmp", "summary.json.4242.tmp"] {
        assert!(!run.join(leftover).exists(), "--overwrite left the old run's {leftover}");
    }
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(spec["train"]["seed"], 5);
}

/// Data loss 6: `--resume` on a finished run rewrote its summary.
#[test]
fn a_finished_run_is_read_only_to_resume() {
    let run = copy_run("finished");
    let before = snapshot(&run);
    let r = run.to_str().unwrap();
    assert_fails(&["train", "--out", r, "--resume"], &[r, "finished run", "replora eval --run", "--overwrite"]);
    assert_unchanged(&run, &before, "--resume on a finished run");
}

/// Data loss 4 and 7: `export`/`merge --overwrite` wrote into another run, and `export` into
/// a folder the run's next checkpoint deletes.
#[test]
fn export_and_merge_never_write_into_a_run() {
    let victim = copy_run("victim");
    let before = snapshot(&victim);
    let base = at("base");
    let base = base.to_str().unwrap();
    let v = victim.to_str().unwrap();
    for verb in ["export", "merge"] {
        assert_fails(&[verb, "--run", base, "--out", v, "--overwrite"], &[v, "is a run directory", "--overwrite never"]);
        assert_fails(&[verb, "--run", v, "--out", v, "--overwrite"], &["is a run directory"]);
        for inside in ["checkpoint/peft", "adapter", "best"] {
            let out = victim.join(inside);
            assert_fails(&[verb, "--run", base, "--out", out.to_str().unwrap(), "--overwrite"], &["the run itself writes"]);
        }
    }
    assert_unchanged(&victim, &before, "a refused export or merge");
    let o = replora(&["predict", "--run", v, "--text", "w1 w2"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `train` started in the background, writing for far longer than the test needs it to.
fn start_long_train(out: &Path, seed: &str) -> Running {
    let args = train(out, &["--epochs", "2000", "--seed", seed, "--log-every", "1", "--checkpoint-every", "1"]);
    Running(Command::new(env!("CARGO_BIN_EXE_replora")).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap())
}

/// Waits (at most a minute) for `ready`.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The logged training steps of `metrics.jsonl`.
fn logged_steps(run: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|row| row.get("loss").is_some())
        .map(|row| row["step"].as_u64().unwrap())
        .collect()
}

/// Data loss 3 and misleading error 8: two trains started 0.1 s apart both wrote one
/// directory; a resume while the original trained logged steps twice; readers and writers got
/// the ordinary `--resume`/`--overwrite` advice.
#[test]
fn one_process_at_a_time_writes_a_run_directory() {
    let out = at("contended");
    let o = out.to_str().unwrap();
    let mut first = start_long_train(&out, "1");
    std::thread::sleep(Duration::from_millis(100));
    let mut second = start_long_train(&out, "2");
    let (pids, seeds) = ([first.0.id(), second.0.id()], ["1", "2"]);
    // One of them is refused, naming the other.
    let mut refused = None;
    wait_for("one of two trains into one directory to be refused", || {
        for (i, child) in [&mut first, &mut second].into_iter().enumerate() {
            if child.0.try_wait().unwrap().is_some() {
                refused = Some(i);
                return true;
            }
        }
        false
    });
    let loser = refused.unwrap();
    let winner = 1 - loser;
    let child = if loser == 0 { &mut first } else { &mut second };
    let mut e = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut e).unwrap();
    assert_eq!(child.0.wait().unwrap().code(), Some(1), "{e}");
    let busy = format!("{o} is being written by process {}; wait for it or stop it", pids[winner]);
    assert!(e.contains(&busy), "expected {busy:?}:\n{e}");

    // While it trains: another train, a resume, and readers of the unfinished run are refused.
    wait_for("a checkpoint", || out.join("checkpoint").is_dir() && logged_steps(&out).len() >= 3);
    for args in [
        strs(&train(&out, &[])),
        strs(&train(&out, &["--overwrite"])),
        vec!["train", "--out", o, "--resume"],
        vec!["eval", "--run", o],
        vec!["predict", "--run", o, "--text", "w1"],
    ] {
        let e = assert_fails(&args, &[&busy]);
        assert!(!e.contains("--resume to continue"), "{args:?}: the ordinary advice for an idle run: {e}");
    }

    // Killed (SIGKILL), the writer leaves the lock free: its run is an ordinary unfinished one.
    let holder = if winner == 0 { &mut first } else { &mut second };
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    let steps = logged_steps(&out);
    let expected: Vec<u64> = (1..=steps.len() as u64).collect();
    assert_eq!(steps, expected, "metrics.jsonl holds the steps of more than one process");
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(spec["train"]["seed"].to_string(), seeds[winner], "run.json is not the writer's");
    assert_fails(&["eval", "--run", o], &["unfinished run", "--resume"]);
    let o2 = replora(&strs(&train(&out, &["--overwrite"])));
    assert!(o2.status.success(), "a train after the holder was killed: {}", stderr(&o2));
}

fn write_grid(path: &Path, grid: &str) {
    let text = format!(
        "baseline = \"lora\"\n[fixed]\nmodel = {:?}\ndata = {:?}\nmax_len = 16\nbatch_size = 4\nlog_every = 1\nmethod = \"lora\"\n\n[grid]\n{grid}\n",
        at("bert"),
        at("data.jsonl")
    );
    std::fs::write(path, text).unwrap();
}

/// Data loss 3: two sweeps sharing `--cells` both trained every cell.
#[test]
fn two_sweeps_sharing_their_cells_train_each_cell_once() {
    let dir = at("shared-sweep");
    std::fs::create_dir_all(&dir).unwrap();
    let grid = dir.join("g.toml");
    // The first cell trains far longer than the test needs it to; the second is quick.
    write_grid(&grid, "epochs = [2000, 1]");
    let cells = dir.join("cells");
    let args = |out: &str| -> Vec<String> {
        ["sweep", "--grid", grid.to_str().unwrap(), "--out", dir.join(out).to_str().unwrap(), "--cells", cells.to_str().unwrap()]
            .map(String::from)
            .to_vec()
    };
    let mut first =
        Running(Command::new(env!("CARGO_BIN_EXE_replora")).args(args("a")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let training = || std::fs::read_dir(&cells).map(|e| e.flatten().any(|e| e.path().join("run.json").is_file())).unwrap_or(false);
    wait_for("the first sweep to start its first cell", training);
    let second = replora(&strs(&args("b")));
    let e = stderr(&second);
    assert!(second.status.success(), "{e}");
    let busy = format!("epochs=2000 is being trained by process {}: skipped", first.0.id());
    assert!(e.contains(&busy), "expected {busy:?}:\n{e}");
    assert!(e.contains("skipped 1 cells being trained by other processes") && e.contains("epochs=2000 (process"), "{e}");
    let rows = std::fs::read_to_string(dir.join("b/results.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 1, "the second sweep reports the cell it trained: {rows}");
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    // Each cell was trained by one process: its log counts each step once.
    let cell_dirs: Vec<PathBuf> = std::fs::read_dir(&cells).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    assert_eq!(cell_dirs.len(), 2);
    for cell in cell_dirs {
        let steps = logged_steps(&cell);
        let expected: Vec<u64> = (1..=steps.len() as u64).collect();
        assert!(!steps.is_empty() && steps == expected, "{}: steps {steps:?}", cell.display());
    }
}

/// Data loss 5: `--report-only` with a wrong `--cells` emptied results.jsonl and report.md.
#[test]
fn report_only_never_empties_a_report() {
    let dir = at("report-sweep");
    std::fs::create_dir_all(&dir).unwrap();
    let grid = dir.join("g.toml");
    write_grid(&grid, "epochs = [1]");
    let (out, cells) = (dir.join("out"), dir.join("cells"));
    let (g, o) = (grid.to_str().unwrap(), out.to_str().unwrap());
    run_ok(&["sweep", "--grid", g, "--out", o, "--cells", cells.to_str().unwrap()]);
    for name in ["results.jsonl", "report.md", "report.png", "report.svg"] {
        assert!(out.join(name).is_file(), "the sweep wrote no {name}");
    }
    let before = snapshot(&out);
    let wrong = dir.join("no-such-cells");
    assert_fails(
        &["sweep", "--grid", g, "--out", o, "--cells", wrong.to_str().unwrap(), "--report-only"],
        &["--cells", "does not exist", "nothing was written"],
    );
    let empty = dir.join("empty-cells");
    std::fs::create_dir_all(&empty).unwrap();
    assert_fails(
        &["sweep", "--grid", g, "--out", o, "--cells", empty.to_str().unwrap(), "--report-only"],
        &["none of the grid's 1 cells", "nothing was written"],
    );
    assert_unchanged(&out, &before, "a refused --report-only");
    // A sweep's output never goes into a run directory either.
    let base = at("base");
    assert_fails(
        &["sweep", "--grid", g, "--out", base.to_str().unwrap(), "--cells", cells.to_str().unwrap(), "--report-only"],
        &["is a run directory"],
    );
}
