//! Layers every architecture shares: the norms and scaled dot-product attention (through the
//! fused kernels, whose backward passes are their own).

use burn::module::Param;
use burn::prelude::*;

use burn::tensor::TensorData;

use crate::adapters::{AdaptedLinear, BaseWeight, FrozenBlocks, FusedRows};
use crate::error::Result;
use crate::kernels;
use crate::quantization::{BlockFormat, QuantizedMatrix};
use crate::weights::{HostTensor, Reader};

/// The layers every architecture reads from a checkpoint, built from the [`Reader`]'s tensors.
pub trait ReadLayers {
    /// The linear `name` (with `{name}.bias` when `bias`), adaptable under its module path.
    fn linear(&mut self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<AdaptedLinear>;
    /// The fused linear `name` (`{name}.weight` `[sum of rows, d_in]`) as one linear per block of
    /// rows: `parts` names them (beside `name`: `qkv_proj` -> `q_proj`, ...) with their rows, in
    /// order. Each block knows its place ([`FusedRows`]), where saving joins them again.
    fn fused_linears(&mut self, name: &str, d_in: usize, parts: &[(&str, usize)], bias: bool) -> Result<Vec<AdaptedLinear>>;
    fn layer_norm(&mut self, name: &str, width: usize, eps: f64) -> Result<LayerNorm>;
    /// A LayerNorm with only `{name}.weight` (ModernBERT's, `norm_bias: false`).
    fn layer_norm_without_bias(&mut self, name: &str, width: usize, eps: f64) -> Result<LayerNorm>;
}

impl ReadLayers for Reader<'_> {
    fn linear(&mut self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<AdaptedLinear> {
        if let Some(matrix) = self.take_quantized(&format!("{name}.weight"), d_out, d_in)? {
            let bias = if bias { Some(self.take(&format!("{name}.bias"), [d_out])?.to_tensor(self.device())) } else { None };
            return Ok(AdaptedLinear::quantized(self.module_path(name), FrozenBlocks::new(matrix, self.device()), bias));
        }
        let (weight, bias) = self.linear_tensors(name, d_in, d_out, bias)?;
        Ok(AdaptedLinear::new(self.module_path(name), weight, bias))
    }

    fn fused_linears(&mut self, name: &str, d_in: usize, parts: &[(&str, usize)], bias: bool) -> Result<Vec<AdaptedLinear>> {
        let total: usize = parts.iter().map(|(_, rows)| rows).sum();
        // A GGUF file's fused matrix may be block-quantized: its blocks of rows stay so.
        enum Stored {
            Quantized(crate::quantization::QuantizedMatrix),
            Dense(HostTensor),
        }
        let weight = match self.take_quantized(&format!("{name}.weight"), total, d_in)? {
            Some(matrix) => Stored::Quantized(matrix),
            None => Stored::Dense(self.take(&format!("{name}.weight"), [total, d_in])?),
        };
        let bias = if bias { Some(self.take(&format!("{name}.bias"), [total])?) } else { None };
        let parent = name.rsplit_once('.').map_or("", |(p, _)| p);
        let module = self.module_path(name);
        let mut start = 0;
        let mut out = Vec::with_capacity(parts.len());
        for (part, rows) in parts {
            let b = bias.as_ref().map(|b| HostTensor { shape: vec![*rows], data: b.data[start..start + rows].to_vec() });
            let b = b.map(|b| b.to_tensor(self.device()));
            let path = self.module_path(&if parent.is_empty() { part.to_string() } else { format!("{parent}.{part}") });
            let linear = match &weight {
                Stored::Quantized(matrix) => {
                    AdaptedLinear::quantized(path, FrozenBlocks::new(matrix.row_block(start, start + rows), self.device()), b)
                }
                Stored::Dense(weight) => {
                    let block = HostTensor { shape: vec![*rows, d_in], data: weight.data[start * d_in..(start + rows) * d_in].to_vec() };
                    AdaptedLinear::new(path, block.transpose().into_tensor(self.device()), b)
                }
            };
            out.push(linear.fused_into(FusedRows { module: module.clone(), start, total }));
            start += rows;
        }
        Ok(out)
    }

    fn layer_norm(&mut self, name: &str, width: usize, eps: f64) -> Result<LayerNorm> {
        let (weight, bias) = self.norm_params(name, width)?;
        Ok(LayerNorm { weight, bias: Some(bias), eps })
    }

    fn layer_norm_without_bias(&mut self, name: &str, width: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm { weight: self.param(&format!("{name}.weight"), [width])?, bias: None, eps })
    }
}

/// LayerNorm over the last dimension with learned scale and (unless `None`) shift.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        kernels::layer_norm(x, self.weight.val(), self.bias.as_ref().map(Param::val), self.eps)
    }

    /// Adds `{name}.weight` and `{name}.bias` (if it has one) to a checkpoint being written.
    pub fn put(&self, out: &mut std::collections::BTreeMap<String, crate::weights::HostTensor>, name: &str) {
        out.insert(format!("{name}.weight"), crate::weights::HostTensor::from_tensor(&self.weight.val()));
        if let Some(bias) = &self.bias {
            out.insert(format!("{name}.bias"), crate::weights::HostTensor::from_tensor(&bias.val()));
        }
    }
}

/// A feed-forward non-linearity (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU.
    Gelu,
    /// `x * sigmoid(1.702 x)`, the GELU approximation CLIP was trained with.
    QuickGelu,
}

impl Activation {
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Gelu => kernels::gelu(x),
            Activation::QuickGelu => x.clone() * burn::tensor::activation::sigmoid(x.mul_scalar(1.702)),
        }
    }
}

/// Root-mean-square normalisation with a learned scale: `weight`, or `1 + weight` with
/// `unit_offset` (Gemma, whose stored weights are offsets from 1; keeping them as stored keeps a
/// save/load round trip bit-exact).
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
    pub unit_offset: bool,
}

impl RmsNorm {
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let scale = if self.unit_offset { self.weight.val().add_scalar(1.0) } else { self.weight.val() };
        kernels::rms_norm(x, scale, self.eps)
    }
}

/// `softmax(q k^T + bias) v`: `q` `[batch, heads, t, head_dim]`, already scaled by
/// `1/sqrt(head_dim)` (cheaper on `q` than on the scores); `k`, `v` `[batch, kv_heads, keys,
/// head_dim]` with grouped-query heads (query head `i` reads key/value head `i / (heads /
/// kv_heads)`); `bias` additive (0 where a key may be attended, very negative where not),
/// broadcasting from `[1 or batch, 1, 1 or t, keys]`. The fused kernel does it on flex f32;
/// elsewhere burn's attention op in the `--precision` ([`crate::precision::attention`]), which a
/// GPU backend may run as one fused (flash) kernel, with keys and values repeated only where
/// grouped-query heads share them.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
    if let Some(out) = kernels::attention(&q, &k, &v, &bias) {
        return out;
    }
    let [b, heads, t, _] = q.dims();
    let keys = k.dims()[2];
    let (k, v) = (kernels::repeat_kv(k, heads), kernels::repeat_kv(v, heads));
    crate::precision::attention(q, k, v, bias.expand([b, heads, t, keys]))
}

/// A token embedding table `[vocab, hidden]`, f32 or quantized (a GGUF file's Q8_0 table stays
/// so), which a tied model also reads as its output head.
#[derive(Module, Debug)]
pub enum TokenEmbedding {
    Dense(Param<Tensor<2>>),
    Quantized(FrozenBlocks),
}

impl TokenEmbedding {
    /// The embeddings `[batch, t, hidden]` of `ids` (`[batch, t]`).
    pub fn lookup(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        match self {
            TokenEmbedding::Dense(table) => burn::tensor::module::embedding(table.val(), ids),
            TokenEmbedding::Quantized(q) => {
                let [b, t] = ids.dims();
                let (device, m) = (ids.device(), &q.matrix);
                let ids: Vec<i64> = ids.into_data().iter::<i64>().collect();
                let mut values = vec![0f32; ids.len() * m.cols];
                for (row, &id) in values.chunks_exact_mut(m.cols).zip(&ids) {
                    assert!((0..m.rows as i64).contains(&id), "token id {id} is outside the vocabulary of {}", m.rows);
                    m.dequantize_row(id as usize, row);
                }
                Tensor::from_data(TensorData::new(values, [b, t, m.cols]), &device)
            }
        }
    }

    /// `hidden Eᵀ`: scores over the vocabulary (`[.., hidden]` -> `[.., vocab]`).
    pub fn scores<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match self {
            TokenEmbedding::Dense(table) => kernels::linear(hidden, table.val().transpose(), None),
            TokenEmbedding::Quantized(q) => q.product(hidden),
        }
    }

    /// A quantized table widened to a trainable f32 parameter (a dense one unchanged).
    pub fn widened(self) -> Self {
        match self {
            TokenEmbedding::Quantized(_) => TokenEmbedding::Dense(Param::from_tensor(self.dense())),
            dense => dense,
        }
    }

    /// The table stored as `format`, or as f32 for `None` ([`BaseWeight::converted`]).
    pub fn converted(self, format: Option<BlockFormat>) -> Result<Self> {
        let device = match &self {
            TokenEmbedding::Dense(table) => table.device(),
            TokenEmbedding::Quantized(q) => q.device(),
        };
        match (format, &self) {
            (None, _) => Ok(self.widened()),
            (Some(f), TokenEmbedding::Quantized(q)) if q.matrix.format == f => Ok(self),
            (Some(f), _) => {
                let [vocab, hidden] = self.dense().dims();
                let values = self.dense().into_data().try_into_vec_as::<f32>().expect("float tensors convert to f32");
                let matrix = QuantizedMatrix::quantize(f, vocab, hidden, &values, "the token embedding table")?;
                Ok(TokenEmbedding::Quantized(FrozenBlocks::new(matrix, &device)))
            }
        }
    }

    /// Bytes the output head reads from this table per position.
    pub fn stored_bytes(&self) -> usize {
        match self {
            TokenEmbedding::Dense(table) => table.shape().num_elements() * 4,
            TokenEmbedding::Quantized(q) => q.matrix.size_bytes(),
        }
    }

    /// The table as f32 `[vocab, hidden]` (widened for this call when quantized).
    pub fn dense(&self) -> Tensor<2> {
        match self {
            TokenEmbedding::Dense(table) => table.val(),
            TokenEmbedding::Quantized(q) => BaseWeight::Quantized(q.clone()).dense().transpose(),
        }
    }
}
