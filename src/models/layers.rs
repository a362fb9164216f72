//! Layers every architecture shares: the norms and scaled dot-product attention (through the
//! fused softmax kernel, whose backward pass is its own).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::layer_norm;

use crate::kernels;

/// LayerNorm over the last dimension with learned scale and shift.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps)
    }

    /// Adds `{name}.weight` and `{name}.bias` to a checkpoint being written.
    pub fn put(&self, out: &mut std::collections::BTreeMap<String, crate::weights::HostTensor>, name: &str) {
        out.insert(format!("{name}.weight"), crate::weights::HostTensor::from_tensor(&self.weight.val()));
        out.insert(format!("{name}.bias"), crate::weights::HostTensor::from_tensor(&self.bias.val()));
    }
}

/// Root-mean-square normalisation with a learned scale.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let rms = x.clone().square().mean_dim(D - 1).add_scalar(self.eps).sqrt();
        x / rms * self.weight.val().unsqueeze::<D>()
    }
}

/// `softmax(q k^T + bias) v` over `[batch, heads, t, head_dim]` tensors; `q` comes already
/// scaled by `1/sqrt(head_dim)` (cheaper on `q` than on the scores), `bias` broadcasts to
/// `[batch, heads, t_q, t_k]` (0 where a key may be attended, very negative where not).
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
    kernels::softmax_last(q.matmul(k.swap_dims(2, 3)) + bias).matmul(v)
}
