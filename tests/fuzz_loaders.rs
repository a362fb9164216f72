//! Every parser of a user file, fed seeded mutations of real files written by replora itself:
//! each parse ends in `Ok` or a typed error, never a panic or an absurd allocation
//! (tests/fuzz; `scripts/fuzz` runs the same tests much longer).

mod common;
mod fuzz;
mod support;

use std::path::{Path, PathBuf};

use burn::optim::GradientsParams;
use burn::prelude::*;
use common::{TinyModel, input};
use fuzz::{Budget, Campaign, DEFAULT_ITERS, Rng, SAFETENSORS_FIELDS, Tracking};
use replora::adapters::{AdapterConfig, Method, PeftModel, SeedKind, TargetModules};
use replora::data::{self, Format, LoadOptions};
use replora::formats::{native, peft};
use replora::training::checkpoint::{self, Progress, Schedule};
use replora::training::state::TrainableState;
use replora::training::{TrainConfig, trainer};
use replora::weights::gguf::Gguf;
use replora::weights::tensors;
use serde_json::Value;

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// No parse of a file of `len` bytes may ask for more at once. (The slack covers burn's
/// memory pools, which grow in power-of-two chunks whichever input happens to be parsed.)
fn limit(len: usize) -> usize {
    (64 << 20) + 16 * len
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn model() -> TinyModel {
    TinyModel::new(2, 4, 2, 4, 7, &device())
}

fn adapter(method: Method) -> AdapterConfig {
    let mut c = AdapterConfig {
        method: method.defaults(),
        r: 2,
        lora_alpha: 4.0,
        target_modules: TargetModules::Names(vec!["q_proj".into(), "v_proj".into(), "up_proj".into()]),
        seed: 3,
        ..Default::default()
    };
    if let Some(r) = c.method.settings_mut::<replora::adapters::RepLora>() {
        r.hidden = 5;
        r.seed_kind = SeedKind::Full;
    }
    c
}

fn loss(peft: &PeftModel<TinyModel>) -> Tensor<1> {
    let x = input(&peft.model, 2, 5, 100, &device());
    let target = input(&peft.model, 2, 5, 500, &device());
    (peft.model.forward(x, &peft.training_deltas()) - target).square().mean()
}

/// Real files: a native RepLoRA adapter, a PEFT DoRA export, and a checkpoint after two
/// optimizer steps, under `root`.
fn fixtures(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (native_dir, peft_dir, ckpt) = (root.join("native"), root.join("peft"), root.join("checkpoint"));
    native::save(&PeftModel::new(model(), &adapter(Method::Replora)).unwrap().adapters, &native_dir).unwrap();
    peft::export(&PeftModel::new(model(), &adapter(Method::Dora)).unwrap().adapters, &Default::default(), &peft_dir).unwrap();
    let mut peft = PeftModel::new(model(), &adapter(Method::Lora)).unwrap();
    let mut optim = trainer::optimizer(&TrainConfig::default(), vec![]);
    for _ in 0..2 {
        let grads = GradientsParams::from_grads(loss(&peft).backward(), &peft);
        peft = optim.step(1e-2, peft, grads);
    }
    let history = vec![replora::training::EvalMetrics::default()];
    let progress = Progress { epoch: 1, batch_in_epoch: 3, step: 7, best: Some((0.5, 0)), history, ..Default::default() };
    checkpoint::write_dir(&ckpt, &TrainableState::of(&peft), Some(&optim), Some(&progress)).unwrap();
    (native_dir, peft_dir, ckpt)
}

/// Mutations of one file of `dir`: truncations at every Nth offset, each u64 field set to each
/// boundary value, then seeded random byte (and, for safetensors, header) mutations. Each
/// mutated copy of the directory goes through `parse`.
fn bytes_campaign(c: &mut Campaign, dir: &Path, file: &str, fields: &[usize], seed: u64, parse: &dyn Fn(&Path) -> Result<(), String>) {
    let base = std::fs::read(dir.join(file)).unwrap();
    let work = dir.with_extension("mutated");
    let run = |c: &mut Campaign, bytes: &[u8], what: String| {
        fuzz::copy_with(dir, &work, file, bytes);
        c.parse(&format!("{file}: {what}"), limit(bytes.len()), || parse(&work));
    };
    let budget = Budget::from_env(DEFAULT_ITERS);
    let accepted = c.accepted;
    run(c, &base, "unchanged".into());
    assert_eq!(c.accepted, accepted + 1, "{}: the unmutated {file} must load", c.name);
    for cut in (0..base.len()).step_by(budget.truncation_step(base.len(), 48)).take_while(|_| budget.open()) {
        run(c, &base[..cut], format!("truncated to {cut} bytes"));
    }
    for &at in fields {
        let end = (at + 8).min(base.len());
        let original = u64::from_le_bytes(base[at..at + 8].try_into().unwrap());
        for value in fuzz::boundary_u64(original, base.len()) {
            let mut b = base.clone();
            b[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
            run(c, &b, format!("u64 field at {at} = {value}"));
        }
    }
    let mut rng = Rng::new(seed);
    let safetensors = file.ends_with(".safetensors");
    for i in budget.iterations() {
        let (bytes, what) = if safetensors && i % 3 == 0 {
            fuzz::mutate_safetensors_header(&base, &mut rng)
        } else {
            fuzz::mutate_bytes(&base, fields, &mut rng)
        };
        run(c, &bytes, format!("#{i} {what}"));
    }
}

/// Structural mutations of a JSON file of `dir` (values, keys, types, duplicates, truncation).
fn json_campaign(c: &mut Campaign, dir: &Path, file: &str, seed: u64, parse: &dyn Fn(&Path) -> Result<(), String>) {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let base: Value = serde_json::from_str(&text).unwrap();
    let work = dir.with_extension("mutated");
    let mut rng = Rng::new(seed);
    for i in Budget::from_env(DEFAULT_ITERS).iterations() {
        let (new, what) = if i % 4 == 3 {
            fuzz::mutate_json_text(&text, &mut rng)
        } else {
            let (v, what) = fuzz::mutate_json(&base, &mut rng);
            (serde_json::to_string_pretty(&v).unwrap(), what)
        };
        fuzz::copy_with(dir, &work, file, new.as_bytes());
        c.parse(&format!("{file}: #{i} {what}"), limit(new.len()), || parse(&work));
    }
}

fn text<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

#[test]
fn safetensors_files_never_panic() {
    let root = tempfile::tempdir().unwrap();
    let (native_dir, peft_dir, ckpt) = fixtures(root.path());
    let mut c = Campaign::new("safetensors");
    let read = |file: &'static str| move |dir: &Path| text(tensors::read(&dir.join(file))).map(drop);
    bytes_campaign(&mut c, &native_dir, native::WEIGHTS_FILE, &SAFETENSORS_FIELDS, 1, &read(native::WEIGHTS_FILE));
    let mut c2 = Campaign::new("safetensors (PEFT)");
    bytes_campaign(&mut c2, &peft_dir, native::WEIGHTS_FILE, &SAFETENSORS_FIELDS, 2, &read(native::WEIGHTS_FILE));
    let mut c3 = Campaign::new("safetensors (checkpoint)");
    bytes_campaign(&mut c3, &ckpt, "trainable.safetensors", &SAFETENSORS_FIELDS, 3, &read("trainable.safetensors"));
    for c in [c, c2, c3] {
        c.finish();
    }
}

/// Mutates an adapter directory's config (JSON) and weights (safetensors) with seeds `seed`, `seed + 1`.
fn adapter_campaigns(what: &str, dir: &Path, seed: u64, load: &dyn Fn(&Path) -> Result<(), String>) {
    let mut c = Campaign::new(&format!("{what} config"));
    json_campaign(&mut c, dir, native::CONFIG_FILE, seed, load);
    c.finish();
    let mut c = Campaign::new(&format!("{what} weights"));
    bytes_campaign(&mut c, dir, native::WEIGHTS_FILE, &SAFETENSORS_FIELDS, seed + 1, load);
    c.finish();
}

#[test]
fn native_adapters_never_panic() {
    let root = tempfile::tempdir().unwrap();
    let (native_dir, _, _) = fixtures(root.path());
    adapter_campaigns("native adapter", &native_dir, 4, &|dir| text(native::load(model(), dir)).map(drop));
}

#[test]
fn peft_adapters_never_panic() {
    let root = tempfile::tempdir().unwrap();
    let (_, peft_dir, _) = fixtures(root.path());
    adapter_campaigns("PEFT adapter", &peft_dir, 6, &|dir| text(peft::import(model(), dir)).map(drop));
}

/// The schedule of the fixture's checkpoint (epoch 2 of 2, batch 3 of 4, one batch a step).
const SCHEDULE: Schedule = Schedule { epochs: 2, batches_per_epoch: 4, grad_accum: 1 };

/// Loads a checkpoint the way `--resume` does, then takes one optimizer step with it (a
/// state that loads but cannot be used would panic there).
fn resume(dir: &Path) -> Result<(), String> {
    let peft = text(checkpoint::restore(dir, PeftModel::new(model(), &adapter(Method::Lora)).unwrap()))?;
    let mut optim = text(checkpoint::read_optimizer(dir, trainer::optimizer(&TrainConfig::default(), vec![])))?;
    let progress = text(checkpoint::read_progress(dir, &SCHEDULE))?;
    let grads = GradientsParams::from_grads(loss(&peft).backward(), &peft);
    let _ = optim.step(1e-2, peft, grads);
    let _ = progress.history.get(progress.best.map_or(0, |(_, e)| e));
    Ok(())
}

#[test]
fn checkpoints_never_panic() {
    let root = tempfile::tempdir().unwrap();
    let (_, _, ckpt) = fixtures(root.path());
    let mut c = Campaign::new("checkpoint tensors");
    bytes_campaign(&mut c, &ckpt, "trainable.safetensors", &SAFETENSORS_FIELDS, 8, &resume);
    c.finish();
    let mut c = Campaign::new("checkpoint optimizer state");
    // burnpack: magic, version, u32 metadata length at byte 6.
    bytes_campaign(&mut c, &ckpt, "optimizer.bpk", &[2, 6], 9, &resume);
    c.finish();
    let mut c = Campaign::new("checkpoint progress");
    json_campaign(&mut c, &ckpt, "progress.json", 10, &resume);
    c.finish();
}

#[test]
fn gguf_files_never_panic() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("gguf");
    std::fs::create_dir_all(&dir).unwrap();
    let file = fuzz::gguf::tiny_llama();
    std::fs::write(dir.join("model.gguf"), &file.bytes).unwrap();
    let parse = |dir: &Path| -> Result<(), String> {
        let path = dir.join("model.gguf");
        let g = text(Gguf::open(&path))?;
        for t in &g.tensors {
            text(g.tensor(&t.name))?;
        }
        text(g.llama_config())?;
        text(g.llama_tensors())?;
        text(g.tokenizer())?.encode("ab a!", false).map_err(|e| e.to_string())?;
        text(replora::models::llama::Llama::from_gguf(&g, &path, &Device::flex())).map(drop)
    };
    let mut c = Campaign::new("GGUF");
    bytes_campaign(&mut c, &dir, "model.gguf", &file.fields, 11, &parse);
    c.finish();
}

/// A small real dataset in each format.
fn datasets(dir: &Path) -> Vec<(&'static str, Format)> {
    let rows = [("a good film", "pos"), ("an awful, \"long\" plot", "neg"), ("fine\tacting", "pos"), ("not great", "neg")];
    let jsonl: String = rows.iter().map(|(t, l)| format!("{}\n", serde_json::json!({"text": t, "label": l, "text_pair": "x"}))).collect();
    let csv: String = "text,label,text_pair\n".to_string()
        + &rows.iter().map(|(t, l)| format!("\"{}\",{l},\"p, q\"\n", t.replace('"', "\"\""))).collect::<String>();
    let tsv: String =
        "label\ttext\n".to_string() + &rows.iter().map(|(t, l)| format!("{l}\t\"{}\"\n", t.replace('"', "\"\""))).collect::<String>();
    let examples: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, (t, l))| {
            if i == 1 {
                serde_json::json!({"input": t, "target_scores": format!("{{'{l}': 1, 'other': 0.0}}")})
            } else {
                serde_json::json!({"input": t, "target_scores": {*l: 1, "other": 0}})
            }
        })
        .collect();
    let task = serde_json::json!({"name": "tiny", "task_prefix": "Q?", "examples": examples});
    std::fs::write(dir.join("data.jsonl"), jsonl).unwrap();
    std::fs::write(dir.join("data.csv"), csv).unwrap();
    std::fs::write(dir.join("data.tsv"), tsv).unwrap();
    std::fs::write(dir.join("task.json"), serde_json::to_string_pretty(&task).unwrap()).unwrap();
    vec![("data.jsonl", Format::Jsonl), ("data.csv", Format::Csv), ("data.tsv", Format::Tsv), ("task.json", Format::BigBench)]
}

#[test]
fn datasets_never_panic() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    for (seed, (file, format)) in datasets(&dir).into_iter().enumerate() {
        let load = move |d: &Path| {
            let options = LoadOptions { format: Some(format), bigbench_prefixes: seed % 2 == 0, ..Default::default() };
            text(data::load(&d.join(file), &options)).map(drop)
        };
        let mut c = Campaign::new(file);
        bytes_campaign(&mut c, &dir, file, &[], 20 + seed as u64, &load);
        if format == Format::BigBench {
            json_campaign(&mut c, &dir, file, 30, &load);
        }
        c.finish();
    }
}

#[test]
fn tokenizer_files_never_panic() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tok");
    support::tiny_tokenizer(&dir);
    let load = |d: &Path| -> Result<(), String> {
        let t = text(replora::data::tokenize::Tokenizer::from_model_dir(d).and_then(|t| t.with_max_len(12)))?;
        text(t.encode("The movie was not good, but the acting was great!", Some("really awful plot")))?;
        Ok(())
    };
    let mut c = Campaign::new("tokenizer.json");
    json_campaign(&mut c, &dir, "tokenizer.json", 40, &load);
    bytes_campaign(&mut c, &dir, "tokenizer.json", &[], 41, &load);
    c.finish();
}

// Regressions: each input below panicked, overflowed the stack or asked for terabytes before
// the parser was fixed.

fn err_of<T>(r: Result<T, replora::Error>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn gguf_nested_arrays_and_bad_head_counts_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.gguf");
    // One metadata value: an array of arrays of arrays ... 100 000 deep.
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.push(b'k');
    b.extend(9u32.to_le_bytes());
    for _ in 0..100_000 {
        b.extend(9u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
    }
    std::fs::write(&path, &b).unwrap();
    assert!(err_of(Gguf::open(&path)).contains("nested deeper"));

    for heads in [0, 3, 32] {
        let path = dir.path().join(format!("heads{heads}.gguf"));
        std::fs::write(&path, fuzz::gguf::tiny_llama_with_heads(heads).bytes).unwrap();
        let e = err_of(Gguf::open(&path).and_then(|g| g.llama_tensors()));
        assert!(e.contains(&format!("does not split into {heads} heads")), "{e}");
    }
}

/// A tensor of a type replora does not read (the K-quant Q5_K) is refused naming it and its type.
#[test]
fn a_k_quant_tensor_is_refused_by_its_ggml_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.gguf");
    let mut file = fuzz::gguf::tiny_llama();
    // The last tensor's ggml type: the u32 just before its data offset, the file's last field.
    let at = *file.fields.last().unwrap() - 4;
    file.bytes[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
    std::fs::write(&path, &file.bytes).unwrap();
    let e = err_of(Gguf::open(&path).and_then(|g| replora::models::llama::Llama::from_gguf(&g, &path, &Device::flex())));
    assert!(e.contains("blk.0.ffn_down.weight has ggml type Q5_K, which is not supported"), "{e}");
}

#[test]
fn adapter_configs_declaring_huge_ranks_are_refused_before_allocating() {
    let root = tempfile::tempdir().unwrap();
    let (native_dir, peft_dir, _) = fixtures(root.path());
    let edit = |dir: &Path, f: &dyn Fn(&mut Value)| {
        let file = dir.join(native::CONFIG_FILE);
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&file, v.to_string()).unwrap();
    };
    let huge = 1u64 << 40;
    let (weights, _) = tensors::read(&native_dir.join(native::WEIGHTS_FILE)).unwrap();
    let all = weights.values().map(|t| t.data.len()).sum::<usize>();
    let good = std::fs::read(native_dir.join(native::CONFIG_FILE)).unwrap();
    for (what, f) in [
        ("r", &(|v: &mut Value| v["adapter"]["r"] = huge.into()) as &dyn Fn(&mut Value)),
        ("replora.hidden", &|v: &mut Value| v["adapter"]["replora"]["hidden"] = huge.into()),
        ("rank_pattern", &|v: &mut Value| v["adapter"]["rank_pattern"] = serde_json::json!({"q_proj": huge})),
        // Within the file's size each, together far more than it holds.
        ("needs", &move |v: &mut Value| v["adapter"]["replora"]["hidden"] = all.into()),
    ] {
        std::fs::write(native_dir.join(native::CONFIG_FILE), &good).unwrap();
        edit(&native_dir, f);
        let e = err_of(native::load(model(), &native_dir));
        assert!(e.contains(what) && e.contains("this file holds"), "{what}: {e}");
        if what == "needs" {
            assert!(e.contains("trainable values on this model"), "{e}");
        }
    }
    edit(&peft_dir, &|v| v["r"] = huge.into());
    let e = err_of(peft::import(model(), &peft_dir));
    assert!(e.contains("r = 1099511627776") && e.contains("this file holds"), "{e}");
}

#[test]
fn optimizer_states_that_fit_no_parameter_are_errors() {
    use burn::tensor::{Bytes, DType};
    let root = tempfile::tempdir().unwrap();
    let (_, _, ckpt) = fixtures(root.path());
    let state = checkpoint::read_state(&ckpt).unwrap();
    let (name, id) = state.ids.iter().next().unwrap();
    let shape = state.tensors[name].shape.clone();
    let moment = |id: Option<u64>, shape: &[usize]| {
        let n: usize = shape.iter().product();
        burn_pack::Tensor::new(
            format!("{}.moment_1", id.unwrap_or(7)),
            DType::F32,
            shape.to_vec(),
            id,
            Bytes::from_bytes_vec(vec![0; 4 * n]),
        )
    };
    let cases = [
        ("no parameter id", burn_pack::Writer::new(vec![moment(None, &shape)])),
        ("a wrong shape", burn_pack::Writer::new(vec![moment(Some(*id), &[shape[0] + 1, shape[1]])])),
        ("a wrong rank", burn_pack::Writer::new(vec![]).with_scalar(&format!("{id}.__rank"), burn_pack::Scalar::from(3usize))),
    ];
    for (what, writer) in cases {
        std::fs::write(ckpt.join("optimizer.bpk"), writer.into_bytes().unwrap().to_vec()).unwrap();
        let e = resume(&ckpt).expect_err(what);
        assert!(e.contains("corrupt or truncated optimizer state"), "{what}: {e}");
    }
}

#[test]
fn tokenizer_templates_naming_undefined_tokens_are_errors() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tok");
    support::tiny_tokenizer(&dir);
    let file = dir.join("tokenizer.json");
    let good: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let cases: [(&str, &dyn Fn(&mut Value)); 3] = [
        ("does not define", &|v| drop(v["post_processor"]["special_tokens"].as_object_mut().unwrap().remove("[SEP]"))),
        ("different number of ids and tokens", &|v| v["post_processor"]["special_tokens"]["[CLS]"]["ids"] = serde_json::json!([2, 2])),
        ("uses the second sequence B", &|v| v["post_processor"]["single"][1]["Sequence"]["id"] = "B".into()),
    ];
    for (expected, edit) in cases {
        let mut v = good.clone();
        edit(&mut v);
        std::fs::write(&file, v.to_string()).unwrap();
        let e = err_of(replora::data::tokenize::Tokenizer::from_model_dir(&dir).and_then(|t| t.encode("a good film", None)));
        assert!(e.contains(expected) && e.contains("tokenizer.json"), "{e}");
    }
}
