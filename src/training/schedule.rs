//! Learning-rate schedules: linear warm-up, then linear or cosine decay (or constant).

use serde::{Deserialize, Serialize};

crate::choice_enum! {
    /// How the learning rate falls after the warm-up.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Decay: "decay" {
        Linear => "linear",
        Cosine => "cosine",
        Constant => "constant",
    }
}

/// The learning rate of every optimizer step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub decay: Decay,
}

impl LrSchedule {
    /// Learning rate for optimizer step `step` (0-based): rises linearly to `peak` over the
    /// warm-up, then decays to 0 at `total_steps` (as transformers' schedulers do).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        match self.decay {
            Decay::Linear => self.peak * (1.0 - progress),
            Decay::Cosine => self.peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Decay::Constant => self.peak,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let s = LrSchedule { peak: 1.0, warmup_steps: 4, total_steps: 14, decay: Decay::Linear };
        assert_eq!(s.at(0), 0.25);
        assert_eq!(s.at(3), 1.0);
        assert_eq!(s.at(4), 1.0);
        assert!((s.at(9) - 0.5).abs() < 1e-12);
        assert_eq!(s.at(14), 0.0);
        let c = LrSchedule { decay: Decay::Cosine, ..s };
        assert!((c.at(9) - 0.5).abs() < 1e-12);
        assert!(c.at(13) < 0.03 && c.at(13) > 0.0);
        assert_eq!(LrSchedule { decay: Decay::Constant, ..s }.at(13), 1.0);
    }
}
