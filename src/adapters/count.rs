//! Closed-form trainable-parameter counts and the PPT metric (spec section 4).

use super::config::AdapterConfig;
use super::target::Target;

/// Trainable parameters of `config` applied to `targets`, from each method's formula
/// ([`super::methods::AdapterMethod::param_count`]).
pub fn closed_form(config: &AdapterConfig, targets: &[Target]) -> usize {
    config.method.param_count(targets)
}

/// Bytes per trainable parameter while training: the value, its gradient and AdamW's two
/// moments, f32 each.
pub const TRAINING_BYTES_PER_PARAM: u64 = 16;

/// Refuses an adapter whose training state would not fit in this machine's memory (issue 26:
/// `--bottleneck 100000000` aborted on allocation), naming the largest value of the setting
/// that makes it large that fits.
pub fn check_memory(config: &AdapterConfig, targets: &[Target]) -> crate::Result<()> {
    let need = |c: &AdapterConfig| (closed_form(c, targets) as u64).saturating_mul(TRAINING_BYTES_PER_PARAM);
    let what = || {
        format!(
            "training the {} adapter ({} trainable parameters, {TRAINING_BYTES_PER_PARAM} bytes each with gradients and AdamW state)",
            config.method,
            closed_form(config, targets)
        )
    };
    let fitting = || {
        for size in config.method.size_settings() {
            let need_at = |v: usize| {
                let mut c = config.clone();
                size.set(&mut c.method, v);
                need(&c)
            };
            if let Some(v) = crate::memory::largest_fitting(size.value, need_at) {
                return format!("at most {} {v} fits", size.flag);
            }
        }
        "lower --rank or adapt fewer modules (--targets)".to_string()
    };
    crate::memory::check(need(config), what, fitting)
}

/// Performance per parameter (SCT paper): `acc * exp(-log10(C / 1e7 + 1))`.
pub fn ppt(accuracy: f64, trainable_params: usize) -> f64 {
    accuracy * (-(trainable_params as f64 / 1e7 + 1.0).log10()).exp()
}

/// PEFT's `print_trainable_parameters` line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamReport {
    pub trainable: usize,
    pub total: usize,
}

impl ParamReport {
    pub fn percent(&self) -> f64 {
        100.0 * self.trainable as f64 / self.total as f64
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl std::fmt::Display for ParamReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            thousands(self.trainable),
            thousands(self.total),
            self.percent()
        )
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;
    use crate::adapters::methods::{Method, bottleneck::Houlsby, prefix::PrefixTuning, replora::RepLora};

    fn target(d: usize) -> Target {
        Target { path: "l.0.q".into(), layer: Some(0), d_in: d, d_out: d, rank: 8, alpha: 16.0, scale: 2.0, fused: None }
    }

    /// Issue 26 (crash 2): `--bottleneck/--hidden/--prefix-length 100000000` aborted on allocation.
    #[test]
    fn adapters_larger_than_memory_are_refused_with_what_fits() {
        let mut houlsby = AdapterConfig::new(Method::Houlsby);
        houlsby.method.settings_mut::<Houlsby>().unwrap().size = Some(100_000_000_000);
        let mut replora = AdapterConfig::new(Method::Replora);
        replora.method.settings_mut::<RepLora>().unwrap().hidden = 100_000_000_000;
        let mut prefix = AdapterConfig::new(Method::Prefix);
        prefix.method.settings_mut::<PrefixTuning>().unwrap().length = 100_000_000_000;
        for (config, flag) in [(houlsby, "--bottleneck"), (replora, "--hidden"), (prefix, "--prefix-length")] {
            let e = check_memory(&config, &[target(384)]).unwrap_err().to_string();
            assert!(e.contains("needs about") && e.contains(&format!("at most {flag} ")), "{flag}: {e}");
        }
        assert!(check_memory(&AdapterConfig::new(Method::Houlsby), &[target(384)]).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_and_ppt_format() {
        let r = ParamReport { trainable: 294_912, total: 124_734_720 };
        assert_eq!(r.to_string(), "trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364");
        assert!((ppt(0.9, 0) - 0.9).abs() < 1e-12);
        assert!((ppt(0.9, 90_000_000) - 0.9 * (-1.0f64).exp()).abs() < 1e-12);
    }
}
