//! Picking the linears to adapt, with PEFT's `target_modules` semantics.

use std::collections::BTreeMap;

use regex::Regex;

use super::config::{AdapterConfig, TargetModules};
use super::linear::{AdaptedLinear, FusedRows, fused_blocks};
use crate::error::{Error, Result};

/// One linear chosen for adaptation, with its resolved rank and scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub path: String,
    pub d_in: usize,
    pub d_out: usize,
    pub rank: usize,
    pub alpha: f64,
    pub scale: f64,
    /// Transformer layer index (first `.N.` component of the path), the RepLoRA block key.
    pub layer: Option<usize>,
    /// The rows of a fused checkpoint linear this target is (Phi-3's `qkv_proj`), for files in
    /// PEFT's layout, which know only the fused linear.
    pub fused: Option<FusedRows>,
}

/// The layer index of a module path: its first purely numeric component.
pub fn layer_index(path: &str) -> Option<usize> {
    path.split('.').find_map(|part| part.parse().ok())
}

/// Does a `rank_pattern`/`alpha_pattern` key select this path? (PEFT: `(.*\.)?key$`.)
fn pattern_matches(key: &str, path: &str) -> bool {
    Regex::new(&format!(r"^(.*\.)?(?:{key})$")).is_ok_and(|re| re.is_match(path))
}

fn name_matches(names: &[String], path: &str) -> bool {
    names.iter().any(|n| path == n || path.ends_with(&format!(".{n}")))
}

/// Resolves `config` against the model's linears (`path, d_in, d_out`), in model order.
pub fn select_targets(config: &AdapterConfig, linears: &[(String, usize, usize)]) -> Result<Vec<Target>> {
    select_targets_fused(config, linears, &BTreeMap::new())
}

/// [`select_targets`] on the linears of a model ([`fused_blocks`] included).
pub fn select_linears(config: &AdapterConfig, linears: &[&AdaptedLinear]) -> Result<Vec<Target>> {
    let shapes: Vec<_> = linears.iter().map(|l| (l.path.clone(), l.d_in(), l.d_out())).collect();
    select_targets_fused(config, &shapes, &fused_blocks(linears))
}

/// [`select_targets`] where some linears are blocks of a fused checkpoint linear (`fused`, by
/// path): a target name, regex, `rank_pattern` or `alpha_pattern` key that selects the fused
/// linear's module path (PEFT's `qkv_proj` on Phi-3) selects every block of it, as if each
/// were that linear. Ranks are bounded by the fused linear's rows.
pub fn select_targets_fused(
    config: &AdapterConfig,
    linears: &[(String, usize, usize)],
    fused: &BTreeMap<String, FusedRows>,
) -> Result<Vec<Target>> {
    config.validate()?;
    let available = || {
        let mut names: Vec<String> = linears.iter().map(|(p, _, _)| p.clone()).collect();
        let modules: std::collections::BTreeSet<&String> = fused.values().map(|f| &f.module).collect();
        names.extend(modules.into_iter().map(|m| format!("{m} (fused: its blocks above)")));
        names
    };
    // A path and, for a block of a fused linear, the fused linear's path: what names match.
    let names_of = |path: &str| std::iter::once(path.to_string()).chain(fused.get(path).map(|f| f.module.clone())).collect::<Vec<_>>();
    let selected: Vec<&(String, usize, usize)> = match &config.target_modules {
        TargetModules::Names(names) => {
            let hit = |names: &[String], p: &str| names_of(p).iter().any(|n| name_matches(names, n));
            // Every listed name must select something: a typo should not silently adapt less.
            for name in names {
                if !linears.iter().any(|(p, _, _)| hit(std::slice::from_ref(name), p)) {
                    return Err(Error::NoTargetMatch { pattern: name.clone(), available: available() });
                }
            }
            linears.iter().filter(|(p, _, _)| hit(names, p)).collect()
        }
        TargetModules::Regex(re) => {
            let re = Regex::new(&format!("^(?:{re})$")).map_err(|e| Error::Config(format!("target_modules regex {re:?}: {e}")))?;
            linears.iter().filter(|(p, _, _)| names_of(p).iter().any(|n| re.is_match(n))).collect()
        }
    };
    let selected: Vec<_> = match &config.layers_to_transform {
        Some(layers) => selected.into_iter().filter(|(p, _, _)| layer_index(p).is_some_and(|l| layers.contains(&l))).collect(),
        None => selected,
    };
    if selected.is_empty() {
        let pattern = match (&config.target_modules, &config.layers_to_transform) {
            (TargetModules::Regex(re), None) => re.clone(),
            (t, layers) => format!("{t:?} with layers_to_transform {layers:?}"),
        };
        return Err(Error::NoTargetMatch { pattern, available: available() });
    }
    selected
        .into_iter()
        .map(|(path, d_in, d_out)| {
            let block = fused.get(path);
            let names = names_of(path);
            let rank = lookup_any(&config.rank_pattern, &names).unwrap_or(config.r);
            let alpha = lookup_any(&config.alpha_pattern, &names).unwrap_or(config.lora_alpha);
            let rows = block.map_or(*d_out, |f| f.total);
            if rank > (*d_in).min(rows) {
                let what = block.map_or_else(|| path.clone(), |f| format!("{path} (rows of {})", f.module));
                return Err(Error::Config(format!("rank {rank} for {what} exceeds min(d_in, d_out) = min({d_in}, {rows})")));
            }
            Ok(Target {
                path: path.clone(),
                d_in: *d_in,
                d_out: *d_out,
                rank,
                alpha,
                scale: config.scale(rank, alpha),
                layer: layer_index(path),
                fused: block.cloned(),
            })
        })
        .collect()
}

/// The first of `names` (a path, then its fused linear's) that a pattern key selects.
fn lookup_any<T: Copy>(patterns: &BTreeMap<String, T>, names: &[String]) -> Option<T> {
    names.iter().find_map(|n| lookup(patterns, n))
}

fn lookup<T: Copy>(patterns: &BTreeMap<String, T>, path: &str) -> Option<T> {
    patterns.iter().find(|(k, _)| pattern_matches(k, path)).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linears() -> Vec<(String, usize, usize)> {
        (0..2).flat_map(|l| ["query", "key", "value"].map(move |n| (format!("encoder.layer.{l}.attention.self.{n}"), 8, 8))).collect()
    }

    #[test]
    fn names_match_as_suffixes_and_patterns_override_rank() {
        let mut config = AdapterConfig::default();
        config.rank_pattern.insert("value".into(), 2);
        config.layers_to_transform = Some(vec![1]);
        let t = select_targets(&config, &linears()).unwrap();
        let got: Vec<_> = t.iter().map(|t| (t.path.as_str(), t.rank, t.layer)).collect();
        assert_eq!(got, [("encoder.layer.1.attention.self.query", 8, Some(1)), ("encoder.layer.1.attention.self.value", 2, Some(1))]);
        assert_eq!(t[1].scale, 8.0);
    }

    #[test]
    fn regex_is_a_full_match_and_unmatched_names_list_the_modules() {
        let config = AdapterConfig { target_modules: TargetModules::Regex(r".*\.(key|value)".into()), ..Default::default() };
        assert_eq!(select_targets(&config, &linears()).unwrap().len(), 4);
        let config = AdapterConfig { target_modules: TargetModules::Names(vec!["q_proj".into()]), ..Default::default() };
        let err = select_targets(&config, &linears()).unwrap_err().to_string();
        assert!(err.contains("q_proj") && err.contains("encoder.layer.0.attention.self.key"), "{err}");
    }

    #[test]
    fn rank_above_the_smaller_dimension_is_rejected() {
        let config = AdapterConfig { r: 9, ..Default::default() };
        let err = select_targets(&config, &linears()).unwrap_err().to_string();
        assert!(err.contains("exceeds min(d_in, d_out)"), "{err}");
    }
}
