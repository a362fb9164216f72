//! What each subcommand does; the work itself lives in the library ([`crate::run`] for every
//! task's lifecycle).

use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::generate::DecoderSource;
use super::{Command, RunArgs, SpecFromArgs, check_method_list};
use crate::adapters::{AdapterConfig, Method, MethodConfig, TargetModules, closed_form, select_targets_fused};
use crate::data::Format;
use crate::error::{Error, Result};
use crate::models::Family;
use crate::run::compare::{self, Arm, Plan};
use crate::run::output::{self, Output};
use crate::run::{self, Start};
use crate::tasks::{TaskKind, TaskSpec};
use crate::with_task;

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Train { run, out, resume, overwrite, devices } => {
            let devices = devices.open()?;
            let kind = run.task();
            let out = out.unwrap_or_else(|| default_dir(kind, "train"));
            let start = Start::from_flags(resume, overwrite);
            let summary = with_task!(kind, T => run::train::<T>(&T::spec_from(&run)?, &out, start, &devices))?;
            println!("{}", run::table(&[summary]));
            draw_run_curves(&out);
            eprintln!("run written to {}", out.display());
            Ok(())
        }
        Command::Compare { run, methods, seeds, train_fractions, out, overwrite, devices } => {
            let devices = devices.open()?;
            let kind = run.task();
            let out = out.unwrap_or_else(|| default_dir(kind, "compare"));
            output::check("--out", &out, Output::Dir)?;
            let start = Start::from_flags(false, overwrite);
            with_task!(kind, T => compare_cli::<T>(&run, methods, seeds, train_fractions, &out, start, &devices))
        }
        Command::Eval { run: Some(dir), args, device } => eval_run(&dir, &args, &device.open()?),
        Command::Eval { run: None, args, device } => {
            let device = device.open()?;
            args.refuse_for_zero_shot_eval()?;
            let summary = with_task!(args.task(), T => run::evaluate_base::<T>(&T::spec_from(&args)?, &device))?;
            println!("{}", run::table(std::slice::from_ref(&summary)));
            println!("{}", serde_json::to_string_pretty(&summary.test).expect("metrics serialize"));
            Ok(())
        }
        Command::Predict { run, text, input, device } => predict(&run, text, input.as_deref(), &device.open()?),
        Command::Export { run, out, overwrite, device } => {
            let device = device.open()?;
            output::check("--out", &out, Output::NewDir { overwrite })?;
            let note = with_task!(run::kind_of(&run)?, T => run::export::<T>(&run, &out, &device))?;
            eprintln!("{note}\nPEFT adapter written to {}", out.display());
            Ok(())
        }
        Command::Merge { run, out, overwrite, device } => {
            let device = device.open()?;
            output::check("--out", &out, Output::NewDir { overwrite })?;
            let note = with_task!(run::kind_of(&run)?, T => run::merge::<T>(&run, &out, &device))?;
            eprintln!("{note}\nmerged model written to {}", out.display());
            Ok(())
        }
        Command::Logits { run, peft, model, text, out, device } => {
            let device = device.open()?;
            let source = match (&run, &peft) {
                (Some(run), _) => crate::interop::Source::Run(run),
                (None, Some(adapter)) => crate::interop::Source::Peft { adapter, model: model.as_deref().unwrap_or("minilm") },
                (None, None) => return Err(Error::Config("give --run or --peft".into())),
            };
            output::check("--out", &out, Output::File)?;
            crate::interop::write_logits(&source, &text, &out, &device)?;
            eprintln!("logits of {} texts written to {}", text.len(), out.display());
            Ok(())
        }
        Command::Info { model, rank, targets, quantize } => info(&model, rank, targets, quantize),
        Command::Generate { model, quantize, run, image, prompt, chat, max_new_tokens, temperature, top_p, seed, device } => {
            let device = device.open()?;
            let sampling = crate::generate::Sampling { max_new_tokens, temperature, top_p, seed, stop: vec![] };
            let source = match &run {
                Some(dir) => DecoderSource::Run(dir),
                None => DecoderSource::Model { name: model.as_deref().unwrap_or("smollm2"), quantize: quantize.unwrap_or_default() },
            };
            super::generate::generate_cli(source, image.as_deref(), &prompt, chat, sampling, &device)
        }
        Command::Bench(args) => {
            let line = if args.decode {
                serde_json::to_string(&crate::apps::bench::decode::run(&args)?)
            } else {
                serde_json::to_string(&crate::apps::bench::run(&args)?)
            };
            println!("{}", line.expect("bench results serialize"));
            Ok(())
        }
        Command::Simulate(args) => {
            output::check("--out", &args.out, Output::Dir)?;
            crate::apps::simulate::run(&args).map_err(|e| Error::Simulation(format!("{e:#}")))?;
            Ok(())
        }
        Command::Sweep { grid, out, cells, report_only, device } => {
            let device = device.open()?;
            let stem = grid.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into());
            let out = out.unwrap_or_else(|| PathBuf::from("runs/sweep").join(stem));
            let cells = cells.unwrap_or_else(|| crate::apps::sweep::default_store(&out));
            crate::apps::sweep::sweep(&grid, &out, &cells, report_only, &device)
        }
        Command::Runs { dir, json } => list_runs(&dir.unwrap_or_else(|| PathBuf::from("runs")), json),
        Command::Plot { runs, out } => plot(&runs, out.unwrap_or_else(|| PathBuf::from("curves.png"))),
        Command::Fetch { names } => fetch(names),
    }
}

/// `curves.png` of a run `train` just finished; a failure to draw it is a warning, not a failed run.
fn draw_run_curves(run: &Path) {
    let drawn = crate::apps::curves::read_runs(&[run.to_path_buf()])
        .and_then(|runs| crate::apps::curves::write(&runs, &run.join(crate::layout::CURVES_FILE), None));
    if let Err(e) = drawn {
        eprintln!("warning: {} not drawn: {e}", crate::layout::CURVES_FILE);
    }
}

/// `runs [DIR] [--json]`.
fn list_runs(dir: &Path, json: bool) -> Result<()> {
    let listing = run::listing::list(dir)?;
    let text = if json {
        let runs = listing.runs.iter().map(|entry| serde_json::to_string(entry).expect("run entries serialize"));
        let unreadable =
            listing.unreadable.iter().map(|u| serde_json::json!({"dir": u.dir, "status": "unreadable", "error": u.error}).to_string());
        runs.chain(unreadable).map(|line| line + "\n").collect()
    } else if listing.runs.is_empty() && listing.unreadable.is_empty() {
        eprintln!("no runs under {}", dir.display());
        String::new()
    } else {
        run::listing::table(&listing, dir)
    };
    print_all(&text)
}

/// Writes `text` to stdout; a reader that stopped reading (`replora runs --json | head -1`) ends
/// the output, which is no error.
fn print_all(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("standard output", e)),
        _ => Ok(()),
    }
}

/// `plot --run DIR... --out FILE.png`: the PNG and the SVG beside it.
fn plot(runs: &[PathBuf], png: PathBuf) -> Result<()> {
    if png.extension().is_none_or(|e| !e.eq_ignore_ascii_case("png")) {
        return Err(Error::Config(format!("--out {}: give a file name ending in .png (the .svg is written beside it)", png.display())));
    }
    let svg = png.with_extension("svg");
    for path in [&png, &svg] {
        output::check("--out", path, Output::File)?;
    }
    let curves = crate::apps::curves::read_runs(runs)?;
    crate::apps::curves::write(&curves, &png, Some(&svg))?;
    eprintln!("curves of {} run(s) written to {} and {}", runs.len(), png.display(), svg.display());
    Ok(())
}

/// `eval --run DIR`: the run's test split, or the data or tasks given.
fn eval_run(dir: &Path, args: &RunArgs, device: &Device) -> Result<()> {
    let kind = run::kind_of(dir)?;
    if let Some(task) = args.task.filter(|t| *t != kind) {
        return Err(Error::State(format!(
            "{} is a {kind} run, not {task}: run `replora eval --run` without --task (or eval-lm)",
            dir.display()
        )));
    }
    args.refuse_for_eval_of_run(kind)?;
    let source = match kind {
        TaskKind::Classification | TaskKind::ImageClassification | TaskKind::Vqa | TaskKind::Video => args.data.clone(),
        // `none` (no other task) scores the run on its own test split, as no flag does.
        TaskKind::MultipleChoice => args
            .choice
            .eval_tasks
            .as_ref()
            .map(|t| t.iter().filter(|t| *t != "none").cloned().collect::<Vec<_>>().join(","))
            .filter(|t| !t.is_empty()),
    };
    let summary = with_task!(kind, T => run::evaluate::<T>(dir, source.as_deref(), device))?;
    println!("{}", run::table(std::slice::from_ref(&summary)));
    println!("{}", serde_json::to_string_pretty(&summary.test).expect("metrics serialize"));
    Ok(())
}

/// `fetch [NAMES]`: the named assets into the cache, or the list of known ones.
fn fetch(names: Vec<String>) -> Result<()> {
    if names.is_empty() {
        println!("cache: {}", crate::assets::cache_dir().display());
        for a in crate::assets::known() {
            println!("  {:<18} {} ({}=={}, {})", a.usage, a.description, a.package, a.version, a.size);
        }
        println!("  {:<18} {}", crate::data::video::clips::DATASET, crate::data::video::clips::DESCRIPTION);
    }
    for name in names {
        // A model asset goes through the model resolver, which converts ONNX-only ones.
        let is_model = crate::assets::known().iter().any(|a| a.name == name && a.model_type.is_some());
        let path = if is_model {
            crate::models::resolve(&name)?
        } else if name == crate::data::video::clips::DATASET {
            crate::data::video::clips::ensure()?
        } else {
            crate::assets::fetch(&name)?
        };
        println!("{name}: {}", path.display());
    }
    Ok(())
}

/// `runs/train`, `runs/compare` (classification); `runs/train-lm`, `runs/compare-lm`
/// (multiple-choice, where replora 0.1's decoder commands wrote); `runs/train-vqa`, `runs/compare-vqa` (vqa).
fn default_dir(kind: TaskKind, verb: &str) -> PathBuf {
    match kind {
        TaskKind::MultipleChoice => PathBuf::from(format!("runs/{verb}-lm")),
        TaskKind::Vqa => PathBuf::from(format!("runs/{verb}-vqa")),
        _ => PathBuf::from(format!("runs/{verb}")),
    }
}

/// Methods x seeds x fractions from the flags, each spec checked before the first run starts.
fn compare_cli<T: SpecFromArgs>(
    args: &RunArgs,
    methods: Option<Vec<String>>,
    seeds: Option<Vec<u64>>,
    fractions: Option<Vec<f64>>,
    out: &Path,
    start: Start,
    devices: &[Device],
) -> Result<()> {
    if let Some(method) = &args.method.method {
        return Err(Error::Config(format!("--method {method} is not for `compare`: it trains each method of --methods")));
    }
    let multi_seed = T::KIND == TaskKind::MultipleChoice;
    let methods = methods.unwrap_or_else(|| match multi_seed {
        true => ["base", "lora", "dora", "replora"].map(String::from).to_vec(),
        false => ["lora", "replora"].map(String::from).to_vec(),
    });
    check_method_list(&methods, multi_seed)?;
    // A method's own settings act on its runs only (and are refused if no method takes them).
    // The base model's spec takes the flags of a LoRA run (it trains nothing).
    let args_for = |arm: &Arm| {
        let method = match arm {
            Arm::Base => "lora",
            Arm::Method(m) => m,
        };
        let mut a = args.clone();
        (a.method.method, a.method.trained_with) = (Some(method.to_string()), methods.clone());
        a
    };
    let arms: Vec<Arm> = methods.iter().map(|m| Arm::parse(m)).collect();
    let base = T::spec_from(&args_for(arms.first().unwrap_or(&Arm::Method("lora".into()))))?;
    let plan = Plan {
        seeds: seeds.unwrap_or_else(|| if multi_seed && args.train.seed.is_none() { vec![0, 1, 2] } else { vec![base.train().seed] }),
        fractions: fractions.unwrap_or_else(|| vec![base.train_fraction()]),
        methods: arms,
    };
    let spec_for = |arm: &Arm, seed: u64, fraction: f64| -> Result<T::Spec> {
        let mut a = args_for(arm);
        a.train.seed = Some(seed);
        a.train_fraction = Some(fraction);
        T::spec_from(&a)
    };
    let summaries = compare::compare::<T>(&plan, &spec_for, out, start, devices)?;
    let text = compare::write(&summaries, out)?;
    println!("\n{text}");
    Ok(())
}

fn predict(run: &Path, texts: Vec<String>, input: Option<&Path>, device: &Device) -> Result<()> {
    let mut inputs: Vec<serde_json::Value> = texts.into_iter().map(|t| serde_json::json!({ "text": t })).collect();
    if let Some(file) = input {
        let content = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        if content.trim().is_empty() {
            return Err(Error::data(file, None, "the --input file has no lines to predict (it is empty or blank)"));
        }
        // By format, as training reads data (a label column is read but not used); other files
        // hold one input per line.
        match crate::data::Format::from_path(file).ok() {
            Some(Format::Csv) => inputs.extend(crate::data::csv::read_table(file, b',')?.objects()),
            Some(Format::Tsv) => inputs.extend(crate::data::csv::read_table(file, b'\t')?.objects()),
            format => {
                for (n, line) in content.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    inputs.push(match format {
                        Some(Format::Jsonl) => {
                            serde_json::from_str(line).map_err(|e| Error::format(file, format!("line {}: {e}", n + 1)))?
                        }
                        _ => serde_json::json!({ "text": line }),
                    });
                }
            }
        }
    }
    if inputs.is_empty() {
        return Err(Error::Config("nothing to predict: give --text or --input".into()));
    }
    for answer in with_task!(run::kind_of(run)?, T => run::predict::<T>(run, &inputs, device))? {
        println!("{answer}");
    }
    Ok(())
}

fn info(model: &str, rank: usize, targets: Option<Vec<String>>, quantize: crate::adapters::base_weight::Quantize) -> Result<()> {
    let Some(family) = Family::detect(model) else {
        crate::models::resolve(model)?; // a missing path: say so
        return Err(Error::Config(format!(
            "{model}: not a model replora knows (a Hugging Face directory whose config.json names a model_type replora reads: {}; a .gguf file; or an asset name)",
            crate::models::known_model_types()
        )));
    };
    let info = family.info(model, quantize, &Device::flex())?;
    println!("{}\nparameters: {}\n{}\n\nlinear modules (d_in -> d_out):", info.description, info.params, info.weights_held);
    for (path, d_in, d_out) in &info.linears {
        match info.fused.get(path) {
            Some(f) => println!("  {path}  {d_in} -> {d_out}  (rows {}..{} of {})", f.start, f.start + d_out, f.module),
            None => println!("  {path}  {d_in} -> {d_out}"),
        }
    }
    if let Some(f) = info.fused.values().next() {
        let leaf = |p: &str| p.rsplit('.').next().unwrap_or(p).to_string();
        let mut fused: Vec<String> = info.fused.values().map(|f| leaf(&f.module)).collect();
        fused.sort();
        fused.dedup();
        println!(
            "\nthe checkpoint stores {} fused (e.g. {}); replora holds their row blocks as the linears above: \
             target a block by its name, or the fused name for all its blocks; PEFT files use the fused names",
            fused.join(", "),
            f.module
        );
    }
    let count = |config: AdapterConfig, names: &[String]| -> Result<usize> {
        let config = AdapterConfig { r: rank, target_modules: TargetModules::Names(names.to_vec()), ..config };
        Ok(closed_form(&config, &select_targets_fused(&config, &info.linears, &info.fused)?))
    };
    let percent = |n: usize| 100.0 * n as f64 / info.params as f64;
    let low_rank = targets.clone().unwrap_or(info.default_targets);
    println!("\ntrainable parameters at rank {rank} on {}:", low_rank.join(","));
    for method in [Method::Lora, Method::Dora, Method::Replora] {
        let n = count(AdapterConfig::new(method), &low_rank)?;
        println!("  {method:8} {n:>10}  ({:.4}% of the base)", percent(n));
    }
    let sites = targets.unwrap_or(info.adapter_sites);
    let n = count(AdapterConfig::new(Method::Houlsby), &sites)?;
    println!(
        "\nbottleneck adapter (width d/{}) on {}:\n  adapter  {n:>10}  ({:.4}% of the base)",
        crate::adapters::bottleneck::REDUCTION_FACTOR,
        sites.join(","),
        percent(n)
    );
    let p = crate::adapters::PrefixConfig::default();
    let trained = count(AdapterConfig::new(Method::Prefix), &info.key_projections)?;
    let direct = crate::adapters::PrefixConfig { reparameterize: false, ..p.clone() };
    let kept = count(AdapterConfig::with_method(MethodConfig::Prefix(direct)), &info.key_projections)?;
    println!(
        "\nprefix tuning ({} virtual tokens, reparameterization width {}) at every layer's {}:\n  prefix   {trained:>10}  ({:.4}% of the base) trained; {kept} ({:.4}%) kept after training",
        p.length,
        p.hidden,
        info.key_projections.join(","),
        percent(trained),
        percent(kept)
    );
    Ok(())
}
