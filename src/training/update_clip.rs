//! AdamW with update clipping (Adafactor's, as StableAdamW uses it for AdamW): each tensor's
//! step `m̂ / (√v̂ + ε)` is divided by `max(1, RMS(step))`, so no tensor moves further than the
//! learning rate per entry on average. AdamW's steps are below that in steady training; they
//! exceed it when a gradient spike meets a second moment that still remembers small gradients
//! (`beta_2 = 0.999` remembers ~1,000 steps), the oversized step that starts issue 27's collapse.
//! Capping it did not avoid that collapse end to end (docs/study/collapse.md): the freeze after
//! the spike, which a shorter memory (`beta_2`) shortens, is what kept the run at chance.
//! The state is burn's [`AdamWState`], so checkpoints have AdamW's format.

use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::prelude::*;

/// AdamW (decoupled weight decay, bias-corrected moments) with update clipping.
#[derive(Clone, Debug)]
pub struct ClippedAdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl Optimizer for ClippedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> (Tensor<D>, Option<AdamWState<D>>) {
        let (b1, b2) = (self.beta_1, self.beta_2);
        let (time, moment_1, moment_2) = match state {
            Some(AdamWState { momentum: s }) => {
                (s.time + 1, s.moment_1 * b1 + grad.clone() * (1.0 - b1), s.moment_2 * b2 + grad.square() * (1.0 - b2))
            }
            None => (1, grad.clone() * (1.0 - b1), grad.square() * (1.0 - b2)),
        };
        let m_hat = moment_1.clone() / (1.0 - b1.powi(time as i32));
        let v_hat = moment_2.clone() / (1.0 - b2.powi(time as i32));
        let step = m_hat / (v_hat.sqrt() + self.epsilon);
        // On the device: no read-back. `[1]` broadcast over every dimension.
        let rms = step.clone().square().mean().sqrt().clamp_min(1.0);
        let step = step / rms.reshape([1; D]);
        let decayed = tensor.clone() - tensor * (lr * self.weight_decay as f64);
        let state = AdamWState::new(AdaptiveMomentumState::new(time, moment_1, moment_2));
        (decayed - step * lr, Some(state))
    }

    fn to_device<const D: usize>(state: AdamWState<D>, device: &Device) -> AdamWState<D> {
        let s = state.momentum;
        AdamWState::new(AdaptiveMomentumState::new(s.time, s.moment_1.to_device(device), s.moment_2.to_device(device)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adamw(epsilon: f32) -> ClippedAdamW {
        ClippedAdamW { beta_1: 0.9, beta_2: 0.999, epsilon, weight_decay: 0.0 }
    }

    /// Steady gradients: the step is AdamW's (first step: `lr * sign(g)` per entry, RMS 1, not
    /// clipped); a spike after 200 small gradients: AdamW's step would be ~3x, clipped to RMS 1.
    #[test]
    fn steps_are_adamws_until_their_rms_exceeds_one() {
        let device = Device::flex();
        let opt = adamw(1e-8);
        let x = Tensor::<1>::zeros([4], &device);
        let g = Tensor::<1>::from_floats([0.5, -0.5, 0.5, -0.5], &device);
        let (after, mut state) = opt.step(1.0, x.clone(), g.clone(), None);
        let first: Vec<f32> = after.into_data().try_to_vec::<f32>().unwrap();
        assert!(first.iter().all(|v| (v.abs() - 1.0).abs() < 1e-4), "{first:?}");
        for _ in 0..200 {
            state = opt.step(1.0, x.clone(), g.clone() * 0.01, state).1;
        }
        let rms = |t: Tensor<1>| (t.into_data().try_to_vec::<f32>().unwrap().iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        let (after, _) = opt.step(1.0, x.clone(), g.clone() * 10.0, state);
        assert!((rms(after.clone()) - 1.0).abs() < 1e-4, "clipped step RMS {}", rms(after));
        // burn's own AdamW on the same gradients: the step the clipping cut.
        let burn_adamw = burn::optim::AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(0.0).build();
        let mut state = burn_adamw.step(1.0, x.clone(), g.clone(), None).1;
        for _ in 0..200 {
            state = burn_adamw.step(1.0, x.clone(), g.clone() * 0.01, state).1;
        }
        let unclipped = rms(burn_adamw.step(1.0, x, g * 10.0, state).0);
        assert!(unclipped > 1.3, "AdamW's step after the spike: RMS {unclipped}");
    }
}
