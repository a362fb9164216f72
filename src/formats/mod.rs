//! Adapter files: replora's native format and Hugging Face PEFT's LoRA/DoRA layout; and
//! TensorBoard's event files, which training writes beside `metrics.jsonl`. (Model weights are
//! read and written by [`crate::weights`].)

pub mod native;
pub mod peft;
pub mod tfevents;

use std::path::Path;

use crate::adapters::{AdaptedLinear, AdapterConfig, closed_form, select_linears};
use crate::error::{Error, Result};

/// Refuses an adapter config whose declared sizes (ranks, RepLoRA's hidden width) need far
/// more trainable values than its weights file holds (`available`), before the adapter is
/// built: a corrupt `"r": 1099511627776` must not allocate terabytes. (Within the slack, a
/// misfit is left to the shape checks, whose errors name the tensor.)
pub(crate) fn check_declared_sizes(config: &AdapterConfig, linears: &[&AdaptedLinear], file: &Path, available: usize) -> Result<()> {
    let method_sizes: Vec<(&str, usize)> = config.method.size_settings().iter().map(|s| (s.key, s.value)).collect();
    let sizes = [("r", config.r)].into_iter().chain(method_sizes);
    let patterns = config.rank_pattern.values().map(|&r| ("a rank_pattern rank", r));
    if let Some((what, v)) = sizes.chain(patterns).find(|&(_, v)| v > available) {
        return Err(Error::format(
            file,
            format!("the adapter config's {what} = {v} needs more values than the {available} this file holds"),
        ));
    }
    let needed = closed_form(config, &select_linears(config, linears)?);
    if needed > available.saturating_mul(16).saturating_add(1 << 16) {
        return Err(Error::format(
            file,
            format!(
                "the adapter config needs {needed} trainable values on this model, far more than the {available} this file holds (a corrupt config, or the adapter of another model)"
            ),
        ));
    }
    Ok(())
}
