//! Picking the linears to adapt, with PEFT's `target_modules` semantics.

use regex::Regex;

use super::config::{AdapterConfig, TargetModules};
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
    config.validate()?;
    let available = || linears.iter().map(|(p, _, _)| p.clone()).collect::<Vec<_>>();
    let selected: Vec<&(String, usize, usize)> = match &config.target_modules {
        TargetModules::Names(names) => {
            // Every listed name must select something: a typo should not silently adapt less.
            for name in names {
                if !linears.iter().any(|(p, _, _)| name_matches(std::slice::from_ref(name), p)) {
                    return Err(Error::NoTargetMatch { pattern: name.clone(), available: available() });
                }
            }
            linears.iter().filter(|(p, _, _)| name_matches(names, p)).collect()
        }
        TargetModules::Regex(re) => {
            let re = Regex::new(&format!("^(?:{re})$")).map_err(|e| Error::Config(format!("target_modules regex {re:?}: {e}")))?;
            linears.iter().filter(|(p, _, _)| re.is_match(p)).collect()
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
            let rank = lookup(&config.rank_pattern, path).unwrap_or(config.r);
            let alpha = lookup(&config.alpha_pattern, path).unwrap_or(config.lora_alpha);
            if rank > (*d_in).min(*d_out) {
                return Err(Error::Config(format!("rank {rank} for {path} exceeds min(d_in, d_out) = min({d_in}, {d_out})")));
            }
            Ok(Target {
                path: path.clone(),
                d_in: *d_in,
                d_out: *d_out,
                rank,
                alpha,
                scale: config.scale(rank, alpha),
                layer: layer_index(path),
            })
        })
        .collect()
}

fn lookup<T: Copy>(patterns: &std::collections::BTreeMap<String, T>, path: &str) -> Option<T> {
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
