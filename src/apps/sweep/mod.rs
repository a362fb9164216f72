//! `replora sweep --grid FILE`: a grid of `train` runs (any method, trainer or task flag x
//! seeds x training fractions x datasets), resumable, one JSONL row per run, and a report that
//! selects on validation data only (see [`report`]).
//!
//! A grid file (TOML):
//!
//! ```toml
//! metric = "accuracy"      # validation metric that selects: accuracy, macro_f1 or loss
//! baseline = "lora"        # paired differences are taken against this method
//! [fixed]                  # `train` flags of every cell
//! epochs = 4
//! [grid]                   # each key a `train` flag with a list of values: the cartesian product
//!                          # ([[grid]] tables: the union of several products)
//! data = ["bigbench:intent_recognition", "bigbench:winowhy"]
//! method = ["lora", "replora"]
//! lr = [1e-3, 2e-3, 4e-3]
//! seed = [0, 1, 2]
//! ```
//!
//! Each cell is parsed exactly as `replora train` parses its flags, so a typo fails before the
//! first run. A cell's run directory is named by the run spec its flags resolve to, in a store
//! shared by all grids (`runs/sweep/cells/`): a cell whose directory holds a `summary.json` is
//! read back, not rerun (also when another grid ran it); an interrupted cell resumes from its
//! checkpoint; a cell another process is training (two sweeps sharing their cells) is skipped,
//! and named at the end.

pub mod plot;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::Device;
use clap::Parser;
use serde::{Deserialize, Serialize};

use super::cli::{Cli, Command, RunArgs, SpecFromArgs};
use crate::error::{Error, Result};
use crate::files::{read_json, write_atomic, write_json};
use crate::run::output::{self, Output};
use crate::run::{self, RunSummary, Start};
use crate::training::{BestMetric, EvalMetrics};
use crate::with_task;

/// A grid file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// The validation metric that selects configurations.
    #[serde(default = "accuracy")]
    pub metric: BestMetric,
    /// The method paired differences are taken against.
    #[serde(default = "lora")]
    pub baseline: String,
    #[serde(default)]
    pub fixed: BTreeMap<String, toml::Value>,
    pub grid: Grids,
}

/// One cartesian product (`[grid]`), or the union of several (`[[grid]]`: one-at-a-time
/// designs, each knob varied around the defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Grids {
    One(BTreeMap<String, Vec<toml::Value>>),
    Many(Vec<BTreeMap<String, Vec<toml::Value>>>),
}

impl Grids {
    fn parts(&self) -> &[BTreeMap<String, Vec<toml::Value>>] {
        match self {
            Grids::One(g) => std::slice::from_ref(g),
            Grids::Many(gs) => gs,
        }
    }
}

fn accuracy() -> BestMetric {
    BestMetric::Accuracy
}

fn lora() -> String {
    "lora".into()
}

/// One run of the grid: its flags (fixed and varied) and where it runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// Every flag of the run, as given to `train` (without `--out`).
    pub flags: BTreeMap<String, String>,
    /// The flags that vary in the grid.
    pub varied: Vec<String>,
    /// Its run directory in the store, named by the run spec the flags resolve to.
    pub dir: PathBuf,
}

/// What the report reads: one finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub flags: BTreeMap<String, String>,
    pub varied: Vec<String>,
    pub method: String,
    pub seed: u64,
    pub data: String,
    pub train_fraction: f64,
    /// The best epoch's validation metrics (what selection sees).
    pub validation: EvalMetrics,
    pub test: EvalMetrics,
    pub trainable_params: usize,
    pub trainable_percent: f64,
    pub wall_time_s: f64,
    pub run: PathBuf,
}

fn flag_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(flag_value).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The spec as a cell's identity: a method's own settings (RepLoRA's generators, the
/// bottleneck's width) are left out of other methods' specs, which ignore them, so a changed
/// RepLoRA default does not rerun LoRA cells (nor does a new method's setting rerun any). A
/// decoder's base held as stored is left out too: cells from before `--quantize` keep their names.
fn spec_key(mut spec: serde_json::Value) -> String {
    if let Some(fields) = spec.as_object_mut().filter(|s| s.get("quantize").is_some_and(|q| q == "stored")) {
        fields.remove("quantize");
    }
    if let Some(adapter) = spec.get_mut("adapter").and_then(|a| a.as_object_mut()) {
        let method = adapter.get("method").and_then(|m| m.as_str()).unwrap_or_default().to_string();
        for (own, setting) in [("replora", "replora"), ("adapter", "bottleneck"), ("prefix", "prefix")] {
            if method != own {
                adapter.remove(setting);
            }
        }
    }
    spec.to_string()
}

/// A spec as cells are named by: as `run.json` held it before [`crate::tasks::Tuning`] carried
/// the adapter's config, when full and probe runs held a placeholder LoRA config (on the
/// architecture's default targets, with the run's seed), so that their cells keep their names.
fn key_value<T: crate::tasks::Task>(spec: &T::Spec) -> serde_json::Value {
    use crate::adapters::{AdapterConfig, Method, TargetModules};
    use crate::models::Architecture;
    use crate::tasks::TaskSpec;
    let mut value = serde_json::to_value(spec).expect("specs serialize");
    if spec.tuning().adapter().is_none() {
        let targets = <T::Arch as Architecture>::default_targets(Method::Lora).iter().map(|t| t.to_string()).collect();
        let placeholder =
            AdapterConfig { target_modules: TargetModules::Names(targets), seed: spec.train().seed, ..AdapterConfig::new(Method::Lora) };
        value["adapter"] = serde_json::to_value(placeholder).expect("configs serialize");
    }
    value
}

/// FNV-1a: a stable short name for a cell's spec.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl Grid {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let grid: Grid = toml::from_str(&text).map_err(|e| Error::format(path, e))?;
        let parts = grid.grid.parts();
        if parts.is_empty() {
            return Err(Error::format(path, "the grid is empty"));
        }
        if let Some((key, _)) = parts.iter().flatten().find(|(_, values)| values.is_empty()) {
            return Err(Error::format(path, format!("grid key {key:?} has no values")));
        }
        if let Some(key) = parts.iter().flat_map(|p| p.keys()).find(|k| grid.fixed.contains_key(*k)) {
            return Err(Error::format(path, format!("{key:?} is both fixed and varied")));
        }
        if let Some(key) = parts
            .iter()
            .flat_map(|p| p.keys())
            .chain(grid.fixed.keys())
            .find(|k| ["out", "resume", "overwrite", "config"].contains(&k.as_str()))
        {
            return Err(Error::format(path, format!("{key:?}: the sweep sets each run's directory itself")));
        }
        Ok(grid)
    }

    /// Every cell, in a fixed order (a cell in two parts of the grid once); [`sweep`] gives each
    /// its directory.
    pub fn cells(&self) -> Vec<Cell> {
        let parts = self.grid.parts();
        let mut varied: Vec<String> = parts.iter().flat_map(|p| p.keys().cloned()).collect();
        varied.sort();
        varied.dedup();
        let mut cells: Vec<Cell> = vec![];
        let mut seen: std::collections::HashSet<BTreeMap<String, String>> = std::collections::HashSet::new();
        for part in parts {
            let mut product: Vec<BTreeMap<String, String>> = vec![self.fixed.iter().map(|(k, v)| (k.clone(), flag_value(v))).collect()];
            for (key, values) in part {
                product = product
                    .into_iter()
                    .flat_map(|c| values.iter().map(move |v| (c.clone(), v)))
                    .map(|(mut c, v)| {
                        c.insert(key.clone(), flag_value(v));
                        c
                    })
                    .collect();
            }
            for flags in product {
                if seen.insert(flags.clone()) {
                    cells.push(Cell { flags, varied: varied.clone(), dir: PathBuf::new() });
                }
            }
        }
        cells
    }
}

impl Cell {
    /// The cell's flags parsed as `replora train` parses them.
    pub fn args(&self) -> Result<RunArgs> {
        let mut argv = vec!["replora".to_string(), "train".to_string()];
        for (k, v) in &self.flags {
            let flag = k.replace('_', "-");
            // A switch (`--rslora`) is given for true and left out for false; a flag that takes
            // a boolean (`--exempt-from-decay BOOL`) gets the value.
            match (v.as_str(), is_switch(&flag)) {
                ("true", true) => argv.push(format!("--{flag}")),
                ("false", true) => {}
                _ => argv.extend([format!("--{flag}"), v.clone()]),
            }
        }
        let cli = Cli::try_parse_from(&argv)
            .map_err(|e| Error::Config(format!("sweep cell {}: {}", self.describe(), e.render().to_string().trim())))?;
        match cli.command {
            Command::Train { run, .. } => Ok(run),
            _ => unreachable!("parsed as train"),
        }
    }

    fn describe(&self) -> String {
        self.varied.iter().filter_map(|k| self.flags.get(k).map(|v| format!("{k}={v}"))).collect::<Vec<_>>().join(" ")
    }

    fn row(&self, s: &RunSummary) -> Row {
        let training = s.training.as_ref();
        Row {
            flags: self.flags.clone(),
            varied: self.varied.clone(),
            method: s.method.clone(),
            seed: s.seed,
            data: s.data.clone(),
            train_fraction: s.train_fraction,
            validation: training.map(|t| t.best_validation.clone()).unwrap_or_default(),
            test: s.test.clone(),
            trainable_params: s.trainable_params,
            trainable_percent: s.trainable_percent,
            wall_time_s: training.map_or(0.0, |t| t.wall_time_s),
            run: self.dir.clone(),
        }
    }
}

/// Trains a cell, or continues or reads back what another sweep left (decided with it locked).
fn train_cell<T: SpecFromArgs>(args: &RunArgs, dir: &Path, device: &Device) -> Result<RunSummary> {
    run::train::<T>(&T::spec_from(args)?, dir, Start::Continue, std::slice::from_ref(device))
}

/// `results.jsonl`: one row per finished run (rewritten whole, atomically).
fn write_rows(rows: &[Row], out: &Path) -> Result<()> {
    let lines: String = rows.iter().map(|r| format!("{}\n", serde_json::to_string(r).expect("rows serialize"))).collect();
    write_atomic(&out.join("results.jsonl"), lines.as_bytes())
}

/// The run directories of every grid under `runs/sweep/` by default: `out`'s sibling `cells/`.
pub fn default_store(out: &Path) -> PathBuf {
    out.parent().unwrap_or(Path::new(".")).join("cells")
}

/// Runs (or reads back) every cell of `grid` (run directories under `store`), writes
/// `out/results.jsonl` after each run, then the report. With `report_only`, no cell is run: the
/// report covers the finished ones. Every run trains on `device`.
pub fn sweep(grid_file: &Path, out: &Path, store: &Path, report_only: bool, device: &Device) -> Result<()> {
    output::check("--out", out, Output::Dir)?;
    output::check("--cells", store, Output::Dir)?;
    let grid = Grid::read(grid_file)?;
    let (cells, parsed) = resolve_cells(&grid, store)?;
    let done = |c: &Cell| crate::layout::is_finished(&c.dir);
    let todo = cells.iter().filter(|c| !done(c)).count();
    match report_only {
        true => eprintln!("sweep: {} cells, {} finished, {todo} unrun (--report-only runs none)", cells.len(), cells.len() - todo),
        false => eprintln!("sweep: {} cells, {} finished, {todo} to run", cells.len(), cells.len() - todo),
    }
    if report_only {
        check_report_source(store, cells.len() - todo, cells.len())?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_json(&out.join("grid.json"), &cells)?;
    let started = Instant::now();
    let mut ran = 0;
    let mut rows = vec![];
    let mut skipped: Vec<String> = vec![];
    let mut failures: Vec<Failure> = vec![];
    for (cell, args) in cells.iter().zip(&parsed) {
        let summary: RunSummary = if done(cell) {
            read_json(&cell.dir.join(crate::layout::SUMMARY_FILE))?
        } else if report_only {
            continue;
        } else {
            let attempted = ran + failures.len() + skipped.len();
            let eta = match attempted {
                0 => String::new(),
                n => format!(", about {:.0} min left", started.elapsed().as_secs_f64() / n as f64 * (todo - n) as f64 / 60.0),
            };
            eprintln!("== sweep [{}/{todo}{eta}] {} ==", attempted + 1, cell.describe());
            std::fs::create_dir_all(store).map_err(|e| Error::io(store, e))?;
            write_json(&cell.dir.with_extension("cell.json"), cell)?;
            match with_task!(args.task(), T => train_cell::<T>(args, &cell.dir, device)) {
                Ok(summary) => {
                    ran += 1;
                    rows.push(cell.row(&summary));
                    write_rows(&rows, out)?;
                }
                // Another process trains this cell: not a failure; it reports the cell itself.
                Err(Error::Busy { pid, .. }) => {
                    let by = pid.map_or("another process".into(), |p| format!("process {p}"));
                    eprintln!("sweep: {} is being trained by {by}: skipped", cell.describe());
                    skipped.push(format!("{} ({by}, {})", cell.describe(), cell.dir.display()));
                }
                // One failing cell does not stop the others: it is recorded, reported, and
                // retried by the next sweep (it has no summary.json).
                Err(e) => {
                    eprintln!("sweep: cell {} failed, going on with the others: {e}", cell.describe());
                    failures.push(Failure { cell: cell.describe(), run: cell.dir.clone(), error: e.to_string() });
                    write_failures(&failures, out)?;
                }
            }
            continue;
        };
        rows.push(cell.row(&summary));
    }
    write_rows(&rows, out)?;
    if !report_only {
        write_failures(&failures, out)?;
    }
    if ran > 0 {
        eprintln!("sweep: {ran} runs in {:.1} min", started.elapsed().as_secs_f64() / 60.0);
    }
    let text = report::write(&rows, &failures, &grid, out)?;
    println!("{text}");
    if !skipped.is_empty() {
        eprintln!(
            "sweep: skipped {} cells being trained by other processes, left out of this report (rerun the sweep once they finish): {}",
            skipped.len(),
            skipped.join("; ")
        );
    }
    match failures.len() {
        0 => Ok(()),
        n => Err(Error::State(format!(
            "{n} of {} cells failed (their errors are in {} and report.md); the same command retries them, and runs nothing else",
            cells.len(),
            out.join(FAILURES_FILE).display()
        ))),
    }
}

/// `--report-only` replaces the report and `results.jsonl`: refused where the store it reads
/// holds none of the grid's runs (a wrong `--cells`), which would empty them.
fn check_report_source(store: &Path, finished: usize, cells: usize) -> Result<()> {
    let s = store.display();
    if !store.is_dir() {
        return Err(Error::State(format!(
            "--report-only: --cells {s} does not exist; give the --cells the sweep ran with (nothing was written)"
        )));
    }
    if finished == 0 {
        return Err(Error::State(format!(
            "--report-only: --cells {s} holds none of the grid's {cells} cells finished; give the --cells the sweep ran with, or run the sweep (nothing was written)"
        )));
    }
    Ok(())
}

/// A cell whose run failed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    pub cell: String,
    pub run: PathBuf,
    pub error: String,
}

const FAILURES_FILE: &str = "failed.jsonl";

/// `failed.jsonl`: one row per cell that failed in the last sweep (none: no file).
fn write_failures(failures: &[Failure], out: &Path) -> Result<()> {
    let path = out.join(FAILURES_FILE);
    if failures.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
            _ => Ok(()),
        };
    }
    let lines: String = failures.iter().map(|f| format!("{}\n", serde_json::to_string(f).expect("failures serialize"))).collect();
    write_atomic(&path, lines.as_bytes())
}

/// Every cell's flags parsed and checked before the first run; each cell's directory is named
/// by the spec they resolve to, so a cell means the same run whatever the defaults of the day,
/// and two spellings of one spec (a default given explicitly) are one cell. A method's own
/// settings apply to the cells of that method. Progress is printed every few seconds.
fn resolve_cells(grid: &Grid, store: &Path) -> Result<(Vec<Cell>, Vec<RunArgs>)> {
    let all = grid.cells();
    let mut methods: Vec<&str> = all.iter().map(|c| c.flags.get("method").map_or("replora", String::as_str)).collect();
    methods.sort();
    methods.dedup();
    let mut cells: Vec<Cell> = vec![];
    let mut parsed: Vec<RunArgs> = vec![];
    let mut dirs = std::collections::HashSet::new();
    let (started, mut shown) = (Instant::now(), Instant::now());
    for (i, cell) in all.iter().enumerate() {
        if shown.elapsed().as_secs_f64() >= 2.0 {
            eprintln!("sweep: checked {i} of {} cells ({:.0} s)", all.len(), started.elapsed().as_secs_f64());
            shown = Instant::now();
        }
        let (dir, args) = cell_dir(cell, &methods, store)?;
        if dirs.insert(dir.clone()) {
            cells.push(Cell { dir, ..cell.clone() });
            parsed.push(args);
        }
    }
    Ok((cells, parsed))
}

/// A cell's flags parsed, and its directory in `store`, named by the spec they resolve to
/// within a grid of `methods`.
fn cell_dir(cell: &Cell, methods: &[&str], store: &Path) -> Result<(PathBuf, RunArgs)> {
    let mut args = cell.args()?;
    args.method.trained_with = methods.iter().map(|m| m.to_string()).collect();
    let spec = with_task!(args.task(), T => T::spec_from(&args).and_then(|s| {
        crate::tasks::TaskSpec::validate(&s)?;
        Ok(format!("{}:{}", <T as crate::tasks::Task>::KIND, spec_key(key_value::<T>(&s))))
    }))
    .map_err(|e| Error::Config(format!("sweep cell {}: {e}", cell.describe())))?;
    let method = cell.flags.get("method").map_or("replora", String::as_str);
    Ok((store.join(format!("{method}-{:016x}", fnv(&spec))), args))
}

/// Whether `train`'s `--flag` is a switch (takes no value). The switches are read off clap's
/// definition once, not rebuilt for every flag of every cell.
fn is_switch(flag: &str) -> bool {
    static SWITCHES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let switches = SWITCHES.get_or_init(|| {
        use clap::CommandFactory;
        let cli = Cli::command();
        let train = cli.find_subcommand("train").expect("train is a command");
        train
            .get_arguments()
            .filter(|a| matches!(a.get_action(), clap::ArgAction::SetTrue))
            .filter_map(|a| a.get_long().map(String::from))
            .collect()
    });
    switches.iter().any(|s| s == flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(text: &str) -> Grid {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, text).unwrap();
        Grid::read(&path).unwrap()
    }

    /// Switches are given or left out; a flag taking a boolean gets `true` / `false` as its value.
    #[test]
    fn booleans_reach_switches_and_boolean_flags_alike() {
        let cells = grid("[grid]\nexempt_from_decay = [true, false]\nrslora = [true, false]\n").cells();
        let parsed: Vec<(Option<bool>, bool)> =
            cells.iter().map(|c| c.args().map(|a| (a.train.exempt_from_decay, a.method.rslora)).unwrap()).collect();
        for expected in [(Some(true), true), (Some(true), false), (Some(false), true), (Some(false), false)] {
            assert!(parsed.contains(&expected), "{expected:?} not in {parsed:?}");
        }
    }

    #[test]
    fn cells_are_the_product_or_the_union_of_products_without_repeats() {
        let g = grid("[fixed]\nepochs = 2\n[grid]\nmethod = [\"lora\", \"replora\"]\nlr = [0.001, 0.002]\nseed = [0, 1, 2]\n");
        let cells = g.cells();
        assert_eq!(cells.len(), 12);
        assert!(cells.iter().all(|c| c.flags["epochs"] == "2" && c.varied == ["lr", "method", "seed"]));
        // One-at-a-time: hidden around the default, then activation; hidden = 16 twice is one cell.
        let g = grid(
            "[[grid]]\nhidden = [8, 16]\nseed = [0, 1]\n[[grid]]\nactivation = [\"gelu\"]\nseed = [0, 1]\n[[grid]]\nhidden = [16]\nseed = [0]\n",
        );
        let cells = g.cells();
        assert_eq!(cells.len(), 6, "{:?}", cells.iter().map(|c| &c.flags).collect::<Vec<_>>());
        assert!(cells.iter().any(|c| c.flags.get("activation").is_some_and(|a| a == "gelu") && !c.flags.contains_key("hidden")));
        let args = cells[0].args().unwrap();
        assert_eq!(args.method.hidden, Some(8));
    }

    #[test]
    fn a_grid_refuses_keys_the_sweep_owns_and_empty_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        for (text, expected) in [
            ("[grid]\nout = [\"x\"]\n", "\"out\""),
            ("[grid]\nlr = []\n", "no values"),
            ("[fixed]\nlr = 1\n[grid]\nlr = [2]\n", "both fixed and varied"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Grid::read(&path).unwrap_err().to_string();
            assert!(e.contains(expected) && e.contains("g.toml"), "{text}: {e}");
        }
    }

    /// The study is reproducible only if every grid in `sweeps/` still reads, each of its cells
    /// parses as `replora train` flags, and its `# Run:` line names the file and its cell count.
    #[test]
    fn every_grid_in_the_repository_parses_and_states_its_size() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps");
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
        files.sort();
        assert!(files.len() >= 20, "the study's grids are missing from {}", dir.display());
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let grid = Grid::read(&path).unwrap_or_else(|e| panic!("{e}"));
            let cells = grid.cells();
            // Every flag of every cell acts on its run (none is refused as another method's).
            resolve_cells(&grid, Path::new("cells")).unwrap_or_else(|e| panic!("{name}: {e}"));
            let text = std::fs::read_to_string(&path).unwrap();
            let run = text.lines().find(|l| l.starts_with("# Run:")).unwrap_or_else(|| panic!("{name}: no `# Run:` line"));
            assert!(run.contains(&format!("--grid sweeps/{name}")), "{name}: {run}");
            let count: usize = run
                .split('(')
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name}: no cell count in {run}"));
            assert_eq!(count, cells.len(), "{name}: {run}");
        }
    }

    #[test]
    fn a_cell_key_holds_only_its_own_method_settings() {
        let spec = |method: &str| serde_json::json!({"adapter": {"method": method, "r": 8, "replora": {"hidden": 8}, "bottleneck": {"size": null}}});
        let lora = spec_key(spec("lora"));
        assert!(!lora.contains("replora\":{") && !lora.contains("bottleneck"), "{lora}");
        // A LoRA cell written before the bottleneck setting existed keeps its key.
        assert_eq!(lora, spec_key(serde_json::json!({"adapter": {"method": "lora", "r": 8, "replora": {"hidden": 8}}})));
        assert!(spec_key(spec("replora")).contains("hidden") && !spec_key(spec("replora")).contains("bottleneck"));
        assert!(spec_key(spec("adapter")).contains("bottleneck") && !spec_key(spec("adapter")).contains("hidden"));
    }

    /// The cells of every grid of the study as they were named before adapter methods were
    /// plug-ins (issue 28), and one run spec per task and method as `run.json` held it then:
    /// finished cells must keep their names (else every sweep reruns them), and old specs must
    /// read back as the spec their flags give today. `REPLORA_BLESS=1` rewrites the fixture
    /// from the grids in `sweeps/`.
    #[test]
    fn cells_and_specs_keep_the_names_and_format_they_had_before_methods_were_plug_ins() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sweep-cells-0.1.json");
        if std::env::var_os("REPLORA_BLESS").is_some() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps");
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
            files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
            files.sort();
            let (mut grids, mut specs, mut seen) = (vec![], vec![], std::collections::HashSet::new());
            for path in files {
                let grid = Grid::read(&path).unwrap();
                let all = grid.cells();
                let mut methods: Vec<&str> = all.iter().map(|c| c.flags.get("method").map_or("replora", String::as_str)).collect();
                methods.sort();
                methods.dedup();
                let (cells, parsed) = resolve_cells(&grid, Path::new("cells")).unwrap();
                for (cell, args) in cells.iter().zip(&parsed) {
                    if seen.insert(format!("{:?} {}", args.task(), args.method.name())) {
                        let spec = with_task!(args.task(), T => serde_json::to_value(T::spec_from(args).unwrap()).unwrap());
                        specs.push(serde_json::json!({"flags": cell.flags, "methods": methods, "spec": spec}));
                    }
                }
                let cells: Vec<_> = cells.iter().map(|c| serde_json::json!({"flags": c.flags, "dir": c.dir})).collect();
                grids.push(serde_json::json!({"grid": path.file_name().unwrap().to_string_lossy(), "methods": methods, "cells": cells}));
            }
            std::fs::write(&file, serde_json::to_string(&serde_json::json!({"grids": grids, "specs": specs})).unwrap()).unwrap();
        }
        let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let flags = |v: &serde_json::Value| -> BTreeMap<String, String> { serde_json::from_value(v["flags"].clone()).unwrap() };
        let methods = |v: &serde_json::Value| -> Vec<String> { serde_json::from_value(v["methods"].clone()).unwrap() };
        let mut checked = 0;
        for grid in fixture["grids"].as_array().unwrap() {
            let methods = methods(grid);
            let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
            for c in grid["cells"].as_array().unwrap() {
                let cell = Cell { flags: flags(c), varied: vec![], dir: PathBuf::new() };
                let (dir, _) = cell_dir(&cell, &methods, Path::new("cells")).unwrap();
                assert_eq!(dir.to_string_lossy(), c["dir"].as_str().unwrap(), "{}: {:?}", grid["grid"], cell.flags);
                checked += 1;
            }
        }
        assert!(checked > 100, "{checked} cells");
        let specs = fixture["specs"].as_array().unwrap();
        assert!(specs.len() >= 12, "{} specs: every method of every task the study ran", specs.len());
        for s in specs {
            let cell = Cell { flags: flags(s), varied: vec![], dir: PathBuf::new() };
            let methods = methods(s);
            let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
            let mut args = cell.args().unwrap();
            args.method.trained_with = methods.iter().map(|m| m.to_string()).collect();
            with_task!(args.task(), T => {
                let old: <T as crate::tasks::Task>::Spec = serde_json::from_value(s["spec"].clone()).unwrap_or_else(|e| panic!("{:?}: {e}", cell.flags));
                assert_eq!(old, T::spec_from(&args).unwrap(), "{:?}", cell.flags);
            });
        }
    }
}
