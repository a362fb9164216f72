//! Dynamic loss scaling for f16 products (`--precision f16`), as PyTorch's `GradScaler` does it.
//!
//! f16's smallest normal value is 6e-5, so the small gradients a backward pass carries through
//! f16 products round to zero. The loss is multiplied by a large scale before the backward pass,
//! which lifts them into range, and the gradients are divided by it again (in f32) before the
//! optimizer sees them. A scale too large overflows: a step whose gradients hold an infinity or
//! a NaN is skipped and the scale halved; after [`GROWTH_INTERVAL`] steps without one it doubles.
//! The state is part of a checkpoint, so a resumed run scales as the uninterrupted one did.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::weights::tensors::scalar;

/// The first scale: 2^16, PyTorch's.
pub const INITIAL: f64 = 65536.0;
/// Steps without an overflow before the scale doubles (PyTorch's).
pub const GROWTH_INTERVAL: usize = 2000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    /// What the loss is multiplied by before the backward pass.
    pub scale: f64,
    /// Steps since the last overflow or growth.
    pub finite_steps: usize,
    /// Steps skipped for an overflow, over the whole run.
    pub skipped: usize,
}

impl Default for LossScale {
    fn default() -> Self {
        Self { scale: INITIAL, finite_steps: 0, skipped: 0 }
    }
}

impl LossScale {
    /// Divides `grads` (of `scale` times the loss) by the scale, and updates the scale. `false`
    /// (the step must be skipped) when a gradient holds an infinity or a NaN. One read from the
    /// device per step, as in PyTorch.
    pub fn unscale<M: Module>(&mut self, model: &M, grads: GradientsParams) -> (GradientsParams, bool) {
        let mut visitor = Unscale { grads, factor: 1.0 / self.scale, probe: None };
        model.visit(&mut visitor);
        let finite = visitor.probe.is_none_or(|p| scalar(p).is_finite());
        if finite {
            self.finite_steps += 1;
            if self.finite_steps == GROWTH_INTERVAL {
                (self.scale, self.finite_steps) = (self.scale * 2.0, 0);
            }
        } else {
            (self.scale, self.finite_steps, self.skipped) = (self.scale / 2.0, 0, self.skipped + 1);
        }
        (visitor.grads, finite)
    }
}

struct Unscale {
    grads: GradientsParams,
    factor: f64,
    /// The sum of every gradient times zero: NaN exactly when some value is not finite.
    probe: Option<Tensor<1>>,
}

impl ModuleVisitor for Unscale {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let g = g.mul_scalar(self.factor);
            let zero = g.clone().mul_scalar(0.0).sum();
            self.probe = Some(match self.probe.take() {
                Some(p) => p + zero,
                None => zero,
            });
            self.grads.register(param.id, g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    #[derive(Module, Debug)]
    struct Two {
        a: Param<Tensor<1>>,
        b: Param<Tensor<2>>,
    }

    fn model_and_grads(b_value: f32) -> (Two, GradientsParams) {
        let device = Device::flex();
        let model = Two {
            a: Param::from_tensor(Tensor::from_floats([1.0, 2.0], &device)),
            b: Param::from_tensor(Tensor::from_floats([[3.0, 4.0]], &device)),
        };
        let mut grads = GradientsParams::new();
        grads.register(model.a.id, Tensor::<1>::from_floats([65536.0, -131072.0], &device));
        grads.register(model.b.id, Tensor::<2>::from_floats([[b_value, 0.0]], &device));
        (model, grads)
    }

    fn values<const D: usize>(grads: &mut GradientsParams, id: burn::module::ParamId) -> Vec<f32> {
        grads.remove::<D>(id).unwrap().into_data().try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn finite_gradients_are_divided_by_the_scale_which_grows_after_the_interval() {
        let mut scale = LossScale::default();
        let (model, grads) = model_and_grads(32768.0);
        let (mut grads, finite) = scale.unscale(&model, grads);
        assert!(finite);
        assert_eq!(values::<1>(&mut grads, model.a.id), [1.0, -2.0]);
        assert_eq!(values::<2>(&mut grads, model.b.id), [0.5, 0.0]);
        assert_eq!(scale, LossScale { scale: INITIAL, finite_steps: 1, skipped: 0 });
        scale.finite_steps = GROWTH_INTERVAL - 1;
        let (model, grads) = model_and_grads(1.0);
        assert!(scale.unscale(&model, grads).1);
        assert_eq!(scale, LossScale { scale: 2.0 * INITIAL, finite_steps: 0, skipped: 0 });
    }

    #[test]
    fn an_overflow_skips_the_step_and_halves_the_scale() {
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let mut scale = LossScale { finite_steps: 7, ..LossScale::default() };
            let (model, grads) = model_and_grads(bad);
            assert!(!scale.unscale(&model, grads).1, "{bad}");
            assert_eq!(scale, LossScale { scale: INITIAL / 2.0, finite_steps: 0, skipped: 1 }, "{bad}");
        }
    }
}
