//! `replora simulate`: the estimation-rate simulation of spec section 2.
//!
//! One attention head is a mixture of experts over its N tokens. Its query and
//! value updates are drawn from the RepLoRA class (shared diagonal seeds through
//! small generator MLPs) and estimated from n noisy samples by least squares
//! with three parameterizations: LoRA (independent factors), RepLoRA-linear and
//! RepLoRA-nonlinear. The error against n is reported on log-log axes with
//! fitted slopes. Only `crate::apps::simulate::*` is used, so the folder can move.

mod fit;
mod linalg;
mod metrics;
mod model;
pub mod plot;
mod rng;
pub mod stats;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

pub use fit::FitOpts;
pub use model::ModelKind;
use model::{Base, Factors, Layout};
use rng::{Rng, derive_seed};
use stats::Slope;

/// Activation of the generators that produce the ground truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum TruthAct {
    /// Linear reparameterization (identity activation).
    Linear,
    /// Non-linear reparameterization (tanh).
    Tanh,
}

/// What the RepLoRA fits learn besides the shared seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Generators {
    /// Seeds and generator MLP weights are fitted (RepLoRA as trained in practice).
    Learned,
    /// Generator weights are known (held at the truth's); only the 2r seeds are
    /// fitted. Only the RepLoRA variant whose activation matches --truth is then
    /// well specified.
    Fixed,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Smoke-test run (under a minute): n from 10^2 to 10^4 on 3 points, 5
    /// replicates; explicit --n-max/--grid-points/--replicates still win.
    #[arg(long)]
    pub quick: bool,
    /// Master seed. The same seed gives a byte-identical CSV for any --threads.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output folder for simulate.csv, summary.json, simulate.png and simulate.svg.
    #[arg(long, default_value = "results/simulate")]
    pub out: PathBuf,
    /// Replicates per n; each replicate draws its own head and ground truth,
    /// shared by all n of that replicate [default: 20; 5 with --quick].
    #[arg(long)]
    pub replicates: Option<usize>,
    /// Smallest sample size n of the log-spaced grid.
    #[arg(long, default_value_t = 100)]
    pub n_min: usize,
    /// Largest sample size n of the grid [default: 100000; 10000 with --quick].
    #[arg(long)]
    pub n_max: Option<usize>,
    /// Number of log-spaced grid points from --n-min to --n-max [default: 7; 3 with --quick].
    #[arg(long)]
    pub grid_points: Option<usize>,
    /// Token dimension d (2 to 8); W_Q, W_K, W_V are d x d with N(0, 1/d) entries.
    #[arg(long, default_value_t = 4)]
    pub d: usize,
    /// Tokens per input N (2 to 4): the number of experts of each output token.
    #[arg(long, default_value_t = 3)]
    pub tokens: usize,
    /// Rank r of the true updates B*_Q A*_Q and B*_V A*_V (1 to 2).
    #[arg(long, default_value_t = 1)]
    pub rank: usize,
    /// Rank of the fitted models; above --rank is the over-specified regime [default: --rank].
    #[arg(long, conflicts_with = "overspecified")]
    pub fit_rank: Option<usize>,
    /// Over-specified mode: fit rank = --rank + 1.
    #[arg(long)]
    pub overspecified: bool,
    /// Hidden width h of the generator MLPs (truth and RepLoRA fits).
    #[arg(long, default_value_t = 4)]
    pub hidden: usize,
    /// Generator activation of the ground truth.
    #[arg(long, value_enum, default_value_t = TruthAct::Tanh)]
    pub truth: TruthAct,
    /// Whether the RepLoRA fits learn the generator weights or know them.
    #[arg(long, value_enum, default_value_t = Generators::Learned)]
    pub generators: Generators,
    /// Standard deviation of the Gaussian noise added to every output coordinate.
    #[arg(long, default_value_t = 0.3)]
    pub noise: f64,
    /// Models to fit, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["lora", "rep-linear", "rep-nonlinear"])]
    pub models: Vec<ModelKind>,
    /// Random restarts per fit (same for every model).
    #[arg(long, default_value_t = 4)]
    pub restarts: usize,
    /// Restarts are screened on the first min(n, this) samples; the best is polished on all n.
    #[arg(long, default_value_t = 2000)]
    pub screen_size: usize,
    /// L-BFGS iterations per restart during screening.
    #[arg(long, default_value_t = 60)]
    pub screen_iters: usize,
    /// L-BFGS iterations of the final polish on all n samples.
    #[arg(long, default_value_t = 300)]
    pub max_iters: usize,
    /// Worker threads [default: available cores]. Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The resolved configuration (defaults and --quick applied).
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub seed: u64,
    pub replicates: usize,
    pub grid: Vec<usize>,
    pub d: usize,
    pub tokens: usize,
    pub rank: usize,
    pub fit_rank: usize,
    pub hidden: usize,
    pub truth: TruthAct,
    pub generators: Generators,
    pub noise: f64,
    pub models: Vec<ModelKind>,
    pub fit: FitOpts,
}

/// One fitted model on one replicate at one n (a CSV row).
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub model: &'static str,
    pub n: usize,
    pub replicate: usize,
    pub gauge_error: f64,
    pub error_q: f64,
    pub error_v: f64,
    pub voronoi: f64,
    pub train_loss: f64,
    pub iters: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct SummaryRow {
    pub model: &'static str,
    pub n: usize,
    pub gauge_mean: f64,
    pub gauge_se: f64,
    pub voronoi_mean: f64,
    pub voronoi_se: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelSlopes {
    pub model: &'static str,
    pub gauge: Slope,
    pub voronoi: Slope,
}

#[derive(Clone, Debug, Serialize)]
pub struct SimulateSummary {
    pub config: Config,
    pub rows: Vec<SummaryRow>,
    pub slopes: Vec<ModelSlopes>,
    pub csv: PathBuf,
    pub json: PathBuf,
    pub png: PathBuf,
    pub svg: PathBuf,
}

impl SimulateArgs {
    pub fn config(&self) -> Result<Config> {
        let q = self.quick;
        let replicates = self.replicates.unwrap_or(if q { 5 } else { 20 });
        let n_max = self.n_max.unwrap_or(if q { 10_000 } else { 100_000 });
        let points = self.grid_points.unwrap_or(if q { 3 } else { 7 });
        let fit_rank = if self.overspecified { self.rank + 1 } else { self.fit_rank.unwrap_or(self.rank) };
        if !(2..=8).contains(&self.d) || !(2..=4).contains(&self.tokens) {
            bail!("--d must be in 2..=8 and --tokens in 2..=4");
        }
        if !(1..=2).contains(&self.rank) || fit_rank < self.rank || fit_rank > self.d {
            bail!("--rank must be 1 or 2, and --rank <= fit rank <= --d");
        }
        if self.n_min < 2 || n_max < self.n_min || points < 2 || replicates < 2 {
            bail!("need 2 <= --n-min <= --n-max, --grid-points >= 2 and --replicates >= 2");
        }
        if self.models.is_empty() || self.hidden == 0 || self.noise < 0.0 {
            bail!("need at least one model, --hidden >= 1 and --noise >= 0");
        }
        Ok(Config {
            seed: self.seed,
            replicates,
            grid: log_grid(self.n_min, n_max, points),
            d: self.d,
            tokens: self.tokens,
            rank: self.rank,
            fit_rank,
            hidden: self.hidden,
            truth: self.truth,
            generators: self.generators,
            noise: self.noise,
            models: self.models.clone(),
            fit: FitOpts {
                restarts: self.restarts,
                screen_size: self.screen_size,
                screen_iters: self.screen_iters,
                max_iters: self.max_iters,
            },
        })
    }
}

/// `points` sizes from `lo` to `hi`, evenly spaced in log n, rounded, deduplicated.
pub fn log_grid(lo: usize, hi: usize, points: usize) -> Vec<usize> {
    let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
    let mut g: Vec<usize> = (0..points).map(|k| (a + (b - a) * k as f64 / (points - 1) as f64).exp().round() as usize).collect();
    g.dedup();
    g
}

/// The head, the truth's RepLoRA parameters and factors of replicate `rep` (shared by every n).
fn replicate_truth(cfg: &Config, rep: usize) -> (Base, Vec<f64>, Factors) {
    let mut rng = Rng::new(derive_seed(&[cfg.seed, 1, rep as u64]));
    let base = Base::random(cfg.d, &mut rng);
    let act = match cfg.truth {
        TruthAct::Linear => ModelKind::RepLinear,
        TruthAct::Tanh => ModelKind::RepNonlinear,
    };
    let (p, f) = model::draw_truth(cfg.d, cfg.rank, cfg.fit_rank, cfg.hidden, act, &mut rng);
    (base, p, f)
}

/// Fits every model on replicate `rep` at grid index `k`; `tick(n)` after each fit.
fn run_cell(cfg: &Config, (base, truth_p, truth): &(Base, Vec<f64>, Factors), rep: usize, k: usize, tick: &dyn Fn(u64)) -> Vec<Record> {
    let n = cfg.grid[k];
    let mut rng = Rng::new(derive_seed(&[cfg.seed, 2, rep as u64, k as u64]));
    let data = model::generate_data(base, truth, n, cfg.tokens, cfg.noise, &mut rng);
    let mut out = Vec::new();
    for &kind in &cfg.models {
        let layout = Layout { kind, d: cfg.d, r: cfg.fit_rank, h: cfg.hidden };
        let seed = derive_seed(&[cfg.seed, 3, rep as u64, k as u64, kind as u64]);
        let frozen = (cfg.generators == Generators::Fixed && kind != ModelKind::Lora).then_some(truth_p.as_slice());
        let res = fit::fit(base, &data, &layout, &cfg.fit, seed, frozen);
        let fitted = layout.factors(&res.params);
        let (gauge_error, error_q, error_v) = metrics::gauge_error(&fitted, truth);
        out.push(Record {
            model: kind.name(),
            n,
            replicate: rep,
            gauge_error,
            error_q,
            error_v,
            voronoi: metrics::voronoi_loss(&fitted, truth, cfg.rank),
            train_loss: res.loss,
            iters: res.iters,
        });
        tick(n as u64);
    }
    out
}

/// Runs the whole grid on `threads` workers; records sorted by (model, n, replicate).
pub fn simulate_records(cfg: &Config, threads: usize, bar: &ProgressBar) -> Vec<Record> {
    let truths: Vec<(Base, Vec<f64>, Factors)> = (0..cfg.replicates).map(|r| replicate_truth(cfg, r)).collect();
    let mut cells: Vec<(usize, usize)> = (0..cfg.replicates).flat_map(|r| (0..cfg.grid.len()).map(move |k| (r, k))).collect();
    cells.sort_by_key(|&(r, k)| (std::cmp::Reverse(cfg.grid[k]), r)); // largest first for load balance
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(r, k)) = cells.get(i) else { break };
                    let recs = run_cell(cfg, &truths[r], r, k, &|n| bar.inc(n));
                    done.lock().expect("worker panicked").extend(recs);
                }
            });
        }
    });
    let mut recs = done.into_inner().expect("worker panicked");
    let order = |m: &str| cfg.models.iter().position(|k| k.name() == m);
    recs.sort_by_key(|r| (order(r.model), r.n, r.replicate));
    recs
}

pub fn write_csv(path: &Path, recs: &[Record]) -> Result<()> {
    let mut s = String::from("model,n,replicate,gauge_error,error_q,error_v,voronoi,train_loss,iters\n");
    for r in recs {
        writeln!(
            s,
            "{},{},{},{},{},{},{},{},{}",
            r.model, r.n, r.replicate, r.gauge_error, r.error_q, r.error_v, r.voronoi, r.train_loss, r.iters
        )?;
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn summarize(cfg: &Config, recs: &[Record]) -> (Vec<SummaryRow>, Vec<ModelSlopes>) {
    let (mut rows, mut slopes) = (Vec::new(), Vec::new());
    let ns: Vec<f64> = cfg.grid.iter().map(|&n| n as f64).collect();
    for kind in &cfg.models {
        let mine: Vec<&Record> = recs.iter().filter(|r| r.model == kind.name()).collect();
        let (mut g_by_rep, mut v_by_rep) = (vec![vec![0.0; ns.len()]; cfg.replicates], vec![vec![0.0; ns.len()]; cfg.replicates]);
        for (k, &n) in cfg.grid.iter().enumerate() {
            let at: Vec<&&Record> = mine.iter().filter(|r| r.n == n).collect();
            for r in &at {
                g_by_rep[r.replicate][k] = r.gauge_error;
                v_by_rep[r.replicate][k] = r.voronoi;
            }
            let (gm, gs) = stats::mean_se(&at.iter().map(|r| r.gauge_error).collect::<Vec<_>>());
            let (vm, vs) = stats::mean_se(&at.iter().map(|r| r.voronoi).collect::<Vec<_>>());
            rows.push(SummaryRow { model: kind.name(), n, gauge_mean: gm, gauge_se: gs, voronoi_mean: vm, voronoi_se: vs });
        }
        slopes.push(ModelSlopes {
            model: kind.name(),
            gauge: stats::loglog_slope(&ns, &g_by_rep),
            voronoi: stats::loglog_slope(&ns, &v_by_rep),
        });
    }
    (rows, slopes)
}

/// The Markdown tables printed by `run`.
pub fn markdown(rows: &[SummaryRow], slopes: &[ModelSlopes]) -> String {
    let mut s = String::from("| model | n | gauge error mean | SE | Voronoi loss mean | SE |\n|---|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.4e} | {:.2e} | {:.4e} | {:.2e} |",
            r.model, r.n, r.gauge_mean, r.gauge_se, r.voronoi_mean, r.voronoi_se
        );
    }
    s.push_str("\n| model | slope (gauge error) | 95% CI | slope (Voronoi loss) | 95% CI |\n|---|---:|---|---:|---|\n");
    for m in slopes {
        let _ = writeln!(
            s,
            "| {} | {:.3} | [{:.3}, {:.3}] | {:.3} | [{:.3}, {:.3}] |",
            m.model, m.gauge.slope, m.gauge.ci_low, m.gauge.ci_high, m.voronoi.slope, m.voronoi.ci_low, m.voronoi.ci_high
        );
    }
    s
}

/// Runs the simulation, writes CSV, JSON, PNG and SVG under `--out`, prints the tables.
pub fn run(args: &SimulateArgs) -> Result<SimulateSummary> {
    let cfg = args.config()?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let total: u64 = (cfg.grid.iter().sum::<usize>() * cfg.replicates * cfg.models.len()) as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("simulate {elapsed_precise} [{bar:40}] {percent}% of sample-fits, ETA {eta}")
            .expect("static template"),
    );
    let t0 = Instant::now();
    let recs = simulate_records(&cfg, threads, &bar);
    bar.finish_and_clear();
    let (rows, slopes) = summarize(&cfg, &recs);
    let p = |f: &str| args.out.join(f);
    let (csv, json, png, svg) = (p("simulate.csv"), p("summary.json"), p("simulate.png"), p("simulate.svg"));
    write_csv(&csv, &recs)?;
    let panel = |gauge: bool| plot::Panel {
        title: if gauge { "gauge-invariant error ||dQ-dQ*||+||dV-dV*||" } else { "Voronoi loss (SVD atoms)" }.into(),
        y_desc: if gauge { "mean error (band: 95% CI)" } else { "mean Voronoi loss (band: 95% CI)" }.into(),
        curves: slopes
            .iter()
            .map(|m| {
                let sl = if gauge { m.gauge } else { m.voronoi };
                plot::Curve {
                    label: format!("{}: slope {:.2} [{:.2}, {:.2}]", m.model, sl.slope, sl.ci_low, sl.ci_high),
                    points: rows
                        .iter()
                        .filter(|r| r.model == m.model)
                        .map(|r| if gauge { (r.n as f64, r.gauge_mean, r.gauge_se) } else { (r.n as f64, r.voronoi_mean, r.voronoi_se) })
                        .collect(),
                }
            })
            .collect(),
    };
    let title = format!(
        "d={}, N={}, rank {} (fit {}), truth {:?}, generators {:?}, noise {}, {} replicates, seed {}",
        cfg.d, cfg.tokens, cfg.rank, cfg.fit_rank, cfg.truth, cfg.generators, cfg.noise, cfg.replicates, cfg.seed
    );
    plot::write_plots(&title, &[panel(true), panel(false)], &png, &svg)?;
    let summary = SimulateSummary { config: cfg, rows, slopes, csv, json, png, svg };
    std::fs::write(&summary.json, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", summary.json.display()))?;
    println!("{}", markdown(&summary.rows, &summary.slopes));
    println!(
        "wrote {}, {}, {}, {} in {:.1} s",
        summary.csv.display(),
        summary.json.display(),
        summary.png.display(),
        summary.svg.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(summary)
}

#[cfg(test)]
mod tests;
