//! Hugging Face PEFT's LoRA/DoRA adapter layout: `adapter_config.json` and
//! `adapter_model.safetensors` with keys `base_model.model.<path>.lora_A.weight` `[r, d_in]`,
//! `.lora_B.weight` `[d_out, r]` and DoRA's `.lora_magnitude_vector` `[d_out]`.
//! A RepLoRA adapter is exported as the LoRA it materializes to; a decoder's prefix in the
//! `PREFIX_TUNING` layout.
//!
//! Fused linears (Phi-3's `qkv_proj`, `gate_up_proj`; see [`FusedRows`]) are one module to PEFT.
//! LoRAs on some of its blocks `p` (`A_p` `[r_p, d_in]`, `B_p` `[rows_p, r_p]`) are exactly one
//! LoRA of rank `sum r_p` on the fused linear: `A` stacks the `A_p`, `B` holds each `B_p` in its
//! block's rows and its own columns, zeros elsewhere (an untargeted block's rows are zero), and
//! `lora_alpha` (or `alpha_pattern`) keeps the scale; DoRA's per-row magnitudes are joined where
//! every block is adapted (otherwise the file cannot be exact, and is refused). Reading a fused
//! LoRA gives each block the shared `A` and its rows of `B` (and of the magnitude).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use serde_json::{Value, json};

use super::native::{CONFIG_FILE, WEIGHTS_FILE};
use crate::adapters::set::NamedParams;
use crate::adapters::{
    Adaptable, AdapterConfig, AdapterSet, Deltas, FusedRows, Method, PeftModel, PrefixConfig, PrefixTuning, Target, TargetModules,
    fused_blocks,
};
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::weights::tensors::{self, HostTensor};

/// What PEFT's config records about the base model.
#[derive(Clone, Debug, Default)]
pub struct PeftInfo {
    /// `base_model_name_or_path`, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub base_model_name_or_path: String,
    /// `task_type`, e.g. `SEQ_CLS`, `CAUSAL_LM`, `FEATURE_EXTRACTION`; `None` writes null.
    pub task_type: Option<String>,
    /// Fully trained modules saved beside the adapter (PEFT's `modules_to_save`, e.g. a
    /// classification head), as `<module>.weight` / `<module>.bias` in PyTorch layout.
    pub modules_to_save: BTreeMap<String, HostTensor>,
    /// Removed from the front of every module path, e.g. `bert.` when the adapter of a
    /// classifier's encoder is written for a bare `BertModel` (`FEATURE_EXTRACTION`).
    pub strip_prefix: String,
    /// Module-path renames (substring, replacement) for a library whose module names differ
    /// from the checkpoint's (transformers 5 loads Dinov2's `attention.attention.query` as
    /// `attention.q_proj`). When given, `target_modules` lists the renamed paths in full.
    pub rename: Vec<(String, String)>,
    /// Key/value heads per layer, for a prefix in PEFT's `PREFIX_TUNING` layout (decoders);
    /// `None` where PEFT's prefix placement differs from replora's (encoders shift positions).
    pub prefix_heads: Option<usize>,
}

const PREFIX: &str = "base_model.model.";

impl PeftInfo {
    /// A module path as the loading library names it.
    fn module_path(&self, path: &str) -> String {
        let path = path.strip_prefix(self.strip_prefix.as_str()).unwrap_or(path);
        self.rename.iter().fold(path.to_string(), |p, (from, to)| p.replace(from.as_str(), to))
    }
}

/// Writes `adapters` (materialized first if RepLoRA) in PEFT's layout into `dir`.
pub fn export(adapters: &AdapterSet, info: &PeftInfo, dir: &Path) -> Result<()> {
    if let Some(prefix) = adapters.settings_of::<PrefixTuning>() {
        return export_prefix(adapters, prefix, info, dir);
    }
    let lora = adapters.to_lora()?;
    let c = &lora.config;
    let deltas = lora.deltas(false);
    let modules = peft_modules(&lora.targets, &deltas, c)?;
    let mut out = BTreeMap::new();
    let use_dora = modules.iter().any(|m| m.magnitude.is_some());
    for m in &modules {
        let key = format!("{PREFIX}{}", info.module_path(&m.path));
        out.insert(format!("{key}.lora_A.weight"), m.a.clone());
        out.insert(format!("{key}.lora_B.weight"), m.b.clone());
        if let Some(magnitude) = &m.magnitude {
            out.insert(format!("{key}.lora_magnitude_vector"), magnitude.clone());
        }
    }
    for (name, t) in &info.modules_to_save {
        out.insert(format!("{PREFIX}{name}"), t.clone());
    }
    let mut modules_to_save: Vec<&str> = info.modules_to_save.keys().filter_map(|k| k.rsplit_once('.').map(|(m, _)| m)).collect();
    modules_to_save.dedup();
    let fused = lora.targets.iter().any(|t| t.fused.is_some());
    let target_modules = match &c.target_modules {
        _ if !info.rename.is_empty() => json!(modules.iter().map(|m| info.module_path(&m.path)).collect::<Vec<_>>()),
        TargetModules::Names(n) if fused => fused_target_names(n, &lora.targets, &modules, info),
        TargetModules::Regex(_) if fused => json!(modules.iter().map(|m| info.module_path(&m.path)).collect::<Vec<_>>()),
        TargetModules::Names(n) => json!(n),
        TargetModules::Regex(r) => json!(r),
    };
    // Fused linears have ranks and scales of their own: every module's rank and alpha is written.
    let (r, lora_alpha, rank_pattern, alpha_pattern) = match fused {
        true => rank_and_alpha(&modules, info),
        false => (c.r, c.lora_alpha, json!(c.rank_pattern), json!(c.alpha_pattern)),
    };
    let config = json!({
        "peft_type": "LORA",
        "task_type": info.task_type,
        "base_model_name_or_path": info.base_model_name_or_path,
        "r": r,
        "lora_alpha": lora_alpha,
        "lora_dropout": c.lora_dropout,
        "target_modules": target_modules,
        "layers_to_transform": c.layers_to_transform,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "use_rslora": c.use_rslora,
        "use_dora": use_dora,
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": if modules_to_save.is_empty() { json!(null) } else { json!(modules_to_save) },
        "revision": null,
    });
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    tensors::write(&dir.join(WEIGHTS_FILE), &out, Some(meta))?;
    write_json(&dir.join(CONFIG_FILE), &config)
}

/// One module of a PEFT LoRA file: its factors in PyTorch's layout (`A` `[rank, d_in]`, `B`
/// `[d_out, rank]`), DoRA's magnitude, and the rank and alpha of its scale.
struct PeftModule {
    path: String,
    a: HostTensor,
    b: HostTensor,
    magnitude: Option<HostTensor>,
    rank: usize,
    alpha: f64,
}

/// The modules PEFT sees: each target, but the blocks of a fused linear joined into one LoRA
/// on it.
fn peft_modules(targets: &[Target], deltas: &Deltas, config: &AdapterConfig) -> Result<Vec<PeftModule>> {
    let factors = |t: &Target| {
        let d = deltas.get(&t.path).expect("a materialized adapter has a delta per target");
        (
            HostTensor::from_tensor(&d.a).transpose(),
            HostTensor::from_tensor(&d.b).transpose(),
            d.magnitude.as_ref().map(HostTensor::from_tensor),
        )
    };
    let mut modules = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for t in targets {
        let Some(f) = &t.fused else {
            let (a, b, magnitude) = factors(t);
            modules.push(PeftModule { path: t.path.clone(), a, b, magnitude, rank: t.rank, alpha: t.alpha });
            continue;
        };
        if !done.insert(f.module.clone()) {
            continue;
        }
        let mut blocks: Vec<&Target> = targets.iter().filter(|b| b.fused.as_ref().is_some_and(|g| g.module == f.module)).collect();
        blocks.sort_by_key(|b| b.fused.as_ref().map_or(0, |g| g.start));
        modules.push(join_blocks(f, &blocks, &factors, config)?);
    }
    Ok(modules)
}

/// One LoRA on the fused linear `f` equal to the LoRAs on its `blocks`: rank `sum r_p`, `A` the
/// blocks' `A` stacked, `B` block-diagonal in (block rows, block columns). The scale is kept
/// exactly by the fused module's alpha where every block has the same scale and an alpha gives
/// it exactly; otherwise each block's `B` is multiplied by its scale over the fused one.
fn join_blocks(
    f: &FusedRows,
    blocks: &[&Target],
    factors: &dyn Fn(&Target) -> (HostTensor, HostTensor, Option<HostTensor>),
    config: &AdapterConfig,
) -> Result<PeftModule> {
    let parts: Vec<_> = blocks.iter().map(|b| factors(b)).collect();
    let magnitude = joined_magnitude(f, blocks, parts.iter().map(|(_, _, m)| m.clone()).collect())?;
    // Every block with one A, one rank and one scale (a fused LoRA as PEFT trains it, read into
    // replora): that LoRA itself, A once and B's blocks one under the other.
    let covered = blocks.iter().map(|b| b.d_out).sum::<usize>() == f.total;
    let (first, (first_a, _, _)) = (blocks[0], &parts[0]);
    let shared = blocks.iter().zip(&parts).all(|(b, (a, _, _))| b.rank == first.rank && b.scale == first.scale && a.data == first_a.data);
    if covered && shared {
        let b = parts.iter().flat_map(|(_, b, _)| b.data.iter().copied()).collect();
        return Ok(PeftModule {
            path: f.module.clone(),
            a: first_a.clone(),
            b: HostTensor { shape: vec![f.total, first.rank], data: b },
            magnitude,
            rank: first.rank,
            alpha: first.alpha,
        });
    }
    let rank: usize = blocks.iter().map(|b| b.rank).sum();
    let d_in = blocks[0].d_in;
    let scale = blocks[0].scale;
    let alpha = if config.use_rslora { scale * (rank as f64).sqrt() } else { scale * rank as f64 };
    let fused_scale = config.scale(rank, alpha);
    let (mut a, mut b) = (Vec::with_capacity(rank * d_in), vec![0f32; f.total * rank]);
    let mut column = 0;
    for (block, (block_a, block_b, _)) in blocks.iter().zip(&parts) {
        let start = block.fused.as_ref().map_or(0, |g| g.start);
        a.extend_from_slice(&block_a.data);
        let fold = (block.scale != fused_scale).then(|| (block.scale / fused_scale) as f32);
        for row in 0..block.d_out {
            for k in 0..block.rank {
                let v = block_b.data[row * block.rank + k];
                b[(start + row) * rank + column + k] = fold.map_or(v, |s| v * s);
            }
        }
        column += block.rank;
    }
    Ok(PeftModule {
        path: f.module.clone(),
        a: HostTensor { shape: vec![rank, d_in], data: a },
        b: HostTensor { shape: vec![f.total, rank], data: b },
        magnitude,
        rank,
        alpha,
    })
}

/// `target_modules` for a file with fused linears: the config's plain names (no dots), each
/// name of a block replaced by its fused linear's (`q_proj` -> `qkv_proj`: the same layers), or,
/// for dotted names, the modules' paths.
fn fused_target_names(names: &[String], targets: &[Target], modules: &[PeftModule], info: &PeftInfo) -> Value {
    if names.iter().any(|n| n.contains('.')) {
        return json!(modules.iter().map(|m| info.module_path(&m.path)).collect::<Vec<_>>());
    }
    let leaf = |p: &str| p.rsplit('.').next().unwrap_or(p).to_string();
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let fused = targets.iter().find(|t| leaf(&t.path) == *name).and_then(|t| t.fused.as_ref()).map(|f| leaf(&f.module));
        let name = fused.unwrap_or_else(|| name.clone());
        if !out.contains(&name) {
            out.push(name);
        }
    }
    json!(out)
}

/// `r`, `lora_alpha`, `rank_pattern` and `alpha_pattern` giving every module its own rank and
/// alpha: the first module's as the defaults, the others' under their last name where every
/// module of that name has the same, else under their escaped paths.
fn rank_and_alpha(modules: &[PeftModule], info: &PeftInfo) -> (usize, f64, Value, Value) {
    let (r, alpha) = (modules[0].rank, modules[0].alpha);
    let leaf = |p: &str| p.rsplit('.').next().unwrap_or(p).to_string();
    let (mut ranks, mut alphas) = (serde_json::Map::new(), serde_json::Map::new());
    for m in modules {
        let same_name = modules.iter().filter(|o| leaf(&o.path) == leaf(&m.path));
        let uniform = same_name.clone().all(|o| o.rank == m.rank && o.alpha == m.alpha);
        let key = if uniform { leaf(&m.path) } else { regex::escape(&info.module_path(&m.path)) };
        if m.rank != r {
            ranks.insert(key.clone(), json!(m.rank));
        }
        if m.alpha != alpha {
            alphas.insert(key, json!(m.alpha));
        }
    }
    (r, alpha, Value::Object(ranks), Value::Object(alphas))
}

/// DoRA's magnitude of the fused linear `f`: its blocks' joined, which is exact only where every
/// block is adapted (the magnitude rescales each row); `None` for LoRA.
fn joined_magnitude(f: &FusedRows, blocks: &[&Target], magnitudes: Vec<Option<HostTensor>>) -> Result<Option<HostTensor>> {
    if magnitudes.iter().all(Option::is_none) {
        return Ok(None);
    }
    if blocks.iter().map(|b| b.d_out).sum::<usize>() != f.total {
        let adapted: Vec<&str> = blocks.iter().map(|b| b.path.rsplit('.').next().unwrap_or(&b.path)).collect();
        return Err(Error::Config(format!(
            "DoRA on {} of {} cannot be written in PEFT's layout exactly: PEFT sees one linear there, whose DoRA magnitude rescales all its rows, the unadapted blocks' too; target all of its blocks (its fused name) for DoRA, or use LoRA",
            adapted.join(", "),
            f.module
        )));
    }
    let data = magnitudes.into_iter().flat_map(|m| m.expect("DoRA has a magnitude on every target").data).collect();
    Ok(Some(HostTensor { shape: vec![f.total], data }))
}

/// A prefix in PEFT's `PREFIX_TUNING` layout: `prompt_embeddings` `[p, layers * 2 * d_kv]`
/// (the reparameterization evaluated, as PEFT saves it) and a config with `prefix_projection`
/// off, which PEFT reads back as that table.
fn export_prefix(adapters: &AdapterSet, settings: &PrefixConfig, info: &PeftInfo, dir: &Path) -> Result<()> {
    let (Some(state), Some(heads)) = (adapters.state_of::<PrefixTuning>(), info.prefix_heads) else {
        return Err(Error::State(
            "PEFT's PREFIX_TUNING layout is written for decoders only: for an encoder, transformers shifts the position ids by the prefix length, which replora's prefix does not, so the file would load into different predictions; use the run directory with replora's own `eval` / `predict`".into(),
        ));
    };
    let targets = &adapters.targets;
    let token_dim = targets[0].d_out;
    let mut out = BTreeMap::new();
    out.insert("prompt_embeddings".to_string(), HostTensor::from_tensor(&state.prefix.rows().detach()));
    let config = json!({
        "peft_type": "PREFIX_TUNING",
        "task_type": info.task_type,
        "base_model_name_or_path": info.base_model_name_or_path,
        "num_virtual_tokens": settings.length,
        "num_layers": targets.len(),
        "token_dim": token_dim,
        "num_attention_heads": heads,
        "num_transformer_submodules": 1,
        "encoder_hidden_size": settings.hidden,
        "prefix_projection": false,
        "inference_mode": true,
        "revision": null,
    });
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    tensors::write(&dir.join(WEIGHTS_FILE), &out, Some(meta))?;
    write_json(&dir.join(CONFIG_FILE), &config)
}

fn field<'a>(config: &'a Value, key: &str, file: &Path) -> Result<&'a Value> {
    config.get(key).ok_or_else(|| Error::format(file, format!("missing key {key:?}")))
}

fn typed<T: serde::de::DeserializeOwned>(config: &Value, key: &str, file: &Path) -> Result<Option<T>> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| Error::format(file, format!("key {key:?}: {e}"))),
    }
}

/// Translates a PEFT `LoraConfig` JSON into an [`AdapterConfig`], rejecting what replora
/// cannot represent rather than silently loading something else.
pub fn config_from_peft(config: &Value, file: &Path) -> Result<AdapterConfig> {
    let peft_type = field(config, "peft_type", file)?;
    if peft_type != "LORA" {
        return Err(Error::format(file, format!("peft_type {peft_type} is not supported (only LORA, with or without use_dora)")));
    }
    if typed::<bool>(config, "fan_in_fan_out", file)?.unwrap_or(false) {
        return Err(Error::format(file, "fan_in_fan_out = true (Conv1D models) is not supported"));
    }
    if let Some(bias) = typed::<String>(config, "bias", file)?.filter(|b| b != "none") {
        return Err(Error::format(file, format!("bias = {bias:?} is not supported (only \"none\")")));
    }
    let r = typed::<usize>(config, "r", file)?.ok_or_else(|| Error::format(file, "missing key \"r\""))?;
    let defaults = AdapterConfig::default();
    Ok(AdapterConfig {
        method: if typed::<bool>(config, "use_dora", file)?.unwrap_or(false) { Method::Dora } else { Method::Lora }.defaults(),
        r,
        lora_alpha: typed(config, "lora_alpha", file)?.unwrap_or(8.0),
        lora_dropout: typed(config, "lora_dropout", file)?.unwrap_or(0.0),
        use_rslora: typed(config, "use_rslora", file)?.unwrap_or(false),
        target_modules: typed(config, "target_modules", file)?.ok_or_else(|| Error::format(file, "missing key \"target_modules\""))?,
        layers_to_transform: match config.get("layers_to_transform") {
            Some(Value::Number(n)) => Some(vec![n.as_u64().unwrap_or(0) as usize]),
            _ => typed(config, "layers_to_transform", file)?,
        },
        rank_pattern: typed(config, "rank_pattern", file)?.unwrap_or_default(),
        alpha_pattern: typed(config, "alpha_pattern", file)?.unwrap_or_default(),
        ..defaults
    })
}

/// Finds the tensor for module `path` and `suffix`: `base_model.model.<path><suffix>`, or the
/// one key that ends in `.<path><suffix>` (PEFT files of a model wrapped in a task head).
fn find(tensors: &mut BTreeMap<String, HostTensor>, file: &Path, path: &str, suffix: &str, shape: &[usize]) -> Result<HostTensor> {
    let exact = format!("{PREFIX}{path}{suffix}");
    let ending = format!(".{path}{suffix}");
    let key = if tensors.contains_key(&exact) {
        exact
    } else {
        let matches: Vec<&String> = tensors.keys().filter(|k| k.ends_with(&ending)).collect();
        match matches.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(Error::MissingTensor { file: file.into(), name: exact }),
            many => return Err(Error::format(file, format!("several tensors match module {path}: {many:?}"))),
        }
    };
    tensors::take(tensors, file, &key, shape)
}

fn leaf<const D: usize>(t: HostTensor, device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(t.to_tensor(device))
}

/// Replaces LoRA's and DoRA's tensors (`<path>.lora_A`, `.lora_B`, `.magnitude`) by PEFT's; a
/// block of a fused linear ([`FusedRows`]) takes the fused module's `A` and its own rows of `B`
/// and of the magnitude.
struct FromPeft<'a> {
    tensors: &'a mut BTreeMap<String, HostTensor>,
    file: &'a Path,
    fused: BTreeMap<String, FusedRows>,
    /// The fused modules' tensors, read once for all their blocks.
    taken: BTreeMap<String, HostTensor>,
    /// Rows of each fused module's `B` that blocks took.
    covered: BTreeMap<String, usize>,
}

impl FromPeft<'_> {
    /// The fused module's tensor `suffix` (of `shape`), read from the file on first use.
    fn fused_tensor(&mut self, module: &str, suffix: &str, shape: &[usize]) -> Result<&HostTensor> {
        let key = format!("{module}{suffix}");
        if !self.taken.contains_key(&key) {
            let t = find(self.tensors, self.file, module, suffix, shape)?;
            self.taken.insert(key.clone(), t);
        }
        let t = &self.taken[&key];
        if t.shape != shape {
            return Err(Error::Shape { name: key, expected: shape.to_vec(), found: t.shape.clone() });
        }
        Ok(t)
    }

    /// The rows `start..start + rows` of a `[total, cols]` (or `[total]`) tensor.
    fn rows(t: &HostTensor, start: usize, rows: usize) -> HostTensor {
        let cols = t.shape.get(1).copied().unwrap_or(1);
        let shape = if t.shape.len() == 2 { vec![rows, cols] } else { vec![rows] };
        HostTensor { shape, data: t.data[start * cols..(start + rows) * cols].to_vec() }
    }

    /// Refuses a fused module whose `B` rows were taken only in part: the config selected some
    /// of its blocks, so the file's other rows would be dropped.
    fn check_covered(&self) -> Result<()> {
        for (module, rows) in &self.covered {
            let total = self.fused.values().find(|f| &f.module == module).map_or(0, |f| f.total);
            if *rows != total {
                return Err(Error::format(
                    self.file,
                    format!("the adapter of {module} covers all its {total} rows, but the config selects blocks of only {rows} of them"),
                ));
            }
        }
        Ok(())
    }
}

impl NamedParams for FromPeft<'_> {
    fn param<const D: usize>(&mut self, name: &str, param: Param<Tensor<D>>) -> Result<Param<Tensor<D>>> {
        let shape = param.shape().to_vec();
        let file = self.file;
        let (path, suffix) = [".lora_A", ".lora_B", ".magnitude"]
            .into_iter()
            .find_map(|s| Some((name.strip_suffix(s)?, s)))
            .ok_or_else(|| Error::format(file, format!("PEFT's LoRA layout has no place for {name}")))?;
        let t = match (self.fused.get(path).cloned(), suffix) {
            (None, ".lora_A") => find(self.tensors, file, path, ".lora_A.weight", &[shape[1], shape[0]])?.transpose(),
            (None, ".lora_B") => find(self.tensors, file, path, ".lora_B.weight", &[shape[1], shape[0]])?.transpose(),
            (None, _) => find(self.tensors, file, path, ".lora_magnitude_vector", &shape)?,
            (Some(f), ".lora_A") => self.fused_tensor(&f.module, ".lora_A.weight", &[shape[1], shape[0]])?.transpose(),
            (Some(f), ".lora_B") => {
                let (rank, rows) = (shape[0], shape[1]);
                let b = Self::rows(self.fused_tensor(&f.module, ".lora_B.weight", &[f.total, rank])?, f.start, rows);
                *self.covered.entry(f.module.clone()).or_default() += rows;
                b.transpose()
            }
            (Some(f), _) => Self::rows(self.fused_tensor(&f.module, ".lora_magnitude_vector", &[f.total])?, f.start, shape[0]),
        };
        Ok(leaf(t, &param.device()))
    }
}

/// Loads a PEFT LoRA/DoRA adapter directory into `model`.
pub fn import<M: Adaptable>(model: M, dir: &Path) -> Result<PeftModel<M>> {
    import_renamed(model, dir, &[])
}

/// Like [`import`], for an adapter made on a library that names the model's modules otherwise:
/// `renames` are (checkpoint name, library name) substring pairs, as [`PeftInfo::rename`]
/// (transformers 5 loads ViT's `encoder.layer.0.attention.attention.query` as
/// `layers.0.attention.q_proj`); module paths are translated back before they are matched, and
/// an adapter whose paths needed it targets exactly the modules it holds.
pub fn import_renamed<M: Adaptable>(model: M, dir: &Path, renames: &[(&str, &str)]) -> Result<PeftModel<M>> {
    let (peft, extra) = import_parts(model, dir, renames)?;
    match extra.keys().next() {
        Some(name) => Err(Error::format(dir.join(WEIGHTS_FILE), format!("tensor {name} (modules_to_save) has no place in this model"))),
        None => Ok(peft),
    }
}

/// Like [`import`], also returning the `modules_to_save` tensors (names without the
/// `base_model.model.` prefix) for the caller's own modules, e.g. a classification head.
pub fn import_with_modules<M: Adaptable>(model: M, dir: &Path) -> Result<(PeftModel<M>, BTreeMap<String, HostTensor>)> {
    import_parts(model, dir, &[])
}

fn import_parts<M: Adaptable>(model: M, dir: &Path, renames: &[(&str, &str)]) -> Result<(PeftModel<M>, BTreeMap<String, HostTensor>)> {
    let config_file = dir.join(CONFIG_FILE);
    let mut config_json = read_json::<Value>(&config_file)?;
    let file = dir.join(WEIGHTS_FILE);
    if !file.exists() && dir.join("adapter_model.bin").exists() {
        return Err(Error::format(&file, "only adapter_model.safetensors is supported; re-save the adapter with safe_serialization=True"));
    }
    let (mut tensors, _) = tensors::read(&file)?;
    let back = |key: &str| renames.iter().rev().fold(key.to_string(), |k, (checkpoint, library)| k.replace(library, checkpoint));
    if tensors.keys().any(|k| back(k) != *k) {
        tensors = tensors.into_iter().map(|(k, t)| (back(&k), t)).collect();
        let modules: std::collections::BTreeSet<&str> =
            tensors.keys().filter_map(|k| k.strip_prefix(PREFIX)?.split_once(".lora_").map(|(m, _)| m)).collect();
        config_json["target_modules"] = json!(modules);
    }
    let config = config_from_peft(&config_json, &config_file)?;
    let available = tensors.values().map(|t| t.data.len()).sum();
    super::check_declared_sizes(&config, &model.linears(), &file, available)?;
    let mut from = FromPeft {
        tensors: &mut tensors,
        file: &file,
        fused: fused_blocks(&model.linears()),
        taken: BTreeMap::new(),
        covered: BTreeMap::new(),
    };
    let adapters = AdapterSet::new(&config, &model.linears())?.map_named(&mut from)?;
    from.check_covered()?;
    let saved: Vec<String> =
        config_json.get("modules_to_save").and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok()).unwrap_or_default();
    let mut modules = BTreeMap::new();
    for (key, t) in tensors {
        let name = key.strip_prefix(PREFIX).unwrap_or(&key).to_string();
        if !saved.iter().any(|m| name.starts_with(&format!("{m}."))) {
            return Err(Error::format(&file, format!("tensor {key} belongs to no module the config targets on this model")));
        }
        modules.insert(name, t);
    }
    Ok((PeftModel::from_parts(model, adapters), modules))
}
