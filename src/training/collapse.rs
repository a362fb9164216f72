//! The collapse guard, for every method: a run whose training loss fell below the chance level
//! (`ln` of the class count) and then returned to it, and stayed there, has collapsed to a
//! constant prediction. It reads only the logged (windowed) training losses, so a resumed run
//! rebuilds it from `metrics.jsonl`.

use serde::{Deserialize, Serialize};

/// The loss must have fallen this fraction below chance before a return counts (0.05 of ln 2 is
/// 0.035: above the noise of a 10-step mean at chance, below issue 27's 0.651 at step 80).
pub const FELL_BELOW: f64 = 0.05;
/// A logged loss at or above `(1 - AT_CHANCE) x chance` is at chance level.
pub const AT_CHANCE: f64 = 0.02;
/// Consecutive logged losses at chance that make a collapse (50 steps at `--log-every 10`).
pub const WINDOW: usize = 5;

/// A detected collapse, as `summary.json` records it (under `training.collapse`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collapse {
    /// The first logged step of the window at chance level.
    pub step: usize,
    /// The step at which the window was complete (where the warning came).
    pub detected_at: usize,
    /// The chance level, `ln` of the class count.
    pub chance_loss: f64,
    /// The lowest logged loss before, and its step.
    pub lowest_loss: f64,
    pub lowest_step: usize,
    /// Whether `--stop-on-collapse` ended the run there.
    pub stopped: bool,
}

impl Collapse {
    /// The warning printed when it is detected.
    pub fn warning(&self) -> String {
        format!(
            "warning: the model collapsed: the training loss fell to {:.3} (step {}) and has been back at the chance level ln K = {:.3} since step {} ({} logged windows, to step {}); \
             it now predicts the same class whatever the input. Likely cause: a gradient spike as the model began to learn, which AdamW turned into an oversized step and then \
             into steps too small to leave where it landed; lower --adam-beta2 (0.95) or --lr; --stop-on-collapse ends such a run here",
            self.lowest_loss, self.lowest_step, self.chance_loss, self.step, WINDOW, self.detected_at
        )
    }
}

/// Watches the logged training losses of one run.
#[derive(Clone, Debug)]
pub struct CollapseDetector {
    chance: f64,
    lowest: Option<(f64, usize)>,
    /// Logged steps at chance level since the loss last left it (after having fallen).
    at_chance: Vec<usize>,
    found: Option<Collapse>,
}

impl CollapseDetector {
    /// A detector for a loss whose chance level is `chance` (`ln K`).
    pub fn new(chance: f64) -> Self {
        Self { chance, lowest: None, at_chance: vec![], found: None }
    }

    /// Feeds the logged loss of `step`; returns the collapse the first time it is complete.
    pub fn observe(&mut self, step: usize, loss: f64) -> Option<Collapse> {
        if self.found.is_some() || !loss.is_finite() {
            return None;
        }
        let fell = self.lowest.is_some_and(|(low, _)| low <= (1.0 - FELL_BELOW) * self.chance);
        if fell && loss >= (1.0 - AT_CHANCE) * self.chance {
            self.at_chance.push(step);
        } else {
            self.at_chance.clear();
        }
        if self.lowest.is_none_or(|(low, _)| loss < low) {
            self.lowest = Some((loss, step));
        }
        if self.at_chance.len() < WINDOW {
            return None;
        }
        let (lowest_loss, lowest_step) = self.lowest.expect("a loss was observed");
        self.found = Some(Collapse {
            step: self.at_chance[0],
            detected_at: step,
            chance_loss: self.chance,
            lowest_loss,
            lowest_step,
            stopped: false,
        });
        self.found.clone()
    }

    /// A detector that has seen the losses logged in `metrics_log` (a resumed run's).
    pub fn replay(chance: f64, metrics_log: &std::path::Path) -> Self {
        let mut detector = Self::new(chance);
        let text = std::fs::read_to_string(metrics_log).unwrap_or_default();
        for line in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            if let (Some(step), Some(loss)) = (line.get("step").and_then(|s| s.as_u64()), line.get("loss").and_then(|l| l.as_f64())) {
                detector.observe(step as usize, loss);
            }
        }
        detector
    }

    /// The collapse found so far, if any.
    pub fn found(&self) -> Option<&Collapse> {
        self.found.as_ref()
    }
}

/// The chance-level loss of a `k`-way classifier: the cross-entropy of a uniform prediction.
pub fn chance_loss(k: usize) -> Option<f64> {
    (k >= 2).then(|| (k as f64).ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(losses: &[f64]) -> Option<Collapse> {
        let mut d = CollapseDetector::new(2f64.ln());
        let mut found = None;
        for (i, &l) in losses.iter().enumerate() {
            if let Some(c) = d.observe(10 * (i + 1), l) {
                assert!(found.is_none(), "reported twice");
                found = Some(c);
            }
        }
        found
    }

    #[test]
    fn issue_27s_replora_run_collapses_at_step_90() {
        // (step, loss) of issue 27's seed 0, RepLoRA: falls to 0.651, jumps, sits at ln 2.
        let losses = [0.70, 0.69, 0.69, 0.69, 0.69, 0.689, 0.68, 0.651, 0.818, 0.692, 0.691, 0.693, 0.69, 0.692, 0.69];
        let c = run(&losses).expect("a collapse");
        assert_eq!((c.step, c.detected_at, c.lowest_step), (90, 130, 80));
        assert!((c.lowest_loss - 0.651).abs() < 1e-12 && !c.stopped);
    }

    #[test]
    fn a_run_that_learns_or_never_learns_does_not_collapse() {
        // Issue 27's LoRA, seed 0: keeps falling.
        assert_eq!(run(&[0.70, 0.69, 0.69, 0.69, 0.69, 0.689, 0.68, 0.662, 0.564, 0.464, 0.3, 0.2, 0.146, 0.15, 0.12]), None);
        // Never below chance (winowhy at 5%): the noise of a window mean is not a fall.
        assert_eq!(run(&[0.70, 0.686, 0.69, 0.68, 0.692, 0.685, 0.69, 0.687, 0.69, 0.69]), None);
    }

    #[test]
    fn the_return_must_last_a_whole_window() {
        // Four logged losses at chance, then learning again: a wobble, not a collapse.
        assert_eq!(run(&[0.6, 0.5, 0.69, 0.70, 0.69, 0.69, 0.5, 0.69, 0.69, 0.69, 0.69, 0.4]), None);
        // Five, counted from the first: a collapse from step 30 on, seen at step 70.
        let c = run(&[0.6, 0.5, 0.69, 0.70, 0.69, 0.69, 0.7, 0.5]).unwrap();
        assert_eq!((c.step, c.detected_at, c.lowest_step), (30, 70, 20));
    }

    #[test]
    fn a_loss_above_chance_counts_and_nan_is_left_to_the_trainer() {
        assert!(run(&[0.4, 3.0, 2.0, 1.0, 0.9, 0.8]).is_some(), "a divergence above ln K is at least chance");
        assert_eq!(run(&[0.4, f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN]), None);
    }

    #[test]
    fn a_resumed_run_replays_its_logged_losses() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("metrics.jsonl");
        let lines: String =
            [0.5, 0.69, 0.7, 0.69, 0.7].iter().enumerate().map(|(i, l)| format!("{{\"step\":{},\"loss\":{l}}}\n", 10 * (i + 1))).collect();
        std::fs::write(&log, lines + "{\"epoch\":1,\"step\":50,\"validation\":{}}\n").unwrap();
        let mut d = CollapseDetector::replay(2f64.ln(), &log);
        assert!(d.found().is_none(), "four logged losses at chance are not yet a window");
        assert_eq!(d.observe(60, 0.69).map(|c| c.step), Some(20));
        assert!(CollapseDetector::replay(2f64.ln(), &dir.path().join("none.jsonl")).found().is_none());
    }

    #[test]
    fn chance_is_ln_k_for_two_or_more_classes() {
        assert_eq!(chance_loss(1), None);
        assert!((chance_loss(4).unwrap() - 4f64.ln()).abs() < 1e-12);
    }
}
