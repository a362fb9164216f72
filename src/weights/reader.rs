//! The one way an architecture takes its parameters out of a checkpoint (safetensors or GGUF,
//! read into named host tensors): shapes checked, errors naming the file and the tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::prelude::*;

use super::tensors;
use super::{HostTensor, MappedCheckpoint, Matrices};
use crate::error::{Error, Result};
use crate::quantization::QuantizedMatrix;

/// Takes named tensors out of a checkpoint into burn parameters.
pub struct Reader<'a> {
    source: Source<'a>,
    file: PathBuf,
    /// The prefix of names in the file (`bert.` in a task checkpoint, none in a bare one).
    stored: String,
    /// The prefix of module paths in the model.
    prefix: String,
    device: &'a Device,
}

/// Where a [`Reader`]'s tensors come from.
enum Source<'a> {
    /// Tensors already in memory, in f32; and the matrices a checkpoint keeps quantized (a GGUF
    /// file's block-quantized weights).
    Host { tensors: &'a mut BTreeMap<String, HostTensor>, quantized: Option<&'a mut BTreeMap<String, QuantizedMatrix>> },
    /// A mapped safetensors checkpoint read tensor by tensor, its matrices held as `matrices` says.
    Mapped { checkpoint: &'a mut MappedCheckpoint, matrices: Matrices },
}

impl<'a> Reader<'a> {
    /// A reader of `tensors` (read from `file`, which errors name) whose names carry no prefix.
    pub fn new(tensors: &'a mut BTreeMap<String, HostTensor>, file: &'a Path, device: &'a Device) -> Self {
        let source = Source::Host { tensors, quantized: None };
        Self { source, file: file.to_path_buf(), stored: String::new(), prefix: String::new(), device }
    }

    /// A reader of a mapped checkpoint: each tensor is read as it is taken, and the matrices
    /// taken as such ([`Reader::take_quantized`]: linears, a decoder's embedding) are held as
    /// `matrices` says.
    pub fn mapped(checkpoint: &'a mut MappedCheckpoint, matrices: Matrices, device: &'a Device) -> Self {
        let file = checkpoint.path().to_path_buf();
        let source = Source::Mapped { checkpoint, matrices };
        Self { source, file, stored: String::new(), prefix: String::new(), device }
    }

    /// Linears and embeddings found in `quantized` stay quantized ([`Reader::take_quantized`]).
    pub fn with_quantized(mut self, quantized: &'a mut BTreeMap<String, QuantizedMatrix>) -> Self {
        if let Source::Host { quantized: q, .. } = &mut self.source {
            *q = Some(quantized);
        }
        self
    }

    /// The matrix `name` if the checkpoint keeps it quantized or 16-bit, or converts it (`None`
    /// if it is f32); it must be `[rows, cols]`.
    pub fn take_quantized(&mut self, name: &str, rows: usize, cols: usize) -> Result<Option<QuantizedMatrix>> {
        let name = format!("{}{name}", self.stored);
        let matrix = match &mut self.source {
            Source::Host { quantized, .. } => quantized.as_mut().and_then(|q| q.remove(&name)),
            Source::Mapped { checkpoint, matrices } => checkpoint.take_matrix(&name, *matrices)?,
        };
        let Some(m) = matrix else { return Ok(None) };
        if (m.rows, m.cols) != (rows, cols) {
            return Err(Error::Shape { name, expected: vec![rows, cols], found: vec![m.rows, m.cols] });
        }
        Ok(Some(m))
    }

    /// Names in the file carry `stored`; module paths get `prefix`.
    pub fn with_prefixes(mut self, stored: &str, prefix: &str) -> Self {
        (self.stored, self.prefix) = (stored.to_string(), prefix.to_string());
        self
    }

    pub fn device(&self) -> &Device {
        self.device
    }

    pub fn has(&self, name: &str) -> bool {
        let name = format!("{}{name}", self.stored);
        match &self.source {
            Source::Host { tensors, quantized } => tensors.contains_key(&name) || quantized.as_ref().is_some_and(|q| q.contains_key(&name)),
            Source::Mapped { checkpoint, .. } => checkpoint.contains(&name),
        }
    }

    /// Removes a tensor the model does not use (e.g. a tied output head), if present.
    pub fn discard(&mut self, name: &str) {
        let name = format!("{}{name}", self.stored);
        self.discard_full_name(&name);
    }

    /// [`Reader::discard`] of a name as the file has it.
    fn discard_full_name(&mut self, name: &str) {
        match &mut self.source {
            Source::Host { tensors, quantized } => {
                tensors.remove(name);
                if let Some(q) = quantized.as_mut() {
                    q.remove(name);
                }
            }
            Source::Mapped { checkpoint, .. } => {
                checkpoint.discard(name);
            }
        }
    }

    /// The names (as the file has them) of the tensors not taken yet.
    fn names(&self) -> Box<dyn Iterator<Item = &String> + '_> {
        match &self.source {
            Source::Host { tensors, quantized } => Box::new(tensors.keys().chain(quantized.iter().flat_map(|q| q.keys()))),
            Source::Mapped { checkpoint, .. } => Box::new(checkpoint.names()),
        }
    }

    /// Removes, unread, every tensor of blocks `from..` (names `{layer_prefix}{i}.` for `i >= from`):
    /// the blocks a model cut short does not keep.
    pub fn discard_layers(&mut self, layer_prefix: &str, from: usize) {
        let prefix = format!("{}{layer_prefix}", self.stored);
        let beyond = |name: &String| super::layer_index(name, &prefix).is_some_and(|i| i >= from);
        let names: Vec<String> = self.names().filter(|n| beyond(n)).cloned().collect();
        for name in names {
            self.discard_full_name(&name);
        }
    }

    /// The tensor `name` as stored (any shape) in f32, if the checkpoint has it.
    pub fn take_if_present(&mut self, name: &str) -> Result<Option<HostTensor>> {
        let name = format!("{}{name}", self.stored);
        self.take_f32(&name)
    }

    /// The tensor `name` (its full name in the file) in f32: a matrix kept quantized or 16-bit
    /// that is asked for as f32 (an embedding table the model holds in f32) is widened.
    fn take_f32(&mut self, name: &str) -> Result<Option<HostTensor>> {
        match &mut self.source {
            Source::Host { tensors, quantized } => {
                let kept = quantized.as_mut().and_then(|q| q.remove(name));
                Ok(tensors.remove(name).or_else(|| kept.map(|m| HostTensor { shape: vec![m.rows, m.cols], data: m.dequantize() })))
            }
            Source::Mapped { checkpoint, .. } => checkpoint.take_f32(name),
        }
    }

    /// The file the tensors were read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The tensor `name` in f32 (widened if the checkpoint keeps it quantized), which must have
    /// `shape`.
    pub fn take<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<HostTensor> {
        let name = format!("{}{name}", self.stored);
        let t = self.take_f32(&name)?.ok_or_else(|| Error::MissingTensor { file: self.file.clone(), name: name.clone() })?;
        tensors::checked(t, &self.file, &name, &shape)
    }

    pub fn param<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Param<Tensor<D>>> {
        let t = self.take(name, shape)?;
        Ok(Param::from_tensor(t.into_tensor(self.device)))
    }

    /// The model's module path of the checkpoint's `name`.
    pub fn module_path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A linear layer's `{name}.weight` (PyTorch's `[out, in]`, returned as burn's `[in, out]`)
    /// and, with `bias`, `{name}.bias`.
    pub fn linear_tensors(&mut self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<(Tensor<2>, Option<Tensor<1>>)> {
        let weight = self.take(&format!("{name}.weight"), [d_out, d_in])?.transpose();
        let bias = if bias { Some(self.take(&format!("{name}.bias"), [d_out])?.into_tensor(self.device)) } else { None };
        Ok((weight.into_tensor(self.device), bias))
    }

    /// A norm's scale and shift: `{name}.weight/bias`, or the old `{name}.gamma/beta`.
    pub fn norm_params(&mut self, name: &str, width: usize) -> Result<(Param<Tensor<1>>, Param<Tensor<1>>)> {
        let old = self.has(&format!("{name}.gamma")) && !self.has(&format!("{name}.weight"));
        let (w, b) = if old { ("gamma", "beta") } else { ("weight", "bias") };
        Ok((self.param(&format!("{name}.{w}"), [width])?, self.param(&format!("{name}.{b}"), [width])?))
    }

    /// A checkpoint with more layers than the config declares is a config mismatch, not
    /// something to drop silently: refuses any tensor under `{layer_prefix}{layers}.`.
    pub fn reject_extra_layers(&self, layer_prefix: &str, layers: usize) -> Result<()> {
        let extra = format!("{}{layer_prefix}{layers}.", self.stored);
        match self.names().find(|k| k.starts_with(&extra)) {
            Some(name) => Err(Error::format(
                &self.file,
                format!("tensor {name} belongs to a layer beyond num_hidden_layers = {layers} in the config"),
            )),
            None => Ok(()),
        }
    }
}
