//! One results type for every task ([`RunSummary`], a run's `summary.json`) and the one table
//! writer for `train`, `eval` and `compare`.

use serde::{Deserialize, Serialize};

use crate::tasks::{SubtaskScore, TaskKind};
use crate::training::{EvalMetrics, TrainReport};

/// The final report of a run; written as `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    pub task: TaskKind,
    /// `lora`, `dora`, `replora`, `adapter`, `prefix`, `full`, `probe`, or `base` (zero-shot).
    pub method: String,
    pub model: String,
    pub data: String,
    pub seed: u64,
    pub train_fraction: f64,
    /// Class names (classification).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Examples in the train (after `train_fraction`), validation and test splits.
    pub sizes: [usize; 3],
    pub test: EvalMetrics,
    /// Per sub-task results (multiple choice over several tasks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_task: Vec<SubtaskScore>,
    /// None for a zero-shot evaluation.
    pub training: Option<TrainReport>,
    pub trainable_params: usize,
    pub total_params: usize,
    pub trainable_percent: f64,
    /// Performance per parameter with test accuracy in percent (spec section 4).
    pub ppt: f64,
    pub train_examples_per_s: f64,
    /// Training tokens (padding excluded) per second, where the task counts tokens.
    pub train_tokens_per_s: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// The precision of the linears' products and attention (`--precision`) where it was not f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

/// Peak resident memory of this process in MiB since the last reset, if known.
pub fn peak_rss_mib() -> Option<f64> {
    crate::training::trainer::peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0))
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 { (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (m, sd)
}

/// `mean ± sd` of `values` times `scale` (one value: the value alone).
pub fn format_mean_sd(values: &[f64], scale: f64, digits: usize) -> String {
    let (mean, sd) = mean_sd(values);
    match values.len() {
        0 => "-".into(),
        1 => format!("{:.digits$}", scale * mean),
        _ => format!("{:.digits$} ± {:.digits$}", scale * mean, scale * sd),
    }
}

/// A Markdown table of runs: one row per method and training fraction, with mean ± sample
/// standard deviation over its seeds (one seed: the value itself). Accuracies in percent.
pub fn table(runs: &[RunSummary]) -> String {
    let tasks: Vec<String> =
        runs.iter().find(|r| !r.per_task.is_empty()).map(|r| r.per_task.iter().map(|t| t.task.clone()).collect()).unwrap_or_default();
    let has_f1 = runs.iter().any(|r| r.test.macro_f1.is_some());
    let has_em = runs.iter().any(|r| r.test.exact_match.is_some());
    let has_fraction = runs.iter().any(|r| r.train_fraction < 1.0);
    let tokens = runs.iter().any(|r| r.train_tokens_per_s.is_some());
    let mut groups: Vec<(&str, f64, Vec<&RunSummary>)> = vec![];
    for r in runs {
        match groups.iter_mut().find(|(m, f, _)| *m == r.method && *f == r.train_fraction) {
            Some(g) => g.2.push(r),
            None => groups.push((&r.method, r.train_fraction, vec![r])),
        }
    }
    let mut header = vec!["method".to_string()];
    if has_fraction {
        header.push("train fraction".into());
    }
    header.push("seeds".into());
    header.extend(tasks.iter().cloned());
    header.push("test accuracy %".into());
    if has_f1 {
        header.push("test macro-F1 %".into());
    }
    if has_em {
        header.push("exact match %".into());
    }
    header.extend(
        [
            "trainable params",
            "trainable %",
            "PPT",
            "train time (s)",
            if tokens { "train tokens/s" } else { "train examples/s" },
            "peak RSS (MiB)",
        ]
        .map(String::from),
    );
    let mut s = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    for (method, fraction, rs) in groups {
        let col = |f: &dyn Fn(&RunSummary) -> Option<f64>| -> Vec<f64> { rs.iter().filter_map(|r| f(r)).collect() };
        let stat = |values: Vec<f64>, scale: f64, digits: usize| format_mean_sd(&values, scale, digits);
        let mut row = vec![method.to_string()];
        if has_fraction {
            row.push(format!("{fraction}"));
        }
        row.push(rs.len().to_string());
        for t in &tasks {
            row.push(stat(col(&|r| r.per_task.iter().find(|x| &x.task == t).map(|x| x.accuracy)), 100.0, 1));
        }
        row.push(stat(col(&|r| Some(r.test.accuracy)), 100.0, 2));
        if has_f1 {
            row.push(stat(col(&|r| r.test.macro_f1), 100.0, 2));
        }
        if has_em {
            row.push(stat(col(&|r| r.test.exact_match), 100.0, 1));
        }
        let trained = method != "base";
        row.push(rs[0].trainable_params.to_string());
        row.push(format!("{:.3}", rs[0].trainable_percent));
        row.push(stat(col(&|r| Some(r.ppt)), 1.0, 2));
        row.push(if trained { stat(col(&|r| r.training.as_ref().map(|t| t.wall_time_s)), 1.0, 1) } else { "-".into() });
        let rate = if tokens { col(&|r| r.train_tokens_per_s) } else { col(&|r| Some(r.train_examples_per_s)) };
        row.push(if trained { stat(rate, 1.0, 0) } else { "-".into() });
        row.push(rs.iter().filter_map(|r| r.peak_rss_mib).reduce(f64::max).map_or("-".into(), |m| format!("{m:.0}")));
        s += &format!("| {} |\n", row.join(" | "));
    }
    s
}
