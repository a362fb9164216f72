//! Houlsby bottleneck adapters (Houlsby et al. 2019; the paper's "Adapter" rows): after a
//! linear's output `y`, `y + up(act(down(y)))`, with `up` starting at zero so the adapted
//! model starts as the base. Placed after the attention output and the feed-forward output
//! of every layer (each architecture's `ADAPTER_SITES`).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::linear;
use serde::{Deserialize, Serialize};

use super::{AdapterMethod, Pass, Sites, SizeSetting, Takes};
use crate::adapters::config::{Activation, AdapterConfig};
use crate::adapters::init::Init;
use crate::adapters::linear::{AdaptedLinear, Deltas};
use crate::adapters::set::NamedParams;
use crate::adapters::target::Target;
use crate::error::{Error, Result};

/// The bottleneck adapter's settings (a config's `bottleneck` object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BottleneckConfig {
    /// Bottleneck width `m`; `None`: the site's width / [`REDUCTION_FACTOR`] (at least 1).
    pub size: Option<usize>,
    pub activation: Activation,
}

/// Default `d / m`: 16, AdapterHub's Houlsby setting and the paper's LLaMA-7B budget
/// (m = 256 on width 4,096 at two sites per layer: 0.99% of the model).
pub const REDUCTION_FACTOR: usize = 16;

impl Default for BottleneckConfig {
    fn default() -> Self {
        Self { size: None, activation: Activation::Relu }
    }
}

impl BottleneckConfig {
    /// The bottleneck width at a site of width `d`.
    pub fn width(&self, d: usize) -> usize {
        self.size.unwrap_or((d / REDUCTION_FACTOR).max(1))
    }
}

/// One site's adapter: `down` `[d, m]` and `up` `[m, d]` in burn's layout, with biases.
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub down_weight: Param<Tensor<2>>,
    pub down_bias: Param<Tensor<1>>,
    pub up_weight: Param<Tensor<2>>,
    pub up_bias: Param<Tensor<1>>,
}

impl Bottleneck {
    /// `down` as `torch.nn.Linear` initialises it, `up` zero: the adapter starts as the identity.
    pub fn init(d: usize, m: usize, init: &mut Init) -> Self {
        Self {
            down_weight: init.kaiming([d, m], d),
            down_bias: init.kaiming([m], d),
            up_weight: init.constant([m, d], 0.0),
            up_bias: init.constant([d], 0.0),
        }
    }

    /// Trainable parameters at a site of width `d` with bottleneck `m`.
    pub fn param_count(d: usize, m: usize) -> usize {
        2 * d * m + m + d
    }

    /// The tensors under `<path>.adapter.<down|up>.<weight|bias>` (burn layout).
    fn map_named<V: NamedParams>(self, path: &str, v: &mut V) -> Result<Self> {
        Ok(Self {
            down_weight: v.param(&format!("{path}.adapter.down.weight"), self.down_weight)?,
            down_bias: v.param(&format!("{path}.adapter.down.bias"), self.down_bias)?,
            up_weight: v.param(&format!("{path}.adapter.up.weight"), self.up_weight)?,
            up_bias: v.param(&format!("{path}.adapter.up.bias"), self.up_bias)?,
        })
    }

    /// The tensors of one forward pass.
    pub fn delta(&self, activation: Activation, dropout: f64) -> BottleneckDelta {
        BottleneckDelta {
            down_weight: self.down_weight.val(),
            down_bias: self.down_bias.val(),
            up_weight: self.up_weight.val(),
            up_bias: self.up_bias.val(),
            activation,
            dropout,
        }
    }
}

/// What a bottleneck adds to one linear's output during one forward pass.
#[derive(Clone, Debug)]
pub struct BottleneckDelta {
    pub down_weight: Tensor<2>,
    pub down_bias: Tensor<1>,
    pub up_weight: Tensor<2>,
    pub up_bias: Tensor<1>,
    pub activation: Activation,
    /// Dropout on the adapter's input (training passes only).
    pub dropout: f64,
}

impl BottleneckDelta {
    /// `y + up(act(down(y)))`, the adapter's input dropped out with `training`.
    pub fn apply<const D: usize>(&self, y: Tensor<D>, training: bool) -> Tensor<D> {
        let input = if training { crate::adapters::linear::dropout(y.clone(), self.dropout) } else { y.clone() };
        let hidden = self.activation.apply(linear(input, self.down_weight.clone(), Some(self.down_bias.clone())));
        y + linear(hidden, self.up_weight.clone(), Some(self.up_bias.clone()))
    }
}

/// One site's bottleneck.
#[derive(Module, Debug)]
pub struct BottleneckTarget {
    pub bottleneck: Bottleneck,
}

/// Every site's bottleneck, in target order.
#[derive(Module, Debug)]
pub struct BottleneckState {
    pub targets: Vec<BottleneckTarget>,
}

/// Houlsby bottleneck adapters (`--method adapter`).
pub struct Houlsby;

impl AdapterMethod for Houlsby {
    type Settings = BottleneckConfig;
    type State = BottleneckState;
    const NAME: &'static str = "adapter";
    const PEFT_TYPE: &'static str = "BOTTLENECK";
    const SETTINGS_KEY: Option<&'static str> = Some("bottleneck");
    const SITES: Sites = Sites::Outputs;
    const TAKES: Takes = Takes { low_rank: false, dropout: true, targets: true };

    fn validate(settings: &BottleneckConfig) -> Result<()> {
        if settings.size == Some(0) {
            return Err(Error::Config("the bottleneck width (bottleneck.size, --bottleneck) must be at least 1".into()));
        }
        Ok(())
    }

    fn init(
        settings: &BottleneckConfig,
        _: &AdapterConfig,
        targets: &[Target],
        _: &[&AdaptedLinear],
        init: &mut Init,
    ) -> Result<BottleneckState> {
        let targets =
            targets.iter().map(|t| BottleneckTarget { bottleneck: Bottleneck::init(t.d_out, settings.width(t.d_out), init) }).collect();
        Ok(BottleneckState { targets })
    }

    fn deltas(state: &BottleneckState, settings: &BottleneckConfig, pass: &Pass, out: &mut Deltas) {
        for (t, s) in pass.targets.iter().zip(&state.targets) {
            out.bottlenecks.insert(t.path.clone(), s.bottleneck.delta(settings.activation, pass.dropout));
        }
    }

    /// `2 d m + m + d` per site of width `d`.
    fn param_count(settings: &BottleneckConfig, targets: &[Target]) -> usize {
        targets.iter().map(|t| Bottleneck::param_count(t.d_out, settings.width(t.d_out))).sum()
    }

    fn map_named<V: NamedParams>(state: BottleneckState, targets: &[Target], v: &mut V) -> Result<BottleneckState> {
        let targets = state
            .targets
            .into_iter()
            .zip(targets)
            .map(|(s, t)| Ok(BottleneckTarget { bottleneck: s.bottleneck.map_named(&t.path, v)? }))
            .collect::<Result<_>>()?;
        Ok(BottleneckState { targets })
    }

    fn check_mergeable(action: &str) -> Result<()> {
        super::not_mergeable("a bottleneck adapter (--method adapter) adds layers (down, non-linearity, up)", action, "")
    }

    fn size_settings(settings: &BottleneckConfig) -> Vec<SizeSetting<BottleneckConfig>> {
        let set = |c: &mut BottleneckConfig, v| c.size = Some(v);
        settings.size.map(|m| SizeSetting { flag: "--bottleneck", key: "bottleneck.size", value: m, set }).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn applies_the_bottleneck_to_the_output_with_a_residual() {
        let device = Device::flex();
        let mut init = Init::new(1, &device);
        let mut b = Bottleneck::init(3, 2, &mut init);
        b.up_weight = init.uniform([2, 3], 1.0);
        b.up_bias = init.uniform([3], 1.0);
        let y = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, -1.0, 2.0, 0.0, 1.5, -0.25], [2, 3]), &device);
        let got = host(b.delta(Activation::Tanh, 0.0).apply(y.clone(), false));
        let [dw, db, uw, ub] = [host(b.down_weight.val()), host(b.down_bias.val()), host(b.up_weight.val()), host(b.up_bias.val())];
        let y = host(y);
        for row in 0..2 {
            let hidden: Vec<f32> = (0..2).map(|j| ((0..3).map(|i| y[row * 3 + i] * dw[i * 2 + j]).sum::<f32>() + db[j]).tanh()).collect();
            for k in 0..3 {
                let want = y[row * 3 + k] + (0..2).map(|j| hidden[j] * uw[j * 3 + k]).sum::<f32>() + ub[k];
                assert!((got[row * 3 + k] - want).abs() < 1e-6, "row {row} col {k}: {} vs {want}", got[row * 3 + k]);
            }
        }
        assert_eq!(BottleneckConfig::default().width(384), 24);
        assert_eq!(BottleneckConfig::default().width(8), 1);
        assert_eq!(Bottleneck::param_count(384, 24), 2 * 384 * 24 + 24 + 384);
    }
}
