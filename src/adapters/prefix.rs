//! Prefix tuning (Li and Liang 2021; the paper's "Prefix" rows): `p` learned key and value
//! vectors put in front of every attention layer's keys and values, trained through a
//! reparameterization MLP (`embedding [p, h] -> Linear(h, h) -> tanh -> Linear(h, total)`)
//! that is evaluated once and dropped after training, or directly.
//!
//! A prefix is anchored at each layer's key projection (the targets of `--method prefix`),
//! whose output width is the width of the prefix's keys and values. The generated rows follow
//! PEFT's `prompt_embeddings` layout `[p, layers * 2 * d_kv]`: per layer its keys, then its
//! values, each `[kv_heads, head_dim]`.

use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::{Activation, LoraInit};
use super::init::Init;
use super::replora::{Generator, GeneratorShape, OutputInit};
use super::target::Target;

/// The prefix settings (ignored by the other methods).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixConfig {
    /// Virtual tokens `p` per layer.
    pub length: usize,
    /// Train through the reparameterization MLP (Li and Liang) instead of the prefixes directly.
    pub reparameterize: bool,
    /// Width `h` of the reparameterization's embedding and hidden layer.
    pub hidden: usize,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        Self { length: 10, reparameterize: true, hidden: 64 }
    }
}

/// The trainable prefix of a whole model.
#[derive(Module, Debug)]
pub struct Prefix {
    /// `[p, total]` directly, or the MLP's input `[p, h]`.
    pub embedding: Param<Tensor<2>>,
    pub mlp: Option<Generator>,
}

/// One layer's prefix for one forward pass, `[p, d_kv]` each.
#[derive(Clone, Debug)]
pub struct PrefixKv {
    pub key: Tensor<2>,
    pub value: Tensor<2>,
}

/// Width of all layers' keys and values together.
fn total_width(targets: &[Target]) -> usize {
    targets.iter().map(|t| 2 * t.d_out).sum()
}

impl Prefix {
    /// Embeddings as `torch.nn.Embedding` starts them (standard normal), the MLP as
    /// `torch.nn.Linear`.
    pub fn init(config: &PrefixConfig, targets: &[Target], init: &mut Init) -> Self {
        let total = total_width(targets);
        let (p, h) = (config.length, config.hidden);
        match config.reparameterize {
            true => Self {
                embedding: init.normal([p, h], 1.0),
                mlp: Some(Generator::init(&mlp_shape(h, total), 1, OutputInit::LoraA(LoraInit::Kaiming), init)),
            },
            false => Self { embedding: init.normal([p, total], 1.0), mlp: None },
        }
    }

    /// Trainable parameters for these targets.
    pub fn param_count(config: &PrefixConfig, targets: &[Target]) -> usize {
        let total = total_width(targets);
        let (p, h) = (config.length, config.hidden);
        match config.reparameterize {
            true => p * h + Generator::param_count(&mlp_shape(h, total)),
            false => p * total,
        }
    }

    /// The prefixes `[p, total]` in PEFT's `prompt_embeddings` layout.
    pub fn rows(&self) -> Tensor<2> {
        match &self.mlp {
            Some(mlp) => mlp.forward(self.embedding.val(), Activation::Tanh, 1.0),
            None => self.embedding.val(),
        }
    }

    /// The evaluated prefix as a direct one: the MLP dropped, its output kept.
    pub fn materialized(&self) -> Self {
        Self { embedding: Param::from_tensor(self.rows().detach()), mlp: None }
    }

    /// Each layer's keys and values, in target order, for targets of key widths `widths`.
    pub fn split(&self, widths: impl IntoIterator<Item = usize>) -> Vec<PrefixKv> {
        let rows = self.rows();
        let mut offset = 0;
        widths
            .into_iter()
            .map(|d| {
                let kv = PrefixKv { key: rows.clone().narrow(1, offset, d), value: rows.clone().narrow(1, offset + d, d) };
                offset += 2 * d;
                kv
            })
            .collect()
    }
}

impl PrefixKv {
    /// Puts the prefix in front of `k` and `v` (`[batch, kv_heads, t, head_dim]`).
    pub fn prepend(&self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [b, heads, _, d] = k.dims();
        let [p, width] = self.key.dims();
        assert_eq!(
            width,
            heads * d,
            "a prefix must be anchored at the key projection: its width {width} is not the attention's {heads} key heads x {d}"
        );
        let shape = |x: Tensor<2>| x.reshape([1, p, heads, d]).swap_dims(1, 2).expand([b, heads, p, d]);
        (Tensor::cat(vec![shape(self.key.clone()), k], 2), Tensor::cat(vec![shape(self.value.clone()), v], 2))
    }

    /// Virtual tokens `p`.
    pub fn tokens(&self) -> usize {
        self.key.dims()[0]
    }
}

/// An additive attention mask `[.., t_q, keys]` with `p` visible key columns in front.
pub fn mask_with_prefix(mask: Tensor<4>, p: usize) -> Tensor<4> {
    let [b, h, t, _] = mask.dims();
    Tensor::cat(vec![Tensor::zeros([b, h, t, p], &mask.device()), mask], 3)
}

/// The reparameterization MLP: `h -> h -> total`, with biases and no scale.
fn mlp_shape(h: usize, total: usize) -> GeneratorShape {
    GeneratorShape { d_seed: h, hidden: h, d_gen: total, bias: true, learned_scale: None }
}
