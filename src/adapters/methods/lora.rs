//! LoRA (Hu et al. 2021): `W0 + s B A` with independent factors per target.

use burn::module::{Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{AdapterMethod, Pass};
use crate::adapters::config::{AdapterConfig, LoraInit};
use crate::adapters::diagnostics::grad_norm;
use crate::adapters::init::Init;
use crate::adapters::linear::{AdaptedLinear, Deltas, LinearDelta};
use crate::adapters::set::NamedParams;
use crate::adapters::target::Target;
use crate::error::Result;

/// `A` (`[d_in, r]`) and `B` (`[r, d_out]`), burn's layout of PEFT's `lora_A`/`lora_B`.
#[derive(Module, Debug)]
pub struct LoraFactors {
    pub a: Param<Tensor<2>>,
    pub b: Param<Tensor<2>>,
}

impl LoraFactors {
    /// `A` as configured, `B = 0`: the adapted layer starts equal to the base layer.
    pub fn init(d_in: usize, d_out: usize, rank: usize, kind: LoraInit, init: &mut Init) -> Self {
        let a = match kind {
            LoraInit::Kaiming => init.kaiming([d_in, rank], d_in),
            LoraInit::Gaussian => init.normal([d_in, rank], 1.0 / rank as f64),
        };
        Self { a, b: init.constant([rank, d_out], 0.0) }
    }

    /// Factors holding these values (detached: a new leaf each).
    pub fn from_values(a: &Tensor<2>, b: &Tensor<2>) -> Self {
        Self { a: Param::from_tensor(a.clone().detach()), b: Param::from_tensor(b.clone().detach()) }
    }

    /// The factors under `<path>.lora_A` / `<path>.lora_B`.
    pub fn map_named<V: NamedParams>(self, path: &str, v: &mut V) -> Result<Self> {
        Ok(Self { a: v.param(&format!("{path}.lora_A"), self.a)?, b: v.param(&format!("{path}.lora_B"), self.b)? })
    }

    /// The delta of target `t` with these factors.
    pub fn delta(&self, t: &Target, pass: &Pass, magnitude: Option<Tensor<1>>) -> LinearDelta {
        LinearDelta { a: self.a.val(), b: self.b.val(), scale: t.scale, dropout: pass.dropout, magnitude }
    }
}

/// LoRA has no settings beyond the config's shared ones (rank, alpha, init, targets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NoSettings {}

/// One target's factors.
#[derive(Module, Debug)]
pub struct LoraTarget {
    pub factors: LoraFactors,
}

/// The factors of every target, in target order.
#[derive(Module, Debug)]
pub struct LoraState {
    pub targets: Vec<LoraTarget>,
}

/// The gradient norm of a set of factors, as the metrics line's `factor_grad_norm`.
pub(crate) fn factor_diagnostics<'a>(
    factors: impl Iterator<Item = &'a LoraFactors>,
    grads: &GradientsParams,
    out: &mut Map<String, Value>,
) {
    let ids: Vec<ParamId> = factors.flat_map(|f| [f.a.id, f.b.id]).collect();
    if let Some(norm) = grad_norm(grads, &ids, &[]) {
        out.insert("factor_grad_norm".into(), norm.into());
    }
}

/// LoRA.
pub struct Lora;

impl AdapterMethod for Lora {
    type Settings = NoSettings;
    type State = LoraState;
    const NAME: &'static str = "lora";
    const PEFT_TYPE: &'static str = "LORA";
    const SETTINGS_KEY: Option<&'static str> = None;

    fn init(_: &NoSettings, config: &AdapterConfig, targets: &[Target], _: &[&AdaptedLinear], init: &mut Init) -> Result<LoraState> {
        let targets = targets
            .iter()
            .map(|t| LoraTarget { factors: LoraFactors::init(t.d_in, t.d_out, t.rank, config.init_lora_weights, init) })
            .collect();
        Ok(LoraState { targets })
    }

    fn deltas(state: &LoraState, _: &NoSettings, pass: &Pass, out: &mut Deltas) {
        for (t, s) in pass.targets.iter().zip(&state.targets) {
            out.map.insert(t.path.clone(), s.factors.delta(t, pass, None));
        }
    }

    /// `sum r (d_in + d_out)`.
    fn param_count(_: &NoSettings, targets: &[Target]) -> usize {
        targets.iter().map(|t| t.rank * (t.d_in + t.d_out)).sum()
    }

    /// `<path>.lora_A`, `<path>.lora_B` (burn layout).
    fn map_named<V: NamedParams>(state: LoraState, targets: &[Target], v: &mut V) -> Result<LoraState> {
        let targets = state
            .targets
            .into_iter()
            .zip(targets)
            .map(|(s, t)| Ok(LoraTarget { factors: s.factors.map_named(&t.path, v)? }))
            .collect::<Result<_>>()?;
        Ok(LoraState { targets })
    }

    fn diagnostics(state: &LoraState, _: &NoSettings, grads: &GradientsParams, out: &mut Map<String, Value>) {
        factor_diagnostics(state.targets.iter().map(|t| &t.factors), grads, out);
    }
}
