//! DoRA (Liu et al. 2024): LoRA plus a learned per-output-row magnitude `m`, the weight
//! decomposed as `m * (W0 + s B A) / ||W0 + s B A||` (PEFT's `use_dora`).

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde_json::{Map, Value};

use super::lora::{LoraFactors, NoSettings, factor_diagnostics};
use super::{AdapterMethod, Pass};
use crate::adapters::config::AdapterConfig;
use crate::adapters::init::Init;
use crate::adapters::linear::{AdaptedLinear, Deltas};
use crate::adapters::set::NamedParams;
use crate::adapters::target::Target;
use crate::error::Result;

/// One target's factors and magnitude `m` (`[d_out]`).
#[derive(Module, Debug)]
pub struct DoraTarget {
    pub factors: LoraFactors,
    pub magnitude: Param<Tensor<1>>,
}

/// Every target's factors and magnitude, in target order.
#[derive(Module, Debug)]
pub struct DoraState {
    pub targets: Vec<DoraTarget>,
}

/// DoRA.
pub struct Dora;

impl AdapterMethod for Dora {
    type Settings = NoSettings;
    type State = DoraState;
    const NAME: &'static str = "dora";
    const PEFT_TYPE: &'static str = "LORA";
    const SETTINGS_KEY: Option<&'static str> = None;

    /// LoRA's factors, and `m = ||W0||`: with `B = 0` the rescaling is the identity.
    fn init(_: &NoSettings, config: &AdapterConfig, targets: &[Target], linears: &[&AdaptedLinear], init: &mut Init) -> Result<DoraState> {
        let targets = targets
            .iter()
            .map(|t| {
                let factors = LoraFactors::init(t.d_in, t.d_out, t.rank, config.init_lora_weights, init);
                let w = linears.iter().find(|l| l.path == t.path).expect("a target is one of the linears").weight.dense();
                let norm = w.square().sum_dim(0).sqrt().squeeze_dim::<1>(0);
                let magnitude = Param::from_tensor(Tensor::from_data(norm.into_data(), init.device()));
                DoraTarget { factors, magnitude }
            })
            .collect();
        Ok(DoraState { targets })
    }

    fn deltas(state: &DoraState, _: &NoSettings, pass: &Pass, out: &mut Deltas) {
        for (t, s) in pass.targets.iter().zip(&state.targets) {
            out.map.insert(t.path.clone(), s.factors.delta(t, pass, Some(s.magnitude.val())));
        }
    }

    /// LoRA's count plus `d_out` per target.
    fn param_count(_: &NoSettings, targets: &[Target]) -> usize {
        targets.iter().map(|t| t.rank * (t.d_in + t.d_out) + t.d_out).sum()
    }

    /// LoRA's names plus `<path>.magnitude`.
    fn map_named<V: NamedParams>(state: DoraState, targets: &[Target], v: &mut V) -> Result<DoraState> {
        let targets = state
            .targets
            .into_iter()
            .zip(targets)
            .map(|(s, t)| {
                let factors = s.factors.map_named(&t.path, v)?;
                Ok(DoraTarget { factors, magnitude: v.param(&format!("{}.magnitude", t.path), s.magnitude)? })
            })
            .collect::<Result<_>>()?;
        Ok(DoraState { targets })
    }

    fn diagnostics(state: &DoraState, _: &NoSettings, grads: &GradientsParams, out: &mut Map<String, Value>) {
        factor_diagnostics(state.targets.iter().map(|t| &t.factors), grads, out);
    }
}
