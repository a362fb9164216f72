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

use super::replora::{Generator, GeneratorShape, OutputInit};
use super::{AdapterMethod, Pass, Sites, SizeSetting, Takes};
use crate::adapters::config::{Activation, AdapterConfig, LoraInit};
use crate::adapters::init::Init;
use crate::adapters::linear::{AdaptedLinear, Deltas};
use crate::adapters::set::NamedParams;
use crate::adapters::target::{Target, layer_index};
use crate::error::{Error, Result};

/// The prefix settings (a config's `prefix` object).
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

/// Prefix tuning's trainable state.
#[derive(Module, Debug)]
pub struct PrefixState {
    pub prefix: Prefix,
}

/// Prefix tuning (`--method prefix`).
pub struct PrefixTuning;

impl AdapterMethod for PrefixTuning {
    type Settings = PrefixConfig;
    type State = PrefixState;
    const NAME: &'static str = "prefix";
    const PEFT_TYPE: &'static str = "PREFIX_TUNING";
    const SETTINGS_KEY: Option<&'static str> = Some("prefix");
    const SITES: Sites = Sites::KeyProjections;
    const TAKES: Takes = Takes { low_rank: false, dropout: false, targets: true };

    fn validate(settings: &PrefixConfig) -> Result<()> {
        if settings.length == 0 || settings.hidden == 0 {
            return Err(Error::Config(format!(
                "prefix.length (--prefix-length) and prefix.hidden (--prefix-hidden) must be at least 1, got {} and {}",
                settings.length, settings.hidden
            )));
        }
        Ok(())
    }

    /// One prefix per layer, anchored at its key projection.
    fn init(
        settings: &PrefixConfig,
        _: &AdapterConfig,
        targets: &[Target],
        linears: &[&AdaptedLinear],
        init: &mut Init,
    ) -> Result<PrefixState> {
        check_one_per_layer(targets, linears)?;
        Ok(PrefixState { prefix: Prefix::init(settings, targets, init) })
    }

    fn deltas(state: &PrefixState, _: &PrefixConfig, pass: &Pass, out: &mut Deltas) {
        for (t, kv) in pass.targets.iter().zip(state.prefix.split(pass.targets.iter().map(|t| t.d_out))) {
            out.prefixes.insert(t.path.clone(), kv);
        }
    }

    /// `p * total` directly, `p h + (h h + h + h total + total)` through the MLP, `total` =
    /// 2 d_kv summed over layers.
    fn param_count(settings: &PrefixConfig, targets: &[Target]) -> usize {
        Prefix::param_count(settings, targets)
    }

    /// `prefix.embedding` and `prefix.mlp.<hidden|out>.<weight|bias>`.
    fn map_named<V: NamedParams>(state: PrefixState, _: &[Target], v: &mut V) -> Result<PrefixState> {
        let p = state.prefix;
        let prefix =
            Prefix { embedding: v.param("prefix.embedding", p.embedding)?, mlp: p.mlp.map(|m| m.map_named(v, "prefix.mlp")).transpose()? };
        Ok(PrefixState { prefix })
    }

    fn check_mergeable(action: &str) -> Result<()> {
        super::not_mergeable(
            "prefix tuning (--method prefix) adds keys and values to every attention layer",
            action,
            " (`replora export` writes a decoder's prefix in PEFT's PREFIX_TUNING layout)",
        )
    }

    fn size_settings(settings: &PrefixConfig) -> Vec<SizeSetting<PrefixConfig>> {
        let length = SizeSetting {
            flag: "--prefix-length",
            key: "prefix.length",
            value: settings.length,
            set: |c: &mut PrefixConfig, v| c.length = v,
        };
        let hidden = SizeSetting {
            flag: "--prefix-hidden",
            key: "prefix.hidden",
            value: settings.hidden,
            set: |c: &mut PrefixConfig, v| c.hidden = v,
        };
        // The MLP's width makes no tensor of a direct prefix.
        if settings.reparameterize { vec![length, hidden] } else { vec![length] }
    }

    fn virtual_tokens(settings: &PrefixConfig) -> usize {
        settings.length
    }
}

/// Prefix tuning puts one prefix in every layer, anchored at one linear (its key projection).
fn check_one_per_layer(targets: &[Target], linears: &[&AdaptedLinear]) -> Result<()> {
    let mut layers: Vec<usize> = linears.iter().filter_map(|l| layer_index(&l.path)).collect();
    layers.dedup();
    let anchored: Vec<Option<usize>> = targets.iter().map(|t| t.layer).collect();
    if anchored != layers.iter().map(|&l| Some(l)).collect::<Vec<_>>() {
        return Err(Error::Config(format!(
            "prefix tuning puts a prefix in every layer (0..{}), anchored at its key projection, so its targets must be one key projection per layer (the default); got {:?}",
            layers.len(),
            targets.iter().map(|t| t.path.as_str()).collect::<Vec<_>>()
        )));
    }
    Ok(())
}
