//! A base model with adapters injected: freeze, forward deltas, merge, unmerge, disable.

use std::collections::HashMap;

use burn::prelude::*;

use super::config::AdapterConfig;
use super::count::ParamReport;
use super::linear::{AdaptedLinear, Deltas, LinearDelta};
use super::set::AdapterSet;
use crate::error::{Error, Result};

/// A model whose linear layers are [`AdaptedLinear`]s. Model files implement this by listing
/// their linears; everything adapter-specific lives here, not in the model.
pub trait Adaptable: Module {
    /// Every linear layer, in a fixed model order.
    fn linears(&self) -> Vec<&AdaptedLinear>;
    /// Rebuilds the model with each linear passed through `f`.
    fn map_linears(self, f: &mut dyn FnMut(AdaptedLinear) -> AdaptedLinear) -> Self;
    /// The model with every quantized base weight widened to trainable f32 (for full
    /// fine-tuning); a model with other quantized tables (an embedding) widens those too.
    fn widened(self) -> Self
    where
        Self: Sized,
    {
        self.map_linears(&mut |mut l| {
            l.weight = l.weight.widened();
            l
        })
    }
    /// The model with its frozen base weights held as `quantize` says (`--quantize`): as the
    /// file stores them, widened to f32, or converted to blocks or 16-bit floats.
    fn quantized(self, quantize: super::base_weight::Quantize) -> Result<Self>
    where
        Self: Sized,
    {
        match quantize.target() {
            None => Ok(self),
            Some(format) => self.base_converted(format),
        }
    }
    /// Every base weight converted to `format` (f32 for `None`): the linears
    /// ([`convert_linears`]), and the other tables a model can hold so (a decoder's embedding
    /// and head); a model whose new layers train inside it leaves those f32.
    fn base_converted(self, format: Option<crate::quantization::BlockFormat>) -> Result<Self>
    where
        Self: Sized,
    {
        convert_linears(self, format)
    }
}

/// What a merge of `model` into f32 files says of its base: empty when its linears are f32,
/// else which formats were widened (as PEFT merges into a quantized base: dequantized, then
/// merged).
pub fn widening_note(model: &impl Adaptable) -> String {
    let mut names: Vec<&'static str> = model.linears().iter().filter_map(|l| l.weight.format()).map(|f| f.name()).collect();
    names.sort_unstable();
    names.dedup();
    match names.is_empty() {
        true => String::new(),
        false => format!("; the base's {} weights are written as f32", names.join(", ")),
    }
}

/// `model` with every linear's base weight converted to `format` (f32 for `None`); the first
/// weight that cannot be (f16 beyond its range, rows not whole blocks) is the error.
pub fn convert_linears<M: Adaptable>(model: M, format: Option<crate::quantization::BlockFormat>) -> Result<M> {
    let mut failed = None;
    let model = model.map_linears(&mut |mut l| {
        let what = format!("weight {}", l.path);
        match l.weight.clone().converted(format, &what) {
            Ok(w) => l.weight = w,
            Err(e) => failed = failed.take().or(Some(e)),
        }
        l
    });
    failed.map_or(Ok(model), Err)
}

/// What was folded into the base weights by [`PeftModel::merge`], kept to undo it: the delta
/// of each merged linear and, for DoRA, the factor `m / ||W0 + s B A||` it applied.
#[derive(Clone, Debug)]
struct Merged {
    deltas: HashMap<String, (LinearDelta, Option<Tensor<1>>)>,
}

/// A frozen base model plus its adapters.
#[derive(Module, Debug)]
pub struct PeftModel<M: Module> {
    pub model: M,
    pub adapters: AdapterSet,
    #[module(skip)]
    enabled: bool,
    #[module(skip)]
    merged: Option<Merged>,
    /// Full fine-tuning: no adapter, every base weight trains.
    #[module(skip)]
    full: bool,
}

impl<M: Adaptable> PeftModel<M> {
    /// Freezes every base weight of `model` and injects the adapters `config` describes.
    pub fn new(model: M, config: &AdapterConfig) -> Result<Self> {
        let adapters = AdapterSet::new(config, &model.linears())?;
        Ok(Self::from_parts(model, adapters))
    }

    /// Wraps a model and an already built adapter set (e.g. one loaded from a file).
    pub fn from_parts(model: M, adapters: AdapterSet) -> Self {
        Self { model: model.no_grad(), adapters, enabled: true, merged: None, full: false }
    }

    /// No adapter at all: the base model itself trains (the FFT baseline).
    pub fn full_finetune(model: M) -> Self {
        let adapters = AdapterSet::empty();
        Self { model, adapters, enabled: true, merged: None, full: true }
    }

    pub fn is_full_finetune(&self) -> bool {
        self.full
    }

    /// The adapter deltas for an evaluation pass: empty while disabled or merged.
    pub fn deltas(&self) -> Deltas {
        self.deltas_for(false)
    }

    /// The adapter deltas for a training pass (LoRA dropout on).
    pub fn training_deltas(&self) -> Deltas {
        self.deltas_for(true)
    }

    fn deltas_for(&self, training: bool) -> Deltas {
        if self.enabled && self.merged.is_none() { self.adapters.deltas(training) } else { Deltas::none() }
    }

    /// Temporarily switches the adapter off (or back on) without touching any weight.
    pub fn set_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    pub fn is_merged(&self) -> bool {
        self.merged.is_some()
    }

    /// Folds the adapter into the base weights (f32; rejects NaN/Inf like PEFT's `safe_merge`,
    /// leaving the model unchanged).
    pub fn merge(self) -> Result<Self> {
        if self.merged.is_some() {
            return Err(Error::State("the adapter is already merged".into()));
        }
        self.adapters.config.method.method().check_mergeable("merged into the base weights")?;
        let mut deltas = HashMap::new();
        let mut weights = HashMap::new();
        let all = self.adapters.deltas(false);
        for linear in self.model.linears() {
            let Some(d) = all.get(&linear.path) else { continue };
            let d = detached(d);
            let w0 = linear.weight.dense().detach();
            let factor = d.magnitude.as_ref().map(|m| d.dora_factor(w0.clone(), m));
            let w = d.merged_weight(w0);
            check_finite(&w, &linear.path)?;
            weights.insert(linear.path.clone(), w);
            deltas.insert(linear.path.clone(), (d, factor));
        }
        let model = replace_weights(self.model, weights);
        Ok(Self { model, merged: Some(Merged { deltas }), ..self })
    }

    /// Undoes [`merge`](Self::merge): `W0 = W - s B A` (DoRA: `W / (m / ||W0 + s B A||) - s B A`).
    pub fn unmerge(self) -> Result<Self> {
        let Some(merged) = self.merged else {
            return Err(Error::State("the adapter is not merged".into()));
        };
        let mut weights = HashMap::new();
        for linear in self.model.linears() {
            let Some((d, factor)) = merged.deltas.get(&linear.path) else { continue };
            let mut w = linear.weight.dense().detach();
            if let Some(f) = factor {
                w = w / f.clone().unsqueeze_dim::<2>(0);
            }
            let w = w - d.dense();
            check_finite(&w, &linear.path)?;
            weights.insert(linear.path.clone(), w);
        }
        let model = replace_weights(self.model, weights);
        Ok(Self { model, merged: None, ..self })
    }

    /// How far the adapters have moved the model: the mean over adapted linears of
    /// `||s A B||_F / ||W0||_F` (DoRA's magnitude rescaling not included). 0 at init; a
    /// value that leaps within the first steps means the update outruns the learning rate.
    pub fn relative_update_norm(&self) -> Option<f64> {
        let all = self.adapters.deltas(false);
        let ratios: Vec<f64> = self
            .model
            .linears()
            .into_iter()
            .filter_map(|linear| {
                let d = all.get(&linear.path)?;
                let (a, b) = (d.a.clone().detach(), d.b.clone().detach());
                // ||A B||_F^2 = sum((A^T A) * (B B^T)): r x r products instead of d_in x d_out.
                let delta_sq = (a.clone().transpose().matmul(a) * b.clone().matmul(b.transpose())).sum();
                let w0_sq = linear.weight.dense().detach().square().sum();
                let host = |t: Tensor<1>| t.into_data().try_into_vec_as::<f64>().expect("float tensor")[0];
                Some(d.scale * host(delta_sq).max(0.0).sqrt() / host(w0_sq).sqrt().max(f64::MIN_POSITIVE))
            })
            .collect();
        (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64)
    }

    /// `trainable params: N || all params: M || trainable%: P`.
    pub fn param_report(&self) -> ParamReport {
        let base = self.model.num_params();
        let adapter = self.adapters.trainable_params();
        ParamReport { trainable: if self.full { base } else { adapter }, total: base + adapter }
    }
}

fn detached(d: &LinearDelta) -> LinearDelta {
    LinearDelta { a: d.a.clone().detach(), b: d.b.clone().detach(), magnitude: d.magnitude.clone().map(|m| m.detach()), ..d.clone() }
}

fn check_finite(w: &Tensor<2>, path: &str) -> Result<()> {
    let values = w.to_data().try_into_vec_as::<f32>().expect("float tensors convert to f32");
    if values.iter().all(|v| v.is_finite()) { Ok(()) } else { Err(Error::NonFinite { path: path.into() }) }
}

fn replace_weights<M: Adaptable>(model: M, mut weights: HashMap<String, Tensor<2>>) -> M {
    model.map_linears(&mut |mut linear| {
        if let Some(w) = weights.remove(&linear.path) {
            linear.weight = linear.weight.replaced(w);
        }
        linear
    })
}
