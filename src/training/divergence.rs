//! What a non-finite loss says: where it happened, whether a checkpoint can be resumed, and
//! the likely cause among the settings the run actually uses.

use std::ops::RangeInclusive;
use std::path::Path;

use super::TrainConfig;
use super::checkpoint;

/// Where the loss stopped being finite.
pub struct Divergence {
    pub loss: f64,
    /// 1-based.
    pub epoch: usize,
    /// The micro-batches (1-based) whose summed loss was not finite: one batch before the first
    /// step, where the loss is read at once; afterwards those since the last metrics line.
    pub batches: RangeInclusive<usize>,
    /// Optimizer steps taken before the first of those batches.
    pub steps_taken: usize,
    /// RepLoRA's generators' multiple of the learning rate, if the model has such a group.
    pub generator_multiplier: Option<f64>,
}

impl Divergence {
    /// The message for a run whose checkpoints live in `checkpoint_dir`; `lr_now` is the
    /// learning rate of the last step.
    pub fn message(&self, cfg: &TrainConfig, lr_now: f64, checkpoint_dir: &Path, schedule: &checkpoint::Schedule) -> String {
        let (loss, epoch, steps) = (self.loss, self.epoch, self.steps_taken);
        let (first, last) = (self.batches.start(), self.batches.end());
        let batches = if first == last { format!("batch {first}") } else { format!("batches {first}-{last}") };
        let at =
            format!("loss became {loss} at epoch {epoch}, {batches}, after {steps} optimizer step{}", if steps == 1 { "" } else { "s" });
        let cause = if steps == 0 {
            "nothing has been trained yet, so no learning-rate setting caused it: the model's outputs on this batch are not finite (check --model's weights)".to_string()
        } else {
            let mut causes = vec![];
            if let Some(m) = self.generator_multiplier.filter(|m| *m > 1.0) {
                causes.push(format!("--generator-lr-multiplier {} (RepLoRA's generators step at {})", short(m), short(lr_now * m)));
            }
            causes.push(format!("--lr {} (the last step ran at {})", short(cfg.lr), short(lr_now)));
            if cfg.grad_clip.is_none() {
                causes.push("gradient clipping is off (--grad-clip 0; 1 is the default)".into());
            }
            let clipped =
                cfg.grad_clip.map(|c| format!("; each parameter tensor's gradient is already clipped at norm {c}")).unwrap_or_default();
            format!("likely causes, most likely first: {}{clipped}", causes.join("; "))
        };
        let resume = match checkpoint::existing(checkpoint_dir) {
            Some(dir) => match checkpoint::read_progress(&dir, schedule) {
                Ok(p) => format!("the checkpoint in {} (step {}) is intact", dir.display(), p.step),
                Err(_) => format!("a checkpoint exists in {}", dir.display()),
            },
            None => "no checkpoint was written yet: the run starts over".into(),
        };
        format!("{at}. {cause}. {resume}")
    }
}

/// A number as a flag takes it: `1e308`, not 309 digits.
fn short(x: f64) -> String {
    if x != 0.0 && !(1e-4..1e6).contains(&x.abs()) { format!("{x:e}") } else { x.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_blames_what_the_run_uses_and_says_whether_a_checkpoint_exists() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("checkpoint");
        let cfg = TrainConfig::default();
        let schedule = checkpoint::Schedule { epochs: 1, batches_per_epoch: 4, grad_accum: 1 };
        let d = Divergence { loss: f64::NAN, epoch: 1, batches: 2..=2, steps_taken: 1, generator_multiplier: Some(1e308) };
        let m = d.message(&cfg, 1e-3, &checkpoint, &schedule);
        assert!(m.contains("after 1 optimizer step.") && m.contains("no checkpoint was written yet"), "{m}");
        let blamed = m.find("--generator-lr-multiplier 1e308").unwrap_or_else(|| panic!("{m}"));
        assert!(blamed < m.find("--lr").unwrap(), "the multiplier comes first: {m}");
        assert!(m.contains("already clipped at norm 1") && !m.contains("set --grad-clip"), "{m}");

        let unclipped = TrainConfig { grad_clip: None, ..TrainConfig::default() };
        let m = Divergence { generator_multiplier: None, batches: 3..=12, ..d }.message(&unclipped, 1e-3, &checkpoint, &schedule);
        assert!(m.contains("clipping is off") && !m.contains("multiplier"), "{m}");
        assert!(m.contains("at epoch 1, batches 3-12, after 1 optimizer step."), "{m}");

        let m = Divergence { loss: f64::INFINITY, epoch: 1, batches: 1..=1, steps_taken: 0, generator_multiplier: None }.message(
            &cfg,
            1e-3,
            &checkpoint,
            &schedule,
        );
        assert!(m.contains("nothing has been trained yet") && !m.contains("--lr"), "{m}");
    }
}
