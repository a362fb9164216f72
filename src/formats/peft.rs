//! Hugging Face PEFT's LoRA/DoRA adapter layout: `adapter_config.json` and
//! `adapter_model.safetensors` with keys `base_model.model.<path>.lora_A.weight` `[r, d_in]`,
//! `.lora_B.weight` `[d_out, r]` and DoRA's `.lora_magnitude_vector` `[d_out]`.
//! A RepLoRA adapter is exported as the LoRA it materializes to; a decoder's prefix in the
//! `PREFIX_TUNING` layout.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use serde_json::{Value, json};

use super::native::{CONFIG_FILE, WEIGHTS_FILE};
use crate::adapters::fused::{self, FusedLinear, PartLora};
use crate::adapters::set::NamedParams;
use crate::adapters::{Adaptable, AdapterConfig, AdapterSet, Method, PeftModel, PrefixConfig, PrefixTuning, TargetModules};
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
    /// The model's fused linears ([`crate::adapters::Adaptable::fused_linears`]): their parts'
    /// adapters are written as one LoRA on the fused module, as PEFT adapts it.
    pub fused: Vec<FusedLinear>,
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
    let mut out = BTreeMap::new();
    let mut use_dora = false;
    let (mut rank_pattern, mut alpha_pattern) = (c.rank_pattern.clone(), c.alpha_pattern.clone());
    let mut exported = vec![];
    let mut parts: BTreeMap<String, PartLora> = BTreeMap::new();
    for t in &lora.targets {
        let d = deltas.get(&t.path).expect("a materialized adapter has a delta per target");
        let (a, b) = (HostTensor::from_tensor(&d.a).transpose(), HostTensor::from_tensor(&d.b).transpose());
        let magnitude = d.magnitude.as_ref().map(HostTensor::from_tensor);
        use_dora |= magnitude.is_some();
        if info.fused.iter().any(|f| t.path.starts_with(&format!("{}.", f.path))) {
            parts.insert(t.path.clone(), PartLora { a, b, scale: t.scale, magnitude });
            continue;
        }
        let key = format!("{PREFIX}{}", info.module_path(&t.path));
        out.insert(format!("{key}.lora_A.weight"), a);
        out.insert(format!("{key}.lora_B.weight"), b);
        if let Some(m) = magnitude {
            out.insert(format!("{key}.lora_magnitude_vector"), m);
        }
        exported.push(info.module_path(&t.path));
    }
    for f in &info.fused {
        let (mine, rest): (BTreeMap<String, PartLora>, _) =
            std::mem::take(&mut parts).into_iter().partition(|(p, _)| p.starts_with(&format!("{}.", f.path)));
        parts = rest;
        if mine.is_empty() {
            continue;
        }
        let (a, b, magnitude, rank, alpha) = fused::join(f, &mine, c)?;
        let path = info.module_path(&f.path);
        let key = format!("{PREFIX}{path}");
        out.insert(format!("{key}.lora_A.weight"), a);
        out.insert(format!("{key}.lora_B.weight"), b);
        if let Some(m) = magnitude {
            out.insert(format!("{key}.lora_magnitude_vector"), m);
        }
        // A full path matches only this module in PEFT's `(.*\.)?key$`.
        rank_pattern.insert(path.clone(), rank);
        alpha_pattern.insert(path.clone(), alpha);
        exported.push(path);
    }
    for (name, t) in &info.modules_to_save {
        out.insert(format!("{PREFIX}{name}"), t.clone());
    }
    let mut modules_to_save: Vec<&str> = info.modules_to_save.keys().filter_map(|k| k.rsplit_once('.').map(|(m, _)| m)).collect();
    modules_to_save.dedup();
    let target_modules = match &c.target_modules {
        // The parts' names are replora's, not the checkpoint's: list what was written.
        _ if !info.fused.is_empty() => json!(exported),
        _ if !info.rename.is_empty() => json!(lora.targets.iter().map(|t| info.module_path(&t.path)).collect::<Vec<_>>()),
        TargetModules::Names(n) => json!(n),
        TargetModules::Regex(r) => json!(r),
    };
    let config = json!({
        "peft_type": "LORA",
        "task_type": info.task_type,
        "base_model_name_or_path": info.base_model_name_or_path,
        "r": c.r,
        "lora_alpha": c.lora_alpha,
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

/// Replaces LoRA's and DoRA's tensors (`<path>.lora_A`, `.lora_B`, `.magnitude`) by PEFT's.
struct FromPeft<'a> {
    tensors: &'a mut BTreeMap<String, HostTensor>,
    file: &'a Path,
}

impl NamedParams for FromPeft<'_> {
    fn param<const D: usize>(&mut self, name: &str, param: Param<Tensor<D>>) -> Result<Param<Tensor<D>>> {
        let shape = param.shape().to_vec();
        let (tensors, file) = (&mut *self.tensors, self.file);
        let t = if let Some(path) = name.strip_suffix(".lora_A") {
            find(tensors, file, path, ".lora_A.weight", &[shape[1], shape[0]])?.transpose()
        } else if let Some(path) = name.strip_suffix(".lora_B") {
            find(tensors, file, path, ".lora_B.weight", &[shape[1], shape[0]])?.transpose()
        } else if let Some(path) = name.strip_suffix(".magnitude") {
            find(tensors, file, path, ".lora_magnitude_vector", &shape)?
        } else {
            return Err(Error::format(file, format!("PEFT's LoRA layout has no place for {name}")));
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
    let fused = model.fused_linears();
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
    let config = fused::expand_targets(&config_from_peft(&config_json, &config_file)?, &fused);
    fused::split_peft_tensors(&mut tensors, &fused, &file)?;
    let available = tensors.values().map(|t| t.data.len()).sum();
    super::check_declared_sizes(&config, &model.linears(), &file, available)?;
    let adapters = AdapterSet::new(&config, &model.linears())?.map_named(&mut FromPeft { tensors: &mut tensors, file: &file })?;
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
