//! safetensors files as maps of named f32 host tensors (16-bit matrices kept as stored where
//! asked), with errors that name the file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::prelude::*;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};
use crate::quantization::{BLOCK, BlockFormat, QuantizedMatrix};

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
        Tensor::from_data(TensorData::new(self.data.clone(), self.shape.clone()), device)
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
    let (tensors, _, metadata) = read_keeping(path, false)?;
    Ok((tensors, metadata))
}

/// As [`read`]; with `keep_16bit`, the F16 and BF16 matrices whose rows are whole blocks of
/// [`BLOCK`] values are kept as stored, 2 bytes a weight ([`QuantizedMatrix`] of
/// [`BlockFormat::F16`] or [`BlockFormat::Bf16`]), not widened to f32.
pub fn read_keeping(
    path: &Path,
    keep_16bit: bool,
) -> Result<(BTreeMap<String, HostTensor>, BTreeMap<String, QuantizedMatrix>, HashMap<String, String>)> {
    let bytes = crate::files::map(path)?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, format!("not a valid safetensors file ({e})")))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::format(path, e))?;
    let (mut out, mut kept) = (BTreeMap::new(), BTreeMap::new());
    for (name, view) in file.tensors() {
        let raw = view.data();
        let sixteen = match view.dtype() {
            Dtype::F16 => Some(BlockFormat::F16),
            Dtype::BF16 => Some(BlockFormat::Bf16),
            _ => None,
        };
        if let (true, Some(format), &[rows, cols]) = (keep_16bit, sixteen, view.shape())
            && cols.is_multiple_of(BLOCK)
        {
            let what = format!("{}: tensor {name}", path.display());
            kept.insert(name, QuantizedMatrix::from_blocks(format, rows, cols, raw.to_vec(), &what)?);
            crate::files::release(&bytes, raw);
            continue;
        }
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::F64 => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::I64 => ints(path, &name, raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())))?,
            Dtype::I32 => ints(path, &name, raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()).into()))?,
            other => return Err(Error::format(path, format!("tensor {name} has unsupported dtype {other:?}"))),
        };
        out.insert(name, HostTensor { shape: view.shape().to_vec(), data });
        crate::files::release(&bytes, raw);
    }
    Ok((out, kept, meta.metadata().clone().unwrap_or_default()))
}

/// Integer values as f32, refusing any that f32 cannot hold exactly (beyond 2^24).
fn ints(path: &Path, name: &str, values: impl Iterator<Item = i64>) -> Result<Vec<f32>> {
    values
        .map(|v| {
            if v.unsigned_abs() <= 1 << 24 {
                Ok(v as f32)
            } else {
                Err(Error::format(path, format!("integer tensor {name} holds {v}, which f32 cannot represent exactly")))
            }
        })
        .collect()
}

/// Removes and returns tensor `name`, checking its shape and that every value is finite.
pub fn take(tensors: &mut BTreeMap<String, HostTensor>, file: &Path, name: &str, expected: &[usize]) -> Result<HostTensor> {
    let t = tensors.remove(name).ok_or_else(|| Error::MissingTensor { file: file.into(), name: name.into() })?;
    if t.shape != expected {
        return Err(Error::Shape { name: name.into(), expected: expected.to_vec(), found: t.shape });
    }
    // A NaN/Inf weight would only show up later as NaN outputs or a `null` loss.
    if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
        return Err(Error::format(file, format!("tensor {name} holds non-finite values ({bad}); the file is corrupt")));
    }
    Ok(t)
}
