//! The sweep report: per configuration (a cell's flags without the seed) the validation mean ±
//! sd over seeds; per (data, training fraction, method) the configuration with the best mean
//! validation metric, whose test metrics are reported once; its paired difference to the
//! baseline method's selected configuration at the same seeds, with a 95% t interval; plots.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{Failure, Grid, Row};
use crate::apps::simulate::stats::t975;
use crate::error::Result;
use crate::files::{write_atomic, write_json};
pub use crate::run::results::{format_mean_sd, mean_sd};
use crate::training::BestMetric;

/// One configuration over its seeds.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub data: String,
    pub train_fraction: f64,
    pub method: String,
    /// The varied flags that tell this configuration apart (seed, data, fraction excluded).
    pub setting: String,
    pub seeds: Vec<u64>,
    /// The selection metric on validation data, per seed.
    pub validation: Vec<f64>,
    /// Test accuracy and macro-F1 per seed (read only for selected configurations).
    pub test_accuracy: Vec<f64>,
    pub test_macro_f1: Vec<f64>,
    pub trainable_percent: f64,
    pub minutes: f64,
}

/// A selected configuration and its paired difference to the baseline's.
#[derive(Clone, Debug, Serialize)]
pub struct Selected {
    pub config: Config,
    /// Test accuracy minus the baseline's, in points: mean, 95% interval low and high, pairs.
    pub vs_baseline: Option<(f64, f64, f64, usize)>,
}

fn short(data: &str) -> String {
    data.strip_prefix("bigbench:").unwrap_or(data).to_string()
}

/// Groups rows into configurations (same flags but the seed).
const REPLORA_FLAGS: [&str; 9] = [
    "hidden",
    "activation",
    "seed_kind",
    "seed_init",
    "shared_generators",
    "output_scale",
    "learn_output_scale",
    "generator_lr_multiplier",
    "no_generator_bias",
];

pub fn configs(rows: &[Row], metric: BestMetric) -> Vec<Config> {
    let mut groups: BTreeMap<String, Config> = BTreeMap::new();
    for r in rows {
        let key: String = r.flags.iter().filter(|(k, _)| k.as_str() != "seed").map(|(k, v)| format!("{k}={v};")).collect();
        let setting = r
            .varied
            .iter()
            .filter(|k| !["seed", "data", "tasks", "train_fraction", "method"].contains(&k.as_str()))
            // RepLoRA's settings mean nothing for other methods.
            .filter(|k| r.method == "replora" || !REPLORA_FLAGS.contains(&k.as_str()))
            .filter_map(|k| r.flags.get(k).map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(" ");
        let c = groups.entry(key).or_insert_with(|| Config {
            data: short(&r.data),
            train_fraction: r.train_fraction,
            method: r.method.clone(),
            setting,
            seeds: vec![],
            validation: vec![],
            test_accuracy: vec![],
            test_macro_f1: vec![],
            trainable_percent: r.trainable_percent,
            minutes: 0.0,
        });
        c.seeds.push(r.seed);
        c.validation.push(r.validation.score(metric).map(|s| if metric == BestMetric::Loss { -s } else { s }).unwrap_or(f64::NAN));
        c.test_accuracy.push(r.test.accuracy);
        c.test_macro_f1.extend(r.test.macro_f1);
        c.minutes += r.wall_time_s / 60.0;
    }
    groups.into_values().collect()
}

/// Per (data, fraction, method): the configuration with the best mean validation metric.
pub fn select(configs: &[Config], metric: BestMetric, baseline: &str) -> Vec<Selected> {
    let better = |a: f64, b: f64| if metric == BestMetric::Loss { a < b } else { a > b };
    let mut best: BTreeMap<(String, String, String), &Config> = BTreeMap::new();
    for c in configs {
        let key = (c.data.clone(), format!("{:08.4}", c.train_fraction), c.method.clone());
        let m = mean_sd(&c.validation).0;
        if best.get(&key).is_none_or(|b| better(m, mean_sd(&b.validation).0)) {
            best.insert(key, c);
        }
    }
    best.iter()
        .map(|((data, fraction, method), c)| {
            let base = best.get(&(data.clone(), fraction.clone(), baseline.to_string())).filter(|_| method != baseline);
            let vs_baseline = base.and_then(|b| {
                let diffs: Vec<f64> = c
                    .seeds
                    .iter()
                    .zip(&c.test_accuracy)
                    .filter_map(|(s, a)| b.seeds.iter().position(|x| x == s).map(|i| 100.0 * (a - b.test_accuracy[i])))
                    .collect();
                if diffs.is_empty() {
                    return None;
                }
                let (m, sd) = mean_sd(&diffs);
                let half = if diffs.len() > 1 { t975(diffs.len() - 1) * sd / (diffs.len() as f64).sqrt() } else { f64::NAN };
                Some((m, m - half, m + half, diffs.len()))
            });
            Selected { config: (*c).clone(), vs_baseline }
        })
        .collect()
}

/// Writes `report.md`, `report.json` and the plots; returns the Markdown.
pub fn write(rows: &[Row], failures: &[Failure], grid: &Grid, out: &Path) -> Result<String> {
    let metric = grid.metric;
    let configs = configs(rows, metric);
    let selected = select(&configs, metric, &grid.baseline);
    let metric_name = format!("{metric:?}").to_lowercase();
    let scale = if metric == BestMetric::Loss { 1.0 } else { 100.0 };
    let mut s = format!(
        "# Sweep report\n\n{} runs, {} configurations, {:.0} min of training. Selection: the best mean validation {metric_name} per data, training fraction and method; test metrics are read for the selected configuration only. Differences: test accuracy minus the selected `{}` configuration's at the same seeds, in points, with a 95% t interval.\n\n",
        rows.len(),
        configs.len(),
        configs.iter().map(|c| c.minutes).sum::<f64>(),
        grid.baseline
    );
    s += &format!(
        "## Selected configurations\n\n| data | train fraction | method | selected setting | seeds | validation {metric_name} | test accuracy % | test macro-F1 % | trainable % | vs {} (points, 95% CI) |\n|---|---|---|---|---|---|---|---|---|---|\n",
        grid.baseline
    );
    for sel in &selected {
        let c = &sel.config;
        let diff = match sel.vs_baseline {
            Some((m, lo, hi, n)) if n > 1 => format!("{m:+.1} [{lo:+.1}, {hi:+.1}] (n={n})"),
            Some((m, _, _, n)) => format!("{m:+.1} (n={n})"),
            None => "-".into(),
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {} |\n",
            c.data,
            c.train_fraction,
            c.method,
            if c.setting.is_empty() { "-" } else { &c.setting },
            c.seeds.len(),
            format_mean_sd(&c.validation, scale, 1),
            format_mean_sd(&c.test_accuracy, 100.0, 1),
            format_mean_sd(&c.test_macro_f1, 100.0, 1),
            c.trainable_percent,
            diff
        );
    }
    s += &format!(
        "\n## Every configuration (validation only)\n\n| data | train fraction | method | setting | seeds | validation {metric_name} | trainable % | minutes |\n|---|---|---|---|---|---|---|---|\n"
    );
    for c in &configs {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.3} | {:.1} |\n",
            c.data,
            c.train_fraction,
            c.method,
            if c.setting.is_empty() { "-" } else { &c.setting },
            c.seeds.len(),
            format_mean_sd(&c.validation, scale, 1),
            c.trainable_percent,
            c.minutes
        );
    }
    if !failures.is_empty() {
        s += &format!(
            "\n## Failed cells ({}; the same `replora sweep` command retries them)\n\n| cell | run directory | error |\n|---|---|---|\n",
            failures.len()
        );
        for f in failures {
            s += &format!("| {} | {} | {} |\n", f.cell, f.run.display(), f.error.replace('|', "\\|").replace('\n', " "));
        }
    }
    write_atomic(&out.join("report.md"), s.as_bytes())?;
    write_json(&out.join("report.json"), &serde_json::json!({ "selected": selected, "configurations": configs }))?;
    super::plot::write(&selected, &out.join("report.png"), &out.join("report.svg"))?;
    Ok(s)
}
