//! What the trainer logs about the adapters with each metrics line (issue 27): the gradient
//! norms of their parameter groups and, for RepLoRA, how many generator units are saturated.

use burn::module::ParamId;
use burn::optim::GradientsParams;
use serde_json::{Map, Value};

use super::config::{Activation, Method};
use super::replora::seed_rows;
use super::set::AdapterSet;

/// A tanh unit whose pre-activation exceeds this in magnitude is saturated: its slope
/// `1 - tanh^2` is below 0.01, so almost no gradient passes it.
pub const SATURATED_PRE_ACTIVATION: f64 = 3.0;

impl AdapterSet {
    /// Diagnostic fields for one logged step, from that step's gradients (before clipping):
    /// `factor_grad_norm` (LoRA, DoRA: the `A`, `B` factors); RepLoRA's `generator_grad_norm`,
    /// `seed_grad_norm` and, with tanh generators, `tanh_saturated` (the fraction of hidden units,
    /// over every seed row of every block, with `|pre-activation| > 3`).
    pub fn diagnostics(&self, grads: &GradientsParams) -> Map<String, Value> {
        let mut out = Map::new();
        let mut put = |key: &str, value: Option<f64>| {
            if let Some(v) = value {
                out.insert(key.into(), v.into());
            }
        };
        match self.config.method {
            Method::Lora | Method::Dora => {
                let factors: Vec<ParamId> = self.targets.iter().filter_map(|t| t.factors.as_ref()).flat_map(|f| [f.a.id, f.b.id]).collect();
                put("factor_grad_norm", grad_norm(grads, &factors, &[]));
            }
            Method::Replora => {
                let generators = self.generator_params(1.0);
                put("generator_grad_norm", grad_norm(grads, &generators.matrices, &generators.vectors));
                let seeds: Vec<ParamId> = self.blocks.iter().flat_map(|b| [b.seed_a.id, b.seed_b.id]).collect();
                put("seed_grad_norm", grad_norm(grads, &seeds, &[]));
                put("tanh_saturated", self.tanh_saturated());
            }
            _ => {}
        }
        out
    }

    /// The fraction of RepLoRA's tanh units that are saturated, over every block's seed rows
    /// through its generators; `None` for other methods and activations.
    pub fn tanh_saturated(&self) -> Option<f64> {
        let opts = &self.config.replora;
        if self.config.method != Method::Replora || opts.activation != Activation::Tanh || self.blocks.is_empty() {
            return None;
        }
        let (mut saturated, mut units) = (0.0, 0usize);
        for block in &self.blocks {
            let pair = &self.generators[block.generator];
            for (generator, seed) in [(&pair.a, &block.seed_a), (&pair.b, &block.seed_b)] {
                let pre = generator.pre_activations(seed_rows(seed.val(), opts.seed_kind)).detach();
                units += pre.dims().iter().product::<usize>();
                saturated += crate::training::trainer::scalar(pre.abs().greater_elem(SATURATED_PRE_ACTIVATION).float().sum());
            }
        }
        Some(saturated / units as f64)
    }
}

/// The L2 norm of the gradients of `matrices` (2-D) and `vectors` (1-D) together; `None` when
/// none of them has a gradient.
fn grad_norm(grads: &GradientsParams, matrices: &[ParamId], vectors: &[ParamId]) -> Option<f64> {
    let squares = matrices
        .iter()
        .filter_map(|&id| grads.get::<2>(id).map(|g| g.square().sum()))
        .chain(vectors.iter().filter_map(|&id| grads.get::<1>(id).map(|g| g.square().sum())));
    let mut total = None;
    for s in squares {
        *total.get_or_insert(0.0) += crate::training::trainer::scalar(s);
    }
    total.map(f64::sqrt)
}
