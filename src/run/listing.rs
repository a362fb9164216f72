//! `replora runs`: the run directories under a folder, each with its settings, its status
//! (finished, running, interrupted at a step, failed) and its scores, from the files the run
//! wrote ([`crate::layout`]). Runs of older versions lack some of those files or fields: what is
//! missing shows as `-`. A directory that holds a `run.json` this replora cannot read is listed
//! apart, with the reason.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::{failure, lock, run_file};
use crate::error::{Error, Result};
use crate::files::read_json;
use crate::layout;
use crate::tasks::TaskKind;

/// Folders below the listed one that are searched for runs (a sweep's `cells/` is two deep).
const MAX_DEPTH: usize = 6;

/// One run directory.
#[derive(Clone, Debug, Serialize)]
pub struct RunEntry {
    /// The directory, as found under the listed folder.
    pub dir: PathBuf,
    pub task: TaskKind,
    pub model: String,
    pub method: String,
    /// The adapter's rank, for the low-rank methods (LoRA, DoRA, RepLoRA).
    pub rank: Option<u64>,
    pub lr: Option<f64>,
    pub epochs: Option<u64>,
    pub batch_size: Option<u64>,
    pub seed: Option<u64>,
    pub train_fraction: Option<f64>,
    #[serde(flatten)]
    pub status: Status,
    /// The validation metric that picks the best epoch (`accuracy`, `macro_f1`, `loss`: the
    /// run's `--best-metric` as `run.json` stores it, which is also its key in the metrics), and
    /// its best value so far.
    pub best_metric: String,
    pub best_validation: Option<f64>,
    /// The test metrics of a finished run (`loss`, `accuracy`, and where computed `macro_f1`,
    /// `exact_match`).
    pub test: Option<Value>,
    pub trainable_percent: Option<f64>,
    /// Training wall time: the whole run's when finished, else up to its last checkpoint.
    pub train_seconds: Option<f64>,
    /// When the run last wrote its summary or metrics, in seconds since the Unix epoch.
    pub updated_unix: Option<u64>,
}

/// Where a run stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// It wrote `summary.json`.
    Finished,
    /// A process holds its lock now.
    Running { pid: Option<u32>, step: Option<u64> },
    /// It ended with an error (`failed.json`), after `step` steps.
    Failed { step: Option<u64>, error: String },
    /// It stopped without an error (killed, Ctrl-C) after `step` logged steps; `--resume`
    /// continues it.
    Interrupted { step: Option<u64> },
}

impl Status {
    pub fn describe(&self) -> String {
        let at = |step: &Option<u64>| step.map_or(String::new(), |s| format!(" at step {s}"));
        match self {
            Status::Finished => "finished".into(),
            Status::Running { pid, step } => format!("running{}{}", at(step), pid.map_or(String::new(), |p| format!(" (pid {p})"))),
            Status::Failed { step, .. } => format!("failed{}", at(step)),
            Status::Interrupted { step } => format!("interrupted{}", at(step)),
        }
    }
}

/// A directory with a `run.json` that cannot be read, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Unreadable {
    pub dir: PathBuf,
    pub error: String,
}

/// The runs under a folder, in path order.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub runs: Vec<RunEntry>,
    pub unreadable: Vec<Unreadable>,
}

/// Every run directory under `root` (or `root` itself, if it is one). An error only when `root`
/// is no readable directory.
pub fn list(root: &Path) -> Result<Listing> {
    if !root.is_dir() {
        return Err(Error::io(root, std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory")));
    }
    let mut listing = Listing::default();
    std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    walk(root, 0, &mut listing);
    Ok(listing)
}

fn walk(dir: &Path, depth: usize, listing: &mut Listing) {
    if layout::is_run(dir) {
        match read_entry(dir) {
            Ok(entry) => listing.runs.push(entry),
            Err(error) => listing.unreadable.push(Unreadable { dir: dir.to_path_buf(), error }),
        }
        return;
    }
    if depth == MAX_DEPTH {
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return listing.unreadable.push(Unreadable { dir: dir.to_path_buf(), error: format!("cannot list it: {e}") }),
    };
    let mut subdirs: Vec<PathBuf> =
        entries.flatten().filter(|e| !e.file_name().to_string_lossy().starts_with('.')).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    subdirs.sort();
    for sub in subdirs {
        walk(&sub, depth + 1, listing);
    }
}

/// What `dir`'s files say about its run, or why they cannot be read.
pub fn read_entry(dir: &Path) -> std::result::Result<RunEntry, String> {
    let spec: Value = read_json(&dir.join(layout::RUN_FILE)).map_err(|e| e.to_string())?;
    if !spec.is_object() {
        return Err(format!("{}: not a run spec: not a JSON object", dir.join(layout::RUN_FILE).display()));
    }
    let task = run_file::kind(dir).map_err(|e| e.to_string())?;
    let summary: Option<Value> = match layout::is_finished(dir) {
        true => Some(read_json(&dir.join(layout::SUMMARY_FILE)).map_err(|e| e.to_string())?),
        false => None,
    };
    let metrics = MetricsLog::read(&dir.join(layout::METRICS_FILE));
    let train = &spec["train"];
    let best_metric = train["best_metric"].as_str().unwrap_or("accuracy").to_string();
    let status = match &summary {
        Some(_) => Status::Finished,
        None => match lock::check_free(dir) {
            Err(Error::Busy { pid, .. }) => Status::Running { pid, step: metrics.last_step },
            _ => match failure::read(dir).map_err(|e| e.to_string())? {
                Some(f) => Status::Failed { step: metrics.last_step, error: f.error },
                None => Status::Interrupted { step: metrics.last_step },
            },
        },
    };
    let (method, rank) = method_and_rank(&spec);
    let finished_training = summary.as_ref().map(|s| &s["training"]);
    let best_validation = match finished_training.and_then(|t| t["best_validation"].get(&best_metric)) {
        Some(v) => v.as_f64(),
        None => metrics.best(&best_metric),
    };
    let train_seconds = match finished_training.and_then(|t| t["wall_time_s"].as_f64()) {
        Some(s) => Some(s),
        None => read_json::<Value>(&dir.join(layout::CHECKPOINT_DIR).join(crate::training::checkpoint::PROGRESS))
            .ok()
            .and_then(|p| p["elapsed_s"].as_f64()),
    };
    let updated_unix = [layout::SUMMARY_FILE, layout::METRICS_FILE, layout::RUN_FILE].iter().find_map(|name| modified(&dir.join(name)));
    Ok(RunEntry {
        dir: dir.to_path_buf(),
        task,
        model: spec["model"].as_str().unwrap_or("-").to_string(),
        method,
        rank,
        lr: train["lr"].as_f64(),
        epochs: train["epochs"].as_u64(),
        batch_size: train["batch_size"].as_u64(),
        seed: train["seed"].as_u64(),
        train_fraction: spec["train_fraction"].as_f64(),
        status,
        best_metric,
        best_validation,
        test: summary.as_ref().map(|s| s["test"].clone()).filter(Value::is_object),
        trainable_percent: summary.as_ref().and_then(|s| s["trainable_percent"].as_f64()),
        train_seconds,
        updated_unix,
    })
}

/// The method of a spec (`tuning`: full, probe, or an adapter with its `method`; specs older
/// than the tag are adapter runs, and adapter configs older than `method` are RepLoRA's), and
/// the rank where the method has one.
fn method_and_rank(spec: &Value) -> (String, Option<u64>) {
    match spec["tuning"].as_str() {
        Some(tuning @ ("full" | "probe")) => (tuning.to_string(), None),
        _ => {
            let adapter = &spec["adapter"];
            let method = adapter["method"].as_str().unwrap_or("replora").to_string();
            let low_rank = matches!(method.as_str(), "lora" | "dora" | "replora");
            (method, adapter["r"].as_u64().filter(|_| low_rank))
        }
    }
}

fn modified(path: &Path) -> Option<u64> {
    let time = std::fs::metadata(path).ok()?.modified().ok()?;
    time.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// What `metrics.jsonl` says: the last logged step and each epoch's validation metrics. Lines
/// that are not JSON (one a kill cut short) are skipped.
struct MetricsLog {
    last_step: Option<u64>,
    validations: Vec<Value>,
}

impl MetricsLog {
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        MetricsLog {
            last_step: lines.iter().filter_map(|l| l["step"].as_u64()).max(),
            validations: lines.into_iter().filter_map(|mut l| l.get_mut("validation").map(Value::take)).collect(),
        }
    }

    /// The best validation value of `best_metric` so far (the lowest loss, else the highest).
    fn best(&self, best_metric: &str) -> Option<f64> {
        let values = self.validations.iter().filter_map(|v| v[best_metric].as_f64());
        match best_metric {
            "loss" => values.reduce(f64::min),
            _ => values.reduce(f64::max),
        }
    }
}

/// An aligned text table of the runs, one per line, with the unreadable directories after it.
pub fn table(listing: &Listing, root: &Path) -> String {
    let header = ["run", "task", "model", "method", "rank", "settings", "status", "best validation", "test", "trainable %", "time", "date"];
    let rows: Vec<Vec<String>> = listing.runs.iter().map(|r| row(r, root)).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.map(String::from).to_vec());
    for row in rows {
        out += &line(row);
    }
    for u in &listing.unreadable {
        out += &format!("cannot read {}: {}\n", shown(&u.dir, root), u.error);
    }
    out
}

fn row(r: &RunEntry, root: &Path) -> Vec<String> {
    let dash = || "-".to_string();
    let model = Path::new(&r.model).file_name().map_or(r.model.clone(), |n| n.to_string_lossy().into_owned());
    let mut settings = vec![];
    settings.extend(r.lr.map(|v| format!("lr {v}")));
    settings.extend(r.epochs.map(|v| format!("ep {v}")));
    settings.extend(r.batch_size.map(|v| format!("bs {v}")));
    settings.extend(r.seed.map(|v| format!("seed {v}")));
    settings.extend(r.train_fraction.filter(|f| *f < 1.0).map(|v| format!("frac {v}")));
    let test = r.test.as_ref().and_then(|t| t["accuracy"].as_f64()).map_or_else(dash, |a| format!("acc {a:.4}"));
    vec![
        shown(&r.dir, root),
        r.task.to_string(),
        model,
        r.method.clone(),
        r.rank.map_or_else(dash, |k| k.to_string()),
        settings.join(", "),
        r.status.describe(),
        r.best_validation.map_or_else(dash, |v| format!("{} {v:.4}", r.best_metric)),
        test,
        r.trainable_percent.map_or_else(dash, |p| format!("{p:.3}")),
        r.train_seconds.map_or_else(dash, duration),
        r.updated_unix.map_or_else(dash, utc_date),
    ]
}

/// `dir` relative to the listed folder (`.` for the folder itself).
fn shown(dir: &Path, root: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => dir.display().to_string(),
    }
}

/// `42.0s`, `3m05s`, `2h07m`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        _ if seconds < 60.0 => format!("{seconds:.1}s"),
        _ if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `YYYY-MM-DD HH:MM` in UTC (days to a civil date: Howard Hinnant's `civil_from_days`).
pub fn utc_date(unix: u64) -> String {
    let (days, seconds) = ((unix / 86_400) as i64, unix % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", seconds / 3600, seconds % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations_read_as_people_write_them() {
        assert_eq!(utc_date(0), "1970-01-01 00:00");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc_date(1_764_690_000), "2025-12-02 15:40");
        assert_eq!(duration(4.3), "4.3s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(7620.0), "2h07m");
    }

    #[test]
    fn methods_and_ranks_of_every_spec_shape() {
        let spec = |v: Value| method_and_rank(&v);
        assert_eq!(spec(serde_json::json!({"tuning": "adapter", "adapter": {"method": "dora", "r": 4}})), ("dora".into(), Some(4)));
        assert_eq!(spec(serde_json::json!({"tuning": "adapter", "adapter": {"method": "prefix", "r": 8}})), ("prefix".into(), None));
        assert_eq!(spec(serde_json::json!({"tuning": "full", "adapter": {"method": "lora", "r": 8}})), ("full".into(), None));
        // replora 0.1: no tuning tag, no method in the adapter config.
        assert_eq!(spec(serde_json::json!({"adapter": {"r": 8}})), ("replora".into(), Some(8)));
    }
}
