//! Closed-form trainable-parameter counts and the PPT metric (spec section 4).

use super::bottleneck::Bottleneck;
use super::config::{AdapterConfig, Method, SeedKind};
use super::replora::{Generator, generator_shapes, seed_widths};
use super::target::Target;

/// Trainable parameters of `config` applied to `targets`, from the formulas of each method.
///
/// LoRA: `sum r (d_in + d_out)`; DoRA adds `d_out` per target; RepLoRA: per block the seeds
/// (`2 r` diagonal, `r (d_a + d_b)` full) plus the generators `g_A`, `g_B`
/// (`d_seed h + h + h d_gen + d_gen` each, `d_seed h + h d_gen` without biases, plus 1 for a
/// learned output scale), once per block or once in all when shared;
/// bottleneck adapters: `2 d m + m + d` per site of width `d`; prefixes: `p * total` directly,
/// `p h + (h h + h + h total + total)` through the MLP, `total` = 2 d_kv summed over layers.
pub fn closed_form(config: &AdapterConfig, targets: &[Target]) -> usize {
    match config.method {
        Method::Lora => targets.iter().map(|t| t.rank * (t.d_in + t.d_out)).sum(),
        Method::Dora => targets.iter().map(|t| t.rank * (t.d_in + t.d_out) + t.d_out).sum(),
        Method::Houlsby => targets.iter().map(|t| Bottleneck::param_count(t.d_out, config.bottleneck.width(t.d_out))).sum(),
        Method::Prefix => super::prefix::Prefix::param_count(&config.prefix, targets),
        Method::Replora => {
            let mut layers: Vec<Option<usize>> = vec![];
            for t in targets {
                if !layers.contains(&t.layer) {
                    layers.push(t.layer);
                }
            }
            let opts = &config.replora;
            let mut total = 0;
            for (n, layer) in layers.iter().enumerate() {
                let block: Vec<&Target> = targets.iter().filter(|t| t.layer == *layer).collect();
                let rank = block[0].rank;
                let d_ins: Vec<usize> = block.iter().map(|t| t.d_in).collect();
                let d_outs: Vec<usize> = block.iter().map(|t| t.d_out).collect();
                let (da, db) = seed_widths(opts.seed_kind, rank, &d_ins, &d_outs);
                total += match opts.seed_kind {
                    SeedKind::Diagonal => 2 * rank,
                    SeedKind::Full => rank * (da + db),
                };
                if n == 0 || !opts.shared_generators {
                    total += generator_shapes(opts, rank, &d_ins, &d_outs).iter().map(Generator::param_count).sum::<usize>();
                }
            }
            total
        }
    }
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
        type Set = fn(&mut AdapterConfig, usize);
        let bottleneck: Set = |c, v| c.bottleneck.size = Some(v);
        let hidden: Set = |c, v| c.replora.hidden = v;
        let prefix_length: Set = |c, v| c.prefix.length = v;
        let prefix_hidden: Set = |c, v| c.prefix.hidden = v;
        let candidates: Vec<(&str, usize, Set)> = match config.method {
            Method::Houlsby => config.bottleneck.size.map(|m| ("--bottleneck", m, bottleneck)).into_iter().collect(),
            Method::Replora => vec![("--hidden", config.replora.hidden, hidden)],
            Method::Prefix => {
                vec![("--prefix-length", config.prefix.length, prefix_length), ("--prefix-hidden", config.prefix.hidden, prefix_hidden)]
            }
            Method::Lora | Method::Dora => vec![],
        };
        for (flag, current, set) in candidates {
            let need_at = |v: usize| {
                let mut c = config.clone();
                set(&mut c, v);
                need(&c)
            };
            if let Some(v) = crate::memory::largest_fitting(current, need_at) {
                return format!("at most {flag} {v} fits");
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

    fn target(d: usize) -> Target {
        Target { path: "l.0.q".into(), layer: Some(0), d_in: d, d_out: d, rank: 8, alpha: 16.0, scale: 2.0 }
    }

    /// Issue 26 (crash 2): `--bottleneck/--hidden/--prefix-length 100000000` aborted on allocation.
    #[test]
    fn adapters_larger_than_memory_are_refused_with_what_fits() {
        let mut houlsby = AdapterConfig::new(Method::Houlsby);
        houlsby.bottleneck.size = Some(100_000_000_000);
        let mut replora = AdapterConfig::new(Method::Replora);
        replora.replora.hidden = 100_000_000_000;
        let mut prefix = AdapterConfig::new(Method::Prefix);
        prefix.prefix.length = 100_000_000_000;
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
