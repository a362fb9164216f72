//! Trainer settings; every field is also a CLI flag and a key of a TOML/JSON config file.

use serde::{Deserialize, Serialize};

use super::schedule::Decay;

crate::choice_enum! {
    /// Which validation metric picks the best checkpoint.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum BestMetric: "best metric" {
        Accuracy => "accuracy",
        MacroF1 => "macro-f1",
        Loss => "loss",
    }
}

crate::choice_enum! {
    /// Where a run reports its metrics besides `metrics.jsonl`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ReportTo: "report target" {
        /// TensorBoard event files in the run directory (`tensorboard --logdir runs/`).
        Tensorboard => "tensorboard",
        /// metrics.jsonl only.
        None => "none",
    }
}

// `choice_enum!` takes doc comments only on its values, so not `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for ReportTo {
    fn default() -> Self {
        ReportTo::Tensorboard
    }
}

impl ReportTo {
    fn is_default(&self) -> bool {
        *self == ReportTo::default()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub weight_decay: f64,
    /// AdamW's second-moment decay `beta_2`; 0.99 by default (issue 27: at 0.999 a gradient
    /// spike froze runs at the majority class). Written only when it differs from 0.999, the
    /// value of every run before this setting, so that their specs (and sweep cells) keep
    /// their identity and a spec without the key reads back as 0.999.
    #[serde(default = "legacy_adam_beta2", skip_serializing_if = "is_legacy_adam_beta2")]
    pub adam_beta2: f64,
    /// No weight decay on biases, norms, scales and RepLoRA's seeds (transformers' Trainer
    /// exempts biases and norms); on by default. A spec without the key is one written before
    /// it existed, which decayed every parameter, and reads back as off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exempt_from_decay: bool,
    /// Scale each tensor's AdamW step down to RMS 1 where it is larger (update clipping, see
    /// [`super::update_clip`]). Written only when on, like `exempt_from_decay`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_clip: bool,
    /// Fraction of the optimizer steps spent warming up.
    pub warmup_ratio: f64,
    pub decay: Decay,
    /// Clip each parameter tensor's gradient to this L2 norm, as burn's `GradientClipping::Norm`
    /// does (none: no clipping). Not the global norm over all tensors that PyTorch's
    /// `clip_grad_norm_` bounds.
    pub grad_clip: Option<f32>,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Keep only each layer's input in the forward pass and recompute the rest in the backward
    /// pass (see [`crate::models::recompute`]): less memory, one more forward pass.
    /// Written only when on, so that specs written before it keep their identity.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub checkpoint_activations: bool,
    /// Stop after this many evaluations without improvement (none: never).
    pub patience: Option<usize>,
    pub best_metric: BestMetric,
    /// Also write a resumable checkpoint every N optimizer steps (always at each epoch end).
    pub checkpoint_every: Option<usize>,
    /// Log a metrics line every N optimizer steps.
    pub log_every: usize,
    pub seed: u64,
    /// End the run when the collapse guard finds the training loss back at chance level.
    /// Left out of the spec when off, so that the specs (and sweep cells) written before it
    /// existed keep their identity.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stop_on_collapse: bool,
    /// TensorBoard event files beside `metrics.jsonl`, or none. Written only when not the
    /// default, so that specs (and sweep cells) written before it keep their identity.
    #[serde(skip_serializing_if = "ReportTo::is_default")]
    pub report_to: ReportTo,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 4,
            batch_size: 16,
            lr: 2e-3,
            weight_decay: 0.01,
            adam_beta2: DEFAULT_ADAM_BETA2,
            exempt_from_decay: true,
            update_clip: false,
            warmup_ratio: 0.1,
            decay: Decay::Linear,
            grad_clip: Some(1.0),
            grad_accum: 1,
            checkpoint_activations: false,
            patience: None,
            best_metric: BestMetric::Accuracy,
            checkpoint_every: None,
            log_every: 10,
            seed: 0,
            stop_on_collapse: false,
            report_to: ReportTo::Tensorboard,
        }
    }
}

/// AdamW's `beta_2` before `adam_beta2` existed (burn's and PyTorch's default).
const LEGACY_ADAM_BETA2: f64 = 0.999;
/// About 100 steps of memory: learns every seed of issue 27's reproduction, where 0.999 froze
/// one, and is level with 0.999 on validation elsewhere (docs/study/collapse.md).
pub const DEFAULT_ADAM_BETA2: f64 = 0.99;

fn legacy_adam_beta2() -> f64 {
    LEGACY_ADAM_BETA2
}

fn is_legacy_adam_beta2(b: &f64) -> bool {
    *b == LEGACY_ADAM_BETA2
}

impl TrainConfig {
    /// Checks every field, naming the flag of the first bad one.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::validate::{Range, at_least_one, check};
        at_least_one("epochs", self.epochs)?;
        at_least_one("batch-size", self.batch_size)?;
        at_least_one("grad-accum", self.grad_accum)?;
        at_least_one("log-every", self.log_every)?;
        if let Some(n) = self.checkpoint_every {
            at_least_one("checkpoint-every", n)?;
        }
        if let Some(n) = self.patience {
            at_least_one("patience", n)?;
        }
        check("lr", self.lr, Range::Positive)?;
        check("weight-decay", self.weight_decay, Range::NonNegative)?;
        check("warmup-ratio", self.warmup_ratio, Range::Probability)?;
        check("adam-beta2", self.adam_beta2, Range::Probability)?;
        if let Some(c) = self.grad_clip {
            check("grad-clip", c as f64, Range::Positive)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TrainConfig;

    /// A spec written before `adam_beta2` existed has no such key and reads back as 0.999, and a
    /// 0.999 spec is written without it, so old runs and sweep cells keep their identity.
    #[test]
    fn adam_beta2_is_written_only_when_it_is_not_the_old_value() {
        let old = TrainConfig { adam_beta2: 0.999, ..TrainConfig::default() };
        let json = serde_json::to_value(&old).unwrap();
        assert!(json.get("adam_beta2").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap().adam_beta2, 0.999);
        let new = TrainConfig { adam_beta2: 0.95, ..TrainConfig::default() };
        let json = serde_json::to_value(&new).unwrap();
        assert_eq!(json["adam_beta2"], 0.95);
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap(), new);
        let bad = TrainConfig { adam_beta2: 1.0, ..TrainConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("--adam-beta2"));
    }

    /// The decay exemption is the default; a spec from before it (no key) reads back as
    /// every parameter decayed, the way that run trained, and a run with it off says so.
    #[test]
    fn specs_without_the_decay_exemption_key_decay_every_parameter() {
        let new = TrainConfig::default();
        assert!(new.exempt_from_decay);
        let mut json = serde_json::to_value(&new).unwrap();
        assert_eq!(json["exempt_from_decay"], true);
        json.as_object_mut().unwrap().remove("exempt_from_decay");
        assert!(!serde_json::from_value::<TrainConfig>(json).unwrap().exempt_from_decay);
        let off = TrainConfig { exempt_from_decay: false, ..TrainConfig::default() };
        let json = serde_json::to_value(&off).unwrap();
        assert!(json.get("exempt_from_decay").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap(), off);
    }
}
