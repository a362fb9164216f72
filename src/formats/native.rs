//! replora's own adapter directory: `adapter_config.json` with every hyper-parameter and
//! `adapter_model.safetensors` with every trainable tensor (RepLoRA seeds and generators
//! included), enough to resume training bit-exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::adapters::set::NamedParams;
use crate::adapters::{Adaptable, AdapterConfig, AdapterSet, PeftModel};
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::weights::tensors::{self, HostTensor};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The JSON side of a native adapter.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeConfig {
    /// `"REPLORA"` or `"LORA"` (DoRA is LoRA with magnitudes, as in PEFT).
    pub peft_type: String,
    /// The replora version that wrote the file.
    pub library: String,
    pub adapter: AdapterConfig,
    /// The adapted module paths, to check the adapter fits the model it is loaded into.
    pub targets: Vec<String>,
}

struct Collect(BTreeMap<String, HostTensor>);

impl NamedParams for Collect {
    fn param<const D: usize>(&mut self, name: &str, param: Param<Tensor<D>>) -> Result<Param<Tensor<D>>> {
        self.0.insert(name.to_string(), HostTensor::from_tensor(&param.val()));
        Ok(param)
    }
}

struct Replace<'a> {
    tensors: BTreeMap<String, HostTensor>,
    file: &'a Path,
}

impl NamedParams for Replace<'_> {
    fn param<const D: usize>(&mut self, name: &str, param: Param<Tensor<D>>) -> Result<Param<Tensor<D>>> {
        let t = tensors::take(&mut self.tensors, self.file, name, &param.shape().to_vec())?;
        let value = t.to_tensor::<D>(&param.device());
        Ok(param.map(|old| value.set_require_grad(old.is_require_grad())))
    }
}

/// Every adapter tensor under its file name.
pub fn named_tensors(adapters: &AdapterSet) -> BTreeMap<String, HostTensor> {
    let mut c = Collect(BTreeMap::new());
    adapters.clone().map_named(&mut c).expect("collecting never fails");
    c.0
}

/// Writes `adapters` into `dir` (created if needed).
pub fn save(adapters: &AdapterSet, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let config = NativeConfig {
        peft_type: adapters.config.method.method().peft_type().into(),
        library: format!("replora {}", env!("CARGO_PKG_VERSION")),
        adapter: adapters.config.clone(),
        targets: adapters.target_paths().into_iter().map(String::from).collect(),
    };
    let meta = HashMap::from([("format".to_string(), "replora".to_string())]);
    tensors::write(&dir.join(WEIGHTS_FILE), &named_tensors(adapters), Some(meta))?;
    write_json(&dir.join(CONFIG_FILE), &config)
}

/// Reads the config of a native adapter directory.
pub fn load_config(dir: &Path) -> Result<NativeConfig> {
    read_json(&dir.join(CONFIG_FILE))
}

/// Loads a native adapter into `model`, checking that its targets and shapes fit.
pub fn load<M: Adaptable>(model: M, dir: &Path) -> Result<PeftModel<M>> {
    let config = load_config(dir)?;
    let file = dir.join(WEIGHTS_FILE);
    let (tensors, _) = tensors::read(&file)?;
    let available = tensors.values().map(|t| t.data.len()).sum();
    super::check_declared_sizes(&config.adapter, &model.linears(), &file, available)?;
    let adapters = AdapterSet::new(&config.adapter, &model.linears())?;
    let found = adapters.target_paths();
    if found != config.targets {
        return Err(Error::Config(format!(
            "{}: the adapter was made for modules {:?}, but on this model its config selects {:?}",
            dir.display(),
            config.targets,
            found
        )));
    }
    let mut replace = Replace { tensors, file: &file };
    let adapters = adapters.map_named(&mut replace)?;
    if let Some(extra) = replace.tensors.keys().next() {
        return Err(Error::format(&file, format!("unexpected tensor {extra} (the file does not match its config)")));
    }
    Ok(PeftModel::from_parts(model, adapters))
}
