//! safetensors files as maps of named f32 host tensors, with errors that name the file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::prelude::*;
use safetensors::{Dtype, tensor::TensorView};

use crate::error::{Error, Result};

/// The value of a one-element tensor.
pub fn scalar(t: Tensor<1>) -> f64 {
    t.into_data().try_into_vec_as::<f64>().expect("float tensor")[0]
}

/// A tensor in host memory: row-major f32 values and a shape.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn from_tensor<const D: usize>(t: &Tensor<D>) -> Self {
        let data = t.to_data();
        Self { shape: data.shape().to_vec(), data: data.try_into_vec_as::<f32>().expect("float tensors convert to f32") }
    }

    /// A burn tensor on `device`; the caller has checked the rank.
    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        self.clone().into_tensor(device)
    }

    /// [`HostTensor::to_tensor`] without a copy of the values (a model's largest table would
    /// otherwise be held twice while it loads).
    pub fn into_tensor<const D: usize>(self, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.data, self.shape), device)
    }

    /// The transpose of a 2-D tensor (burn's `[d_in, d_out]` <-> PyTorch's `[d_out, d_in]`).
    pub fn transpose(&self) -> Self {
        let [rows, cols] = self.shape[..] else { panic!("transpose of a {}-D tensor", self.shape.len()) };
        let mut data = vec![0.0; self.data.len()];
        for r in 0..rows {
            for c in 0..cols {
                data[c * rows + r] = self.data[r * cols + c];
            }
        }
        Self { shape: vec![cols, rows], data }
    }
}

/// Writes `tensors` atomically (a temporary file renamed into place), so a crash never leaves
/// a half-written file where a good one was.
pub fn write(path: &Path, tensors: &BTreeMap<String, HostTensor>, metadata: Option<HashMap<String, String>>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, &HostTensor)> =
        tensors.iter().map(|(name, t)| (name.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t)).collect();
    let views = bytes
        .iter()
        .map(|(name, raw, t)| Ok((name.clone(), TensorView::new(Dtype::F32, t.shape.clone(), raw).map_err(|e| Error::format(path, e))?)))
        .collect::<Result<Vec<_>>>()?;
    let buffer = safetensors::serialize(views, metadata).map_err(|e| Error::format(path, e))?;
    crate::files::write_atomic(path, &buffer)
}

/// Reads every tensor of a safetensors file as f32 (F32, F64, F16 and BF16 are accepted, and
/// I64/I32 such as BERT's `position_ids` buffer), plus the file's metadata.
pub fn read(path: &Path) -> Result<(BTreeMap<String, HostTensor>, HashMap<String, String>)> {
    let mut file = super::MappedCheckpoint::open(path)?;
    let names: Vec<String> = file.names().cloned().collect();
    let mut out = BTreeMap::new();
    for name in names {
        let tensor = file.take_f32(&name)?.expect("a name the file lists");
        out.insert(name, tensor);
    }
    Ok((out, file.metadata().clone()))
}

/// Removes and returns tensor `name`, checking its shape and that every value is finite.
pub fn take(tensors: &mut BTreeMap<String, HostTensor>, file: &Path, name: &str, expected: &[usize]) -> Result<HostTensor> {
    let t = tensors.remove(name).ok_or_else(|| Error::MissingTensor { file: file.into(), name: name.into() })?;
    checked(t, file, name, expected)
}

/// `t` (tensor `name` of `file`) if it has the `expected` shape and every value is finite.
pub fn checked(t: HostTensor, file: &Path, name: &str, expected: &[usize]) -> Result<HostTensor> {
    if t.shape != expected {
        return Err(Error::Shape { name: name.into(), expected: expected.to_vec(), found: t.shape });
    }
    // A NaN/Inf weight would only show up later as NaN outputs or a `null` loss.
    if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
        return Err(Error::format(file, format!("tensor {name} holds non-finite values ({bad}); the file is corrupt")));
    }
    Ok(t)
}
