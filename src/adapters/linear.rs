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
    /// Where this linear's rows sit when the checkpoint stores it inside a larger linear (Phi-3's
    /// `qkv_proj` and `gate_up_proj`); `None` for a linear of its own.
    #[module(skip)]
    pub fused: Option<FusedRows>,
}

/// A block of rows of a checkpoint linear that holds several projections in one matrix: Phi-3's
/// `self_attn.qkv_proj` (query, key, value rows) and `mlp.gate_up_proj` (gate, up rows). replora
/// holds each block as a linear of its own (`q_proj`, `k_proj`, ...), so that every method can
/// target each; loading splits the matrix, saving and PEFT's layout join the blocks again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusedRows {
    /// The checkpoint linear's module path (`model.layers.0.self_attn.qkv_proj`).
    pub module: String,
    /// This block's first row in it (PyTorch's `[out, in]` layout).
    pub start: usize,
    /// The checkpoint linear's rows (its `d_out`), all blocks together.
    pub total: usize,
}

/// The fused linears' blocks of a model, by module path: what [`crate::adapters::select_targets_fused`]
/// needs to read a target name like `qkv_proj` as its parts.
pub fn fused_blocks(linears: &[&AdaptedLinear]) -> std::collections::BTreeMap<String, FusedRows> {
    linears.iter().filter_map(|l| Some((l.path.clone(), l.fused.clone()?))).collect()
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

    /// The same deltas without autodiff: constants for a pass that records no graph.
    pub fn without_autodiff(&self) -> Deltas {
        let map = self.map.iter().map(|(k, d)| {
            let magnitude = d.magnitude.clone().map(Tensor::inner);
            (k.clone(), LinearDelta { a: d.a.clone().inner(), b: d.b.clone().inner(), magnitude, ..d.clone() })
        });
        let bottlenecks = self.bottlenecks.iter().map(|(k, d)| {
            let (down_weight, up_weight) = (d.down_weight.clone().inner(), d.up_weight.clone().inner());
            let (down_bias, up_bias) = (d.down_bias.clone().inner(), d.up_bias.clone().inner());
            (k.clone(), BottleneckDelta { down_weight, down_bias, up_weight, up_bias, ..d.clone() })
        });
        let prefixes =
            self.prefixes.iter().map(|(k, p)| (k.clone(), PrefixKv { key: p.key.clone().inner(), value: p.value.clone().inner() }));
        Deltas { map: map.collect(), bottlenecks: bottlenecks.collect(), prefixes: prefixes.collect(), training: self.training }
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
        Self { weight: BaseWeight::Dense(Param::from_tensor(weight)), bias: bias.map(Param::from_tensor), path: path.into(), fused: None }
    }

    /// A linear on a quantized base weight (always frozen).
    pub fn quantized(path: impl Into<String>, weight: super::FrozenBlocks, bias: Option<Tensor<1>>) -> Self {
        Self { weight: BaseWeight::Quantized(weight), bias: bias.map(Param::from_tensor), path: path.into(), fused: None }
    }

    /// This linear as the block `rows` of a fused checkpoint linear.
    pub fn fused_into(self, rows: FusedRows) -> Self {
        Self { fused: Some(rows), ..self }
    }

    /// Adds `{path}.weight` (PyTorch's `[out, in]`) and `{path}.bias` to a checkpoint being written
    /// (for a block of a fused linear, see [`put_linears`]).
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

/// Adds every linear's `weight` and `bias` to a checkpoint being written, the blocks of a fused
/// linear joined into its rows under its own name (`qkv_proj.weight`). Every block of a fused
/// linear must be among `linears`.
pub fn put_linears(linears: &[&AdaptedLinear], out: &mut std::collections::BTreeMap<String, crate::weights::HostTensor>) {
    use crate::weights::HostTensor;
    let mut joined: std::collections::BTreeMap<String, (usize, Vec<(usize, HostTensor, Option<HostTensor>)>)> = Default::default();
    for linear in linears {
        let Some(f) = &linear.fused else {
            linear.put(out);
            continue;
        };
        let weight = HostTensor::from_tensor(&linear.weight.dense()).transpose();
        let bias = linear.bias.as_ref().map(|b| HostTensor::from_tensor(&b.val()));
        joined.entry(f.module.clone()).or_insert((f.total, vec![])).1.push((f.start, weight, bias));
    }
    for (module, (total, mut blocks)) in joined {
        blocks.sort_by_key(|(start, _, _)| *start);
        let d_in = blocks[0].1.shape[1];
        let mut next = 0;
        for (start, w, _) in &blocks {
            assert!(*start == next, "the blocks of {module} do not cover its rows in order");
            next += w.shape[0];
        }
        assert!(next == total, "the blocks of {module} hold {next} of its {total} rows");
        let weight = blocks.iter().flat_map(|(_, w, _)| w.data.iter().copied()).collect();
        out.insert(format!("{module}.weight"), HostTensor { shape: vec![total, d_in], data: weight });
        assert!(
            blocks.iter().all(|(_, _, b)| b.is_some()) || blocks.iter().all(|(_, _, b)| b.is_none()),
            "{module}: a bias on some blocks only"
        );
        if blocks[0].2.is_some() {
            let bias = blocks.iter().flat_map(|(_, _, b)| b.as_ref().expect("checked").data.iter().copied()).collect();
            out.insert(format!("{module}.bias"), HostTensor { shape: vec![total], data: bias });
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
