//! The trainable tensors of any module, by burn module path, with their parameter ids:
//! what a checkpoint stores so that training resumes bit-exactly (the optimizer's state is
//! keyed by parameter id, so reloaded parameters take their saved ids back).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

use crate::error::{Error, Result};
use crate::weights::HostTensor;

/// Trainable tensors keyed by module path, with the parameter id of each.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainableState {
    pub tensors: BTreeMap<String, HostTensor>,
    pub ids: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Collect {
    path: Vec<String>,
    state: TrainableState,
}

/// A module path component of a checkpoint name: empty for the levels that names leave out.
fn component(name: &str, container: &str) -> String {
    if crate::adapters::methods::unnamed_module_level(name, container) { String::new() } else { name.to_string() }
}

/// The checkpoint name of the parameter at `path`.
fn name_of(path: &[String]) -> String {
    path.iter().filter(|c| !c.is_empty()).cloned().collect::<Vec<_>>().join(".")
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.push(component(name, container));
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            let name = name_of(&self.path);
            self.state.ids.insert(name.clone(), param.id.val());
            self.state.tensors.insert(name, HostTensor::from_tensor(&value));
        }
    }
}

struct Restore<'a> {
    path: Vec<String>,
    state: &'a TrainableState,
    restored: usize,
    error: Option<Error>,
}

impl ModuleMapper for Restore<'_> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.push(component(name, container));
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = name_of(&self.path);
        let Some(saved) = self.state.tensors.get(&name) else { return param };
        let expected = param.shape().to_vec();
        if saved.shape != expected {
            self.error.get_or_insert(Error::Shape { name, expected, found: saved.shape.clone() });
            return param;
        }
        self.restored += 1;
        let id = ParamId::from(self.state.ids[&name]);
        let value = saved.to_tensor::<D>(&param.device());
        let mut param = param.map(|old| value.set_require_grad(old.is_require_grad()));
        param.id = id;
        param
    }
}

impl TrainableState {
    /// The parameters of `module` that require gradients.
    pub fn of<M: Module>(module: &M) -> Self {
        let mut c = Collect::default();
        module.visit(&mut c);
        c.state
    }

    /// Puts the saved values and ids back into `module`; every saved tensor must find its place.
    pub fn restore<M: Module>(&self, module: M) -> Result<M> {
        let mut r = Restore { path: vec![], state: self, restored: 0, error: None };
        let module = module.map(&mut r);
        if let Some(e) = r.error {
            return Err(e);
        }
        if r.restored != self.tensors.len() {
            return Err(Error::State(format!(
                "checkpoint holds {} trainable tensors but only {} match this model",
                self.tensors.len(),
                r.restored
            )));
        }
        Ok(module)
    }

    /// Writes the tensors to a safetensors file, ids in its metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let ids = serde_json::to_string(&self.ids).expect("ids serialize");
        let meta = std::collections::HashMap::from([("param_ids".to_string(), ids)]);
        crate::weights::tensors::write(path, &self.tensors, Some(meta))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let (tensors, meta) = crate::weights::tensors::read(path)?;
        let ids = meta.get("param_ids").ok_or_else(|| Error::format(path, "no param_ids in metadata"))?;
        let ids: BTreeMap<String, u64> = serde_json::from_str(ids).map_err(|e| Error::format(path, e))?;
        if ids.len() != tensors.len() || !ids.keys().eq(tensors.keys()) {
            return Err(Error::format(path, "param_ids do not list the file's tensors"));
        }
        Ok(Self { tensors, ids })
    }
}
