//! What the trainer logs about the adapters with each metrics line (issue 27): the gradient
//! norms of their parameter groups and, for RepLoRA, how many generator units are saturated.

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde_json::{Map, Value};

use super::peft_model::{Adaptable, PeftModel};
use super::set::AdapterSet;

impl AdapterSet {
    /// Diagnostic fields for one logged step, from that step's gradients (before clipping):
    /// each method's own ([`super::methods::AdapterMethod::diagnostics`]: LoRA's and DoRA's
    /// `factor_grad_norm`; RepLoRA's `generator_grad_norm`, `seed_grad_norm`, `tanh_saturated`).
    pub fn diagnostics(&self, grads: &GradientsParams) -> Map<String, Value> {
        let mut out = Map::new();
        if let Some(state) = &self.state {
            state.diagnostics(&self.config.method, grads, &mut out);
        }
        out
    }
}

/// The L2 norm of the gradients of `matrices` (2-D) and `vectors` (1-D) together; `None` when
/// none of them has a gradient.
pub(crate) fn grad_norm(grads: &GradientsParams, matrices: &[ParamId], vectors: &[ParamId]) -> Option<f64> {
    let squares = matrices
        .iter()
        .filter_map(|&id| grads.get::<2>(id).map(|g| g.square().sum()))
        .chain(vectors.iter().filter_map(|&id| grads.get::<1>(id).map(|g| g.square().sum())));
    let mut total = None;
    for s in squares {
        *total.get_or_insert(0.0) += crate::weights::tensors::scalar(s);
    }
    total.map(f64::sqrt)
}

impl<M: Adaptable> PeftModel<M> {
    /// [`AdapterSet::diagnostics`] plus the shape of the low-rank updates `s A B` (LoRA, DoRA,
    /// RepLoRA), each the largest over the adapted linears: `update_top_share`, the share of
    /// `||s A B||_F^2` in its top singular value (1: a rank-1 update), and `update_spectral_ratio`,
    /// its top singular value over that of the frozen `W0`. RepLoRA runs add the norms of what
    /// the generators output, `generated_a_norm` and `generated_b_norm` (`||A||_F`, `||B||_F`);
    /// DoRA runs add `magnitude_drift`, `||m - m0|| / ||m0||` of the magnitudes from their
    /// initial value `m0 = ||W0||` (per output column).
    pub fn diagnostics(&self, grads: &GradientsParams) -> Map<String, Value> {
        let mut out = self.adapters.diagnostics(grads);
        let all = self.adapters.deltas(false);
        let generated = self.adapters.config.method.method() == super::Method::Replora;
        let (mut share, mut ratio) = (None::<f64>, None::<f64>);
        let (mut a_norm, mut b_norm, mut drift) = (None::<f64>, None::<f64>, None::<f64>);
        let largest = |slot: &mut Option<f64>, v: f64| *slot = Some(slot.unwrap_or(0.0).max(v));
        let frobenius = |t: Tensor<2>| crate::weights::tensors::scalar(t.square().sum()).sqrt();
        for linear in self.model.linears() {
            let Some(d) = all.get(&linear.path) else { continue };
            let (a, b) = (d.a.clone().detach(), d.b.clone().detach());
            if generated {
                largest(&mut a_norm, frobenius(a.clone()));
                largest(&mut b_norm, frobenius(b.clone()));
            }
            if let Some(m) = &d.magnitude {
                let m0 = linear.weight.dense().detach().square().sum_dim(0).sqrt().squeeze_dim::<1>(0);
                let change = crate::weights::tensors::scalar((m.clone().detach() - m0.clone()).square().sum()).sqrt();
                let initial = crate::weights::tensors::scalar(m0.square().sum()).sqrt();
                largest(&mut drift, change / initial.max(f64::MIN_POSITIVE));
            }
            // The squared singular values of A B are the eigenvalues of (A^T A)(B B^T), r x r.
            let gram = |t: Tensor<2>| -> Vec<f64> { t.into_data().try_into_vec_as::<f64>().expect("float tensor") };
            let r = a.dims()[1];
            let (ata, bbt) = (gram(a.clone().transpose().matmul(a)), gram(b.clone().matmul(b.transpose())));
            let m: Vec<f64> = (0..r * r).map(|ij| (0..r).map(|k| ata[ij / r * r + k] * bbt[k * r + ij % r]).sum()).collect();
            let trace: f64 = (0..r).map(|i| m[i * r + i]).sum();
            if trace <= 0.0 {
                continue;
            }
            let top = top_eigenvalue(&m, r);
            let w0_top = top_eigenvalue_of_gram(linear.weight.dense().detach());
            share = Some(share.unwrap_or(0.0).max(top / trace));
            ratio = Some(ratio.unwrap_or(0.0).max(d.scale * top.max(0.0).sqrt() / w0_top.max(f64::MIN_POSITIVE).sqrt()));
        }
        let fields = [
            ("update_top_share", share),
            ("update_spectral_ratio", ratio),
            ("generated_a_norm", a_norm),
            ("generated_b_norm", b_norm),
            ("magnitude_drift", drift),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                out.insert(key.into(), v.into());
            }
        }
        out
    }
}

/// The largest eigenvalue of the `n x n` matrix `m` (row-major) with real non-negative
/// eigenvalues, by power iteration.
fn top_eigenvalue(m: &[f64], n: usize) -> f64 {
    let mut v = vec![1.0; n];
    let mut lambda = 0.0;
    for _ in 0..100 {
        let w: Vec<f64> = (0..n).map(|i| (0..n).map(|j| m[i * n + j] * v[j]).sum()).collect();
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        lambda = norm / v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v = w.into_iter().map(|x| x / norm).collect();
    }
    lambda
}

/// The largest eigenvalue of `W^T W` (the squared top singular value of `W`), by power
/// iteration on the device.
fn top_eigenvalue_of_gram(w: Tensor<2>) -> f64 {
    let n = w.dims()[1];
    let mut v: Tensor<2> = Tensor::ones([n, 1], &w.device());
    for _ in 0..30 {
        let next = w.clone().transpose().matmul(w.clone().matmul(v.clone()));
        let norm = crate::weights::tensors::scalar(next.clone().square().sum()).sqrt().max(f64::MIN_POSITIVE);
        v = next.div_scalar(norm);
    }
    let wv = w.matmul(v);
    crate::weights::tensors::scalar(wv.square().sum())
}

#[cfg(test)]
mod tests {
    use super::top_eigenvalue;

    #[test]
    fn power_iteration_finds_the_top_eigenvalue() {
        // (A^T A)(B B^T) for A = diag(2, 1), B = diag(1, 3): diag(4, 9).
        assert!((top_eigenvalue(&[4.0, 0.0, 0.0, 9.0], 2) - 9.0).abs() < 1e-9);
        // A non-symmetric product with eigenvalues 5 and 2 ([[4, 1], [2, 3]]).
        assert!((top_eigenvalue(&[4.0, 1.0, 2.0, 3.0], 2) - 5.0).abs() < 1e-6);
    }
}
