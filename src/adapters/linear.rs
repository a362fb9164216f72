//! The linear layer every model file uses: a frozen base weight that adapters add to.

use std::collections::HashMap;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;

use super::base_weight::BaseWeight;
use super::bottleneck::BottleneckDelta;
use super::prefix::{PrefixKv, mask_with_prefix};
use crate::kernels;

/// `y = x W + b` with `W` an f32 `[d_in, d_out]` (burn's layout) or quantized blocks, plus the
/// module path (Hugging Face naming) that adapters, target patterns and exported files refer to.
#[derive(Module, Debug)]
pub struct AdaptedLinear {
    pub weight: BaseWeight,
    pub bias: Option<Param<Tensor<1>>>,
    pub path: String,
}

/// What an adapter adds to one linear during one forward pass, in burn's layout:
/// `A` is `[d_in, r]` and `B` is `[r, d_out]`, so the update is `x A B`.
#[derive(Clone, Debug)]
pub struct LinearDelta {
    pub a: Tensor<2>,
    pub b: Tensor<2>,
    pub scale: f64,
    pub dropout: f64,
    /// DoRA's magnitude `m` (`[d_out]`); `None` for LoRA and RepLoRA.
    pub magnitude: Option<Tensor<1>>,
}

/// The deltas of all adapted linears of a model for one forward pass, keyed by module path.
/// Built once per pass, so RepLoRA's generators run once however many linears they feed.
#[derive(Clone, Debug, Default)]
pub struct Deltas {
    pub(crate) map: HashMap<String, LinearDelta>,
    /// Bottleneck adapters applied to a linear's output.
    pub(crate) bottlenecks: HashMap<String, BottleneckDelta>,
    /// Prefix keys and values, keyed by the attention's key projection.
    pub(crate) prefixes: HashMap<String, PrefixKv>,
    /// Apply LoRA dropout (training passes only).
    pub(crate) training: bool,
}

impl Deltas {
    /// No adapter: every linear computes its base output.
    pub fn none() -> Self {
        Self::default()
    }
    /// The low-rank delta of a linear (LoRA, DoRA, RepLoRA).
    pub fn get(&self, path: &str) -> Option<&LinearDelta> {
        self.map.get(path)
    }
    pub fn bottleneck(&self, path: &str) -> Option<&BottleneckDelta> {
        self.bottlenecks.get(path)
    }
    /// Prefix length (0 without prefix tuning); every layer has the same.
    pub fn prefix_len(&self) -> usize {
        self.prefixes.values().next().map_or(0, |p| p.tokens())
    }

    /// The prefix of the attention whose key projection is `key_path`.
    pub fn prefix(&self, key_path: &str) -> Option<&PrefixKv> {
        self.prefixes.get(key_path)
    }

    /// `k`, `v` (`[batch, kv_heads, t, head_dim]`) and the additive `mask` (`[.., t_q, t]`) with
    /// the prefix of the attention whose key projection is `key_path` in front of the keys.
    pub fn with_prefix(&self, key_path: &str, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        match self.prefix(key_path) {
            Some(prefix) => {
                let (k, v) = prefix.prepend(k, v);
                (k, v, mask_with_prefix(mask, prefix.tokens()))
            }
            None => (k, v, mask),
        }
    }

    /// How many modules are adapted.
    pub fn len(&self) -> usize {
        self.map.len() + self.bottlenecks.len() + self.prefixes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LinearDelta {
    /// `s A B` as a `[d_in, d_out]` weight update.
    pub fn dense(&self) -> Tensor<2> {
        self.a.clone().matmul(self.b.clone()).mul_scalar(self.scale)
    }

    /// DoRA's column factor `m / ||W0 + s A B||` (norm over `d_in`, detached as in PEFT).
    pub fn dora_factor(&self, weight: Tensor<2>, magnitude: &Tensor<1>) -> Tensor<1> {
        let norm = (weight + self.dense()).detach().square().sum_dim(0).sqrt().squeeze_dim::<1>(0);
        magnitude.clone() / norm
    }

    /// The weight this delta is equivalent to: `W0 + s A B`, or DoRA's rescaled version.
    pub fn merged_weight(&self, weight: Tensor<2>) -> Tensor<2> {
        let updated = weight.clone() + self.dense();
        match &self.magnitude {
            Some(m) => updated * self.dora_factor(weight, m).unsqueeze_dim::<2>(0),
            None => updated,
        }
    }
}

impl AdaptedLinear {
    /// A linear from burn-layout weights; trainable until an adapter freezes it.
    pub fn new(path: impl Into<String>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self { weight: BaseWeight::Dense(Param::from_tensor(weight)), bias: bias.map(Param::from_tensor), path: path.into() }
    }

    /// A linear on a quantized base weight (always frozen).
    pub fn quantized(path: impl Into<String>, weight: super::FrozenBlocks, bias: Option<Tensor<1>>) -> Self {
        Self { weight: BaseWeight::Quantized(weight), bias: bias.map(Param::from_tensor), path: path.into() }
    }

    /// Adds `{path}.weight` (PyTorch's `[out, in]`) and `{path}.bias` to a checkpoint being written.
    pub fn put(&self, out: &mut std::collections::BTreeMap<String, crate::weights::HostTensor>) {
        use crate::weights::HostTensor;
        out.insert(format!("{}.weight", self.path), HostTensor::from_tensor(&self.weight.dense()).transpose());
        if let Some(b) = &self.bias {
            out.insert(format!("{}.bias", self.path), HostTensor::from_tensor(&b.val()));
        }
    }

    pub fn d_in(&self) -> usize {
        self.weight.d_in()
    }
    pub fn d_out(&self) -> usize {
        self.weight.d_out()
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>, deltas: &Deltas) -> Tensor<D> {
        let y = self.low_rank_forward(x, deltas);
        match deltas.bottleneck(&self.path) {
            Some(bottleneck) => bottleneck.apply(y, deltas.training),
            None => y,
        }
    }

    fn low_rank_forward<const D: usize>(&self, x: Tensor<D>, deltas: &Deltas) -> Tensor<D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        let Some(delta) = deltas.get(&self.path) else { return self.weight.forward(x, bias) };
        let x_lora = if deltas.training { dropout(x.clone(), delta.dropout) } else { x.clone() };
        // Activation side `(s x A) B`: r (d_in + d_out) work per token, no dense d_in x d_out
        // update; the scale applied to the rank-r product, the narrowest tensor.
        let down = kernels::linear(x_lora, delta.a.clone(), None).mul_scalar(delta.scale);
        let update = kernels::linear(down, delta.b.clone(), None);
        let mut y = self.weight.forward(x, None) + update;
        if let Some(m) = &delta.magnitude {
            y = y * delta.dora_factor(self.weight.dense(), m).unsqueeze::<D>();
        }
        match bias {
            Some(b) => y + b.unsqueeze::<D>(),
            None => y,
        }
    }
}

/// Inverted dropout with drop probability `p` (the identity at 0).
pub(crate) fn dropout<const D: usize>(x: Tensor<D>, p: f64) -> Tensor<D> {
    if p <= 0.0 {
        return x;
    }
    let keep = 1.0 - p;
    x.clone() * x.random_like(Distribution::Bernoulli(keep)).div_scalar(keep)
}
