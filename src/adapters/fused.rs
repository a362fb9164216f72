//! Linears a checkpoint stores fused and a model holds split, so that every method adapts each
//! part on its own (ModernBERT's `Wqkv` as `Wqkv.query`, `Wqkv.key`, `Wqkv.value`: RepLoRA needs
//! the query and the value as separate targets). Here: PEFT's name of the fused module as a
//! target meaning its parts, and PEFT's fused LoRA tensors split over the parts and joined back.
//!
//! Joining is exact: LoRA on parts `i` (`A_i` `[r_i, d_in]`, `B_i` `[rows_i, r_i]`, scale `s_i`)
//! is a LoRA of rank `sum r_i` on the fused linear with `A = [A_1; A_2; ..]` and `B` block
//! diagonal over the parts' rows (zero rows for an untargeted part), each block `B_i s_i / s`.
//! Parts that share `A` and scale (a PEFT adapter split on reading) join back to rank `r`.
//! DoRA's magnitude is per output row, so it splits and joins by rows; an untargeted part has
//! none, so DoRA joins only when every part is targeted.

use std::collections::BTreeMap;

use super::config::{AdapterConfig, TargetModules};
use crate::error::{Error, Result};
use crate::weights::HostTensor;

/// A fused linear: its module path and its parts' leaf names and output rows, in row order;
/// part `leaf` is the model's linear `{path}.{leaf}`.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedLinear {
    pub path: String,
    pub parts: Vec<(String, usize)>,
}

impl FusedLinear {
    fn part_path(&self, leaf: &str) -> String {
        format!("{}.{leaf}", self.path)
    }

    /// `(part path, first row, rows)` of each part.
    fn rows(&self) -> impl Iterator<Item = (String, usize, usize)> + '_ {
        self.parts.iter().scan(0, |offset, (leaf, rows)| {
            *offset += rows;
            Some((self.part_path(leaf), *offset - rows, *rows))
        })
    }

    fn total_rows(&self) -> usize {
        self.parts.iter().map(|(_, r)| r).sum()
    }

    /// Does PEFT's target name (a module-path suffix) select this fused module?
    fn named_by(&self, name: &str) -> bool {
        self.path == name || self.path.ends_with(&format!(".{name}"))
    }
}

/// `config` with each target name and rank/alpha pattern key that names a fused module
/// rewritten to name its parts (`Wqkv` -> `Wqkv.query`, `Wqkv.key`, `Wqkv.value`).
pub fn expand_targets(config: &AdapterConfig, fused: &[FusedLinear]) -> AdapterConfig {
    let Some(first) = fused.first() else { return config.clone() };
    let leaves: Vec<&str> = first.parts.iter().map(|(leaf, _)| leaf.as_str()).collect();
    let fuses = |name: &str| fused.iter().any(|f| f.named_by(name));
    let mut out = config.clone();
    if let TargetModules::Names(names) = &config.target_modules {
        let mut expanded = vec![];
        for name in names {
            let parts = if fuses(name) { leaves.iter().map(|leaf| format!("{name}.{leaf}")).collect() } else { vec![name.clone()] };
            for part in parts {
                if !expanded.contains(&part) {
                    expanded.push(part);
                }
            }
        }
        out.target_modules = TargetModules::Names(expanded);
    }
    let key = |k: &String| if fuses(k) { format!(r"{k}\.(?:{})", leaves.join("|")) } else { k.clone() };
    out.rank_pattern = config.rank_pattern.iter().map(|(k, v)| (key(k), *v)).collect();
    out.alpha_pattern = config.alpha_pattern.iter().map(|(k, v)| (key(k), *v)).collect();
    out
}

const SUFFIXES: [&str; 3] = [".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector"];

/// Splits PEFT's tensors of fused modules (`..{path}.lora_A.weight`, `.lora_B.weight`,
/// `.lora_magnitude_vector`) into their parts': `A` shared, `B` and the magnitude by rows.
/// `file` names errors.
pub fn split_peft_tensors(tensors: &mut BTreeMap<String, HostTensor>, fused: &[FusedLinear], file: &std::path::Path) -> Result<()> {
    let keys: Vec<String> = tensors.keys().cloned().collect();
    for key in keys {
        for f in fused {
            let Some((head, suffix)) = SUFFIXES.iter().find_map(|s| {
                let tail = format!("{}{s}", f.path);
                let head = key.strip_suffix(&tail)?;
                (head.is_empty() || head.ends_with('.')).then(|| (head.to_string(), *s))
            }) else {
                continue;
            };
            let t = tensors.remove(&key).expect("the key was listed");
            let total = f.total_rows();
            let rows_of = |t: &HostTensor| if suffix == SUFFIXES[0] { None } else { Some(t.shape[0]) };
            if rows_of(&t).is_some_and(|rows| rows != total) {
                let msg = format!("tensor {key} has {} rows; the fused module {} has {total} ({:?})", t.shape[0], f.path, f.parts);
                return Err(Error::format(file, msg));
            }
            for (part, first, rows) in f.rows() {
                let piece = match rows_of(&t) {
                    None => t.clone(),
                    Some(_) => {
                        let width = t.data.len() / total;
                        let shape = [vec![rows], t.shape[1..].to_vec()].concat();
                        HostTensor { shape, data: t.data[first * width..(first + rows) * width].to_vec() }
                    }
                };
                tensors.insert(format!("{head}{part}{suffix}"), piece);
            }
        }
    }
    Ok(())
}

/// One part's exported LoRA: `A` `[r, d_in]`, `B` `[rows, r]` (PyTorch layout), its scale, its
/// DoRA magnitude.
pub struct PartLora {
    pub a: HostTensor,
    pub b: HostTensor,
    pub scale: f64,
    pub magnitude: Option<HostTensor>,
}

/// The fused module's LoRA joined from its targeted parts' (see the module doc), with the rank
/// and alpha PEFT must use for it: `(A, B, magnitude, rank, alpha)`. `parts` is keyed by part path.
pub fn join(
    f: &FusedLinear,
    parts: &BTreeMap<String, PartLora>,
    config: &AdapterConfig,
) -> Result<(HostTensor, HostTensor, Option<HostTensor>, usize, f64)> {
    let targeted: Vec<&PartLora> = f.rows().filter_map(|(p, _, _)| parts.get(&p)).collect();
    let dora = targeted.iter().any(|p| p.magnitude.is_some());
    if dora && targeted.len() != f.parts.len() {
        return Err(Error::State(format!(
            "DoRA on part of the fused module {}: PEFT adapts it as one linear, whose untargeted rows would need a magnitude of their own; target all of it ({})",
            f.path,
            f.parts.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let first = targeted[0];
    let shared = targeted.iter().all(|p| p.a == first.a && p.scale == first.scale);
    let rank = if shared { first.a.shape[0] } else { targeted.iter().map(|p| p.a.shape[0]).sum() };
    let alpha = config.lora_alpha;
    let fused_scale = config.scale(rank, alpha);
    let d_in = first.a.shape[1];
    let a = match shared {
        true => first.a.clone(),
        false => HostTensor { shape: vec![rank, d_in], data: targeted.iter().flat_map(|p| p.a.data.iter().copied()).collect() },
    };
    let mut b = vec![0f32; f.total_rows() * rank];
    let mut column = 0;
    for (path, first_row, rows) in f.rows() {
        let Some(p) = parts.get(&path) else { continue };
        let r = p.a.shape[0];
        let factor = (p.scale / fused_scale) as f32;
        for row in 0..rows {
            for c in 0..r {
                b[(first_row + row) * rank + column + c] = p.b.data[row * r + c] * factor;
            }
        }
        if !shared {
            column += r;
        }
    }
    let b = HostTensor { shape: vec![f.total_rows(), rank], data: b };
    let magnitude = dora.then(|| HostTensor {
        shape: vec![f.total_rows()],
        data: targeted.iter().flat_map(|p| p.magnitude.as_ref().expect("every part has one").data.iter().copied()).collect(),
    });
    Ok((a, b, magnitude, rank, alpha))
}
