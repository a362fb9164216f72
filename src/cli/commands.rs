//! What each subcommand does; the work itself lives in the library modules.

use std::path::Path;

use burn::prelude::*;

use super::Command;
use crate::adapters::{Adaptable, AdapterConfig, Method, TargetModules, closed_form, select_targets};
use crate::classify::{self, RunSummary};
use crate::data::{self, LoadOptions};
use crate::error::{Error, Result};
use crate::models::bert::Bert;
use crate::rundir::{self, Start};
use crate::training;

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Train { spec, out, resume, overwrite } => {
            let summary = classify::train_run(&spec.to_spec()?, &out, Start::from_flags(resume, overwrite))?;
            println!("{}", table(&[summary]));
            eprintln!("run written to {}", out.display());
            Ok(())
        }
        Command::Compare { spec, methods, out, overwrite } => compare(&spec, &methods, &out, Start::from_flags(false, overwrite)),
        Command::Eval { run, data } => eval(&run, data.as_deref()),
        Command::Predict { run, text, input } => predict(&run, text, input.as_deref()),
        Command::Export { run, out, overwrite } => {
            rundir::check_output(&out, &run, overwrite)?;
            if crate::lm::is_lm_run(&run) {
                crate::lm::load_run(&run, &Device::flex())?.export_peft(&out)?;
            } else {
                let layout = classify::load_run(&run, &Device::flex())?.export_peft(&out)?;
                eprintln!("{}", classify::layout_note(layout, "export"));
            }
            eprintln!("PEFT adapter written to {}", out.display());
            Ok(())
        }
        Command::Merge { run, out, overwrite } if crate::lm::is_lm_run(&run) => {
            rundir::check_output(&out, &run, overwrite)?;
            crate::lm::load_run(&run, &Device::flex())?.save_merged(&out)?;
            eprintln!("merged model written to {}", out.display());
            Ok(())
        }
        Command::Merge { run, out, overwrite } => {
            rundir::check_output(&out, &run, overwrite)?;
            merge(&run, &out)
        }
        Command::Logits { run, peft, model, text, out } => {
            let source = match (&run, &peft) {
                (Some(run), _) => crate::interop::Source::Run(run),
                (None, Some(adapter)) => crate::interop::Source::Peft { adapter, model: &model },
                (None, None) => return Err(Error::Config("give --run or --peft".into())),
            };
            crate::interop::write_logits(&source, &text, &out)?;
            eprintln!("logits of {} texts written to {}", text.len(), out.display());
            Ok(())
        }
        Command::Info { model, rank, targets } => info(&model, rank, targets),
        Command::TrainLm { lm, out, resume, overwrite } => {
            let summary = crate::lm::train_run(&lm.to_spec()?, &out, Start::from_flags(resume, overwrite))?;
            println!("{}", crate::lm::table(&[summary]));
            eprintln!("run written to {}", out.display());
            Ok(())
        }
        Command::EvalLm { run, lm } => {
            let summary = match run {
                Some(run) => crate::lm::evaluate_run(&run)?,
                None => crate::lm::evaluate_base(&lm.to_spec()?)?,
            };
            println!("{}", crate::lm::table(&[summary]));
            Ok(())
        }
        Command::CompareLm { lm, methods, seeds, out, overwrite } => compare_lm(&lm, &methods, &seeds, &out, Start::from_flags(false, overwrite)),
        Command::Generate { model, run, prompt, chat, max_new_tokens, temperature, top_p, seed } => {
            let sampling = crate::generate::Sampling { max_new_tokens, temperature, top_p, seed, stop: vec![] };
            crate::lm::generate_cli(&model, run.as_deref(), &prompt, chat, sampling)
        }
        Command::Bench(args) => {
            let result = crate::bench::run(&args)?;
            println!("{}", serde_json::to_string(&result).expect("bench results serialize"));
            Ok(())
        }
        Command::Simulate(args) => {
            crate::simulate::run(&args).map_err(|e| Error::Simulation(format!("{e:#}")))?;
            Ok(())
        }
        Command::Fetch { names } => {
            if names.is_empty() {
                println!("cache: {}", crate::assets::cache_dir().display());
                for a in crate::assets::known() {
                    println!("  {:<18} {} ({}=={}, {})", a.usage, a.description, a.package, a.version, a.size);
                }
            }
            for name in names {
                let path = crate::assets::fetch(&name)?;
                println!("{name}: {}", path.display());
            }
            Ok(())
        }
    }
}

/// A Markdown table of finished runs.
pub fn table(runs: &[RunSummary]) -> String {
    let mut s = String::from(
        "| method | test accuracy | test macro-F1 | trainable params | trainable % | PPT | train time (s) | peak RSS (MiB) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        s += &format!(
            "| {} | {:.4} | {:.4} | {} | {:.3} | {:.2} | {:.1} | {} |\n",
            r.method,
            r.test.accuracy,
            r.test.macro_f1,
            r.trainable_params,
            r.trainable_percent,
            r.ppt,
            r.training.wall_time_s,
            r.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0}")),
        );
    }
    s
}

fn compare(spec: &super::SpecArgs, methods: &[String], out: &Path, start: Start) -> Result<()> {
    let mut summaries = vec![];
    for method in methods {
        let mut args = spec.clone();
        args.method.method = method.clone();
        let run_spec = args.to_spec()?;
        eprintln!("== {method} ==");
        summaries.push(classify::train_run(&run_spec, &out.join(method), start)?);
    }
    let table = table(&summaries);
    let s = &summaries[0];
    let base = spec.to_spec()?;
    let header = format!(
        "{} on {} ({} train / {} validation / {} test examples, {} labels), seed {}, {} epochs\n\n",
        s.model, s.data, s.sizes[0], s.sizes[1], s.sizes[2], s.labels.len(), base.train.seed, base.train.epochs
    );
    println!("\n{header}{table}");
    crate::files::write_atomic(&out.join("compare.md"), format!("{header}{table}").as_bytes())?;
    crate::files::write_json(&out.join("compare.json"), &summaries)
}

fn eval(run: &Path, data_file: Option<&str>) -> Result<()> {
    let device = Device::flex();
    let loaded = classify::load_run(run, &device)?;
    let batch_size = loaded.spec.train.batch_size;
    let tokenizer = loaded.tokenizer()?;
    let encoded = match data_file {
        Some(file) => {
            let options = LoadOptions { labels: Some(loaded.labels.clone()), ..Default::default() };
            tokenizer.encode_dataset(&data::open(file, &options)?)?
        }
        None => classify::prepare(&loaded.spec, &loaded.model_dir)?.test,
    };
    let batches = classify::eval_batches(&encoded, batch_size);
    let (metrics, _) = training::evaluate(&loaded.model, &batches, loaded.labels.len(), &device);
    println!("{}", serde_json::to_string_pretty(&metrics).expect("metrics serialize"));
    Ok(())
}

fn predict(run: &Path, texts: Vec<String>, input: Option<&Path>) -> Result<()> {
    let device = Device::flex();
    let loaded = classify::load_run(run, &device)?;
    let mut items: Vec<(String, Option<String>)> = texts.into_iter().map(|t| (t, None)).collect();
    if let Some(file) = input {
        let content = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        if content.trim().is_empty() {
            return Err(Error::data(file, None, "the --input file has no lines to predict (it is empty or blank)"));
        }
        let jsonl = file.extension().is_some_and(|e| e == "jsonl");
        for (n, line) in content.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            if !jsonl {
                items.push((line.to_string(), None));
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::format(file, format!("line {}: {e}", n + 1)))?;
            let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(String::from);
            let text = field(&loaded.spec.text_column)
                .ok_or_else(|| Error::format(file, format!("line {}: no string field {:?}", n + 1, loaded.spec.text_column)))?;
            items.push((text, loaded.spec.pair_column.as_deref().and_then(field)));
        }
    }
    if items.is_empty() {
        return Err(Error::Config("nothing to predict: give --text or --input".into()));
    }
    for ((text, pair), probs) in items.iter().zip(loaded.predict(&items, &device)?) {
        let (best, p) = probs.iter().enumerate().fold((0, f32::MIN), |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc });
        let all: serde_json::Map<String, serde_json::Value> = loaded.labels.iter().cloned().zip(probs.iter().map(|&p| serde_json::json!(p))).collect();
        println!("{}", serde_json::json!({"text": text, "text_pair": pair, "label": loaded.labels[best], "probability": p, "probabilities": all}));
    }
    Ok(())
}

fn merge(run: &Path, out: &Path) -> Result<()> {
    let loaded = classify::load_run(run, &Device::flex())?;
    let layout = loaded.model.save_merged(out, &loaded.labels, loaded.spec.max_len)?;
    for file in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"] {
        let src = loaded.model_dir.join(file);
        if src.exists() {
            std::fs::copy(&src, out.join(file)).map_err(|e| Error::io(&src, e))?;
        }
    }
    eprintln!("{}", classify::layout_note(layout, "merge"));
    eprintln!("merged model written to {}", out.display());
    Ok(())
}

fn info(model: &str, rank: usize, targets: Option<Vec<String>>) -> Result<()> {
    let device = Device::flex();
    let (description, linears, total, default_targets) = if crate::lm::is_decoder(model) {
        let decoder = crate::lm::Decoder::open(model, &device)?;
        let c = &decoder.model.config;
        let description = format!(
            "{}: LLaMA decoder, {} layers, hidden {}, {} heads / {} key-value heads, FFN {}, vocab {}, RoPE base {}{}",
            decoder.source.display(), c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.kv_heads(), c.intermediate_size,
            c.vocab_size, c.rope_theta, if c.tie_word_embeddings { ", tied embeddings" } else { "" }
        );
        let linears: Vec<_> = decoder.model.linears().iter().map(|l| (l.path.clone(), l.d_in(), l.d_out())).collect();
        (description, linears, decoder.model.num_params(), ["q_proj", "v_proj"])
    } else {
        let dir = classify::model_dir(model)?;
        let bert = Bert::load(&dir, "", &device)?;
        let c = &bert.config;
        let description = format!(
            "{}: BERT, {} layers, hidden {}, {} heads, FFN {}, vocab {}",
            dir.display(), c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size, c.vocab_size
        );
        let linears: Vec<_> = bert.linears().iter().map(|l| (l.path.clone(), l.d_in(), l.d_out())).collect();
        (description, linears, bert.num_params(), ["query", "value"])
    };
    let targets = targets.unwrap_or_else(|| default_targets.map(String::from).to_vec());
    println!("{description}\nparameters: {total}\n\nlinear modules (d_in -> d_out):");
    for (path, d_in, d_out) in &linears {
        println!("  {path}  {d_in} -> {d_out}");
    }
    println!("\ntrainable parameters at rank {rank} on {}:", targets.join(","));
    for method in [Method::Lora, Method::Dora, Method::Replora] {
        let config = AdapterConfig { method, r: rank, target_modules: TargetModules::Names(targets.clone()), ..Default::default() };
        let n = closed_form(&config, &select_targets(&config, &linears)?);
        println!("  {method:8} {n:>10}  ({:.4}% of the base)", 100.0 * n as f64 / total as f64);
    }
    Ok(())
}

/// Every method (and `base`, zero-shot) for every seed; one table of means and spreads.
fn compare_lm(lm: &super::LmArgs, methods: &[String], seeds: &[u64], out: &Path, start: Start) -> Result<()> {
    let mut summaries = vec![];
    for method in methods {
        for &seed in seeds {
            let mut args = lm.clone();
            args.train.seed = Some(seed);
            let dir = out.join(format!("{method}-seed{seed}"));
            eprintln!("== {method}, seed {seed} ==");
            if method == "base" {
                // The zero-shot model has no seed; evaluate it once.
                if seed == seeds[0] {
                    summaries.push(crate::lm::evaluate_base(&args.to_spec()?)?);
                }
                continue;
            }
            args.method.method = method.clone();
            summaries.push(crate::lm::train_run(&args.to_spec()?, &dir, start)?);
        }
    }
    let table = crate::lm::seed_table(&summaries);
    println!("\n{table}");
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    crate::files::write_atomic(&out.join("compare.md"), table.as_bytes())?;
    crate::files::write_json(&out.join("compare.json"), &summaries)
}
