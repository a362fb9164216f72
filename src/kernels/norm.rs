//! RMSNorm (`y = x / sqrt(mean(x^2) + eps) * w`) and LayerNorm (`y = (x - mean) / sqrt(var +
//! eps) * w + b`), each one pass with its own backward.
//!
//! burn builds RMSNorm from six tracked ops and LayerNorm from nine (under autodiff its fused
//! LayerNorm falls back to mean, subtract, square, mean, add, sqrt, divide, multiply, add), each
//! a pass over the activations with its own saved tensor. This keeps `x` and two numbers per
//! row, the mean (0 for RMSNorm) and `r = 1 / sqrt(var + eps)`. Backward, per row with
//! `xh = (x - mean) * r` and `g = dy * w`: `dx = r * (g - mean(g) - xh * mean(g * xh))` (no
//! `mean(g)` term for RMSNorm), and `dw = sum over rows of dy * xh`. LayerNorm's shift is a
//! plain add after it, whose gradient burn sums.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, binary};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;

use super::{FlexOp2, Kernel, contiguous, last_dim, math, new_like, on_flex2, rows_per_task};

/// RMSNorm over the last dimension of `x` with scale `weight` (`[d]`).
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    match on_flex2(&x, &weight, Norm { eps: eps as f32, center: false }) {
        Some(y) => y,
        None => rms_norm_burn(x, weight, eps),
    }
}

/// LayerNorm over the last dimension of `x` with scale `weight` and shift `bias` (`[d]`).
pub fn layer_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, bias: Option<Tensor<1>>, eps: f64) -> Tensor<D> {
    match on_flex2(&x, &weight, Norm { eps: eps as f32, center: true }) {
        Some(y) => match bias {
            Some(b) => y + b.unsqueeze::<D>(),
            None => y,
        },
        None => burn::tensor::module::layer_norm(x, weight, bias, eps),
    }
}

/// RMSNorm in burn's ops (other backends and dtypes; the tests' reference).
fn rms_norm_burn<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    let rms = x.clone().square().mean_dim(D - 1).add_scalar(eps).sqrt();
    x / rms * weight.unsqueeze::<D>()
}

/// Normalization of each row, then the scale: LayerNorm with `center`, RMSNorm without.
#[derive(Debug, Clone, Copy)]
struct Norm {
    eps: f32,
    center: bool,
}

impl FlexOp2 for Norm {
    const KERNEL: Kernel = Kernel::Norm;

    fn forward(self, x: FlexTensor, w: &FlexTensor, _: [bool; 2]) -> (FlexTensor, Self::State) {
        let (x, n) = contiguous(x);
        let (w, _) = contiguous(w.clone());
        let d = last_dim(&x);
        let rows = n / d;
        let (xs, ws) = (&x.storage::<f32>()[..n], &w.storage::<f32>()[..d]);
        let mut y = vec![0f32; n];
        let mut stats = vec![[0f32; 2]; rows];
        let task = rows_per_task(d);
        y.par_chunks_mut(task * d).zip(stats.par_chunks_mut(task)).zip(xs.par_chunks(task * d)).for_each(|((y, stats), x)| {
            math::simd(|| {
                for ((y, stat), x) in y.chunks_mut(d).zip(stats.iter_mut()).zip(x.chunks(d)) {
                    let mean = if self.center { math::sum(x) / d as f32 } else { 0.0 };
                    y.iter_mut().zip(x).for_each(|(y, &x)| *y = x - mean);
                    let r = 1.0 / (math::dot(y, y) / d as f32 + self.eps).sqrt();
                    *stat = [mean, r];
                    y.iter_mut().zip(ws).for_each(|(y, &w)| *y *= r * w);
                }
            })
        });
        let y = new_like(&x, y);
        (y, (x, w, stats))
    }
}

impl Backward<Flex, 2> for Norm {
    /// `x` (contiguous), `w`, and the mean and `1 / sqrt(var + eps)` of each row.
    type State = (FlexTensor, FlexTensor, Vec<[f32; 2]>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, stats) = ops.state;
        let d = last_dim(&x);
        let n = x.layout().num_elements();
        let task = rows_per_task(d);
        let (xs, ws, stats) = (&x.storage::<f32>()[..n], &w.storage::<f32>()[..d], &stats[..]);
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |dy| {
                let (mut dy, _) = contiguous(dy);
                let dys = &mut dy.storage_mut::<f32>()[..n];
                dys.par_chunks_mut(task * d).zip(xs.par_chunks(task * d)).zip(stats.par_chunks(task)).for_each(|((dy, x), stats)| {
                    math::simd(|| {
                        for ((dy, x), &[mean, r]) in dy.chunks_mut(d).zip(x.chunks(d)).zip(stats) {
                            // mean(g) and mean(g * xh) with g = dy * w, then dx written over dy.
                            let (g_sum, gx_sum) = sums(dy, ws, x, mean);
                            let g_mean = if self.center { g_sum / d as f32 } else { 0.0 };
                            let gx_mean = gx_sum * r / d as f32;
                            dy.iter_mut().zip(ws).zip(x).for_each(|((dy, &w), &x)| *dy = r * (*dy * w - g_mean - (x - mean) * r * gx_mean));
                        }
                    })
                });
                dy
            },
            |dy| {
                let (dy, _) = contiguous(dy);
                let dys = &dy.storage::<f32>()[..n];
                let dw = dys
                    .par_chunks(task * d)
                    .zip(xs.par_chunks(task * d))
                    .zip(stats.par_chunks(task))
                    .fold(
                        || vec![0f32; d],
                        |mut acc, ((dy, x), stats)| {
                            math::simd(|| {
                                for ((dy, x), &[mean, r]) in dy.chunks(d).zip(x.chunks(d)).zip(stats) {
                                    acc.iter_mut().zip(dy).zip(x).for_each(|((a, dy), x)| *a += dy * (x - mean) * r);
                                }
                            });
                            acc
                        },
                    )
                    .reduce(|| vec![0f32; d], |a, b| a.into_iter().zip(b).map(|(a, b)| a + b).collect());
                FlexTensor::from_data(TensorData::new(dw, [d]))
            },
        );
    }
}

/// `(sum of g, sum of g * (x - mean))` with `g = dy * w`, in lanes the compiler vectorizes.
#[inline(always)]
fn sums(dy: &[f32], w: &[f32], x: &[f32], mean: f32) -> (f32, f32) {
    const LANES: usize = 16;
    let (mut g, mut gx) = ([0f32; LANES], [0f32; LANES]);
    let whole = dy.len() / LANES * LANES;
    for ((dy, w), x) in dy[..whole].chunks_exact(LANES).zip(w[..whole].chunks_exact(LANES)).zip(x[..whole].chunks_exact(LANES)) {
        for i in 0..LANES {
            let gi = dy[i] * w[i];
            g[i] += gi;
            gx[i] += gi * (x[i] - mean);
        }
    }
    let (mut g, mut gx) = (g.iter().sum::<f32>(), gx.iter().sum::<f32>());
    for ((dy, w), x) in dy[whole..].iter().zip(&w[whole..]).zip(&x[whole..]) {
        g += dy * w;
        gx += dy * w * (x - mean);
    }
    (g, gx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::sample_tensor as sample;
    use burn::tensor::Tolerance;

    /// Values and the gradients of x, w (and b) equal burn's ops, for a strided input, with the
    /// weight trained and frozen: RMSNorm against its six-op version, LayerNorm against burn's
    /// (which decomposes under autodiff).
    #[test]
    fn matches_burn_ops_with_gradients() {
        let device = Device::flex().autodiff();
        for (center, train_weight) in [(false, true), (false, false), (true, true), (true, false)] {
            let run = |ours: bool| {
                let x = sample([3, 40, 24], 1, &device).require_grad();
                let (mut w, b) = (sample([24], 2, &device), sample([24], 4, &device).require_grad());
                if train_weight {
                    w = w.require_grad();
                }
                let xs = x.clone().swap_dims(0, 1) * 3.0 + 1.0; // not contiguous, not centred
                let y = match (center, ours) {
                    (false, true) => rms_norm(xs, w.clone(), 1e-5),
                    (false, false) => rms_norm_burn(xs, w.clone(), 1e-5),
                    (true, true) => layer_norm(xs, w.clone(), Some(b.clone()), 1e-5),
                    (true, false) => burn::tensor::module::layer_norm(xs, w.clone(), Some(b.clone()), 1e-5),
                };
                let grads = (y.clone() * sample([40, 3, 24], 3, &device).sin()).sum().backward();
                (y, x.grad(&grads).unwrap(), w.grad(&grads), b.grad(&grads))
            };
            let ((y, dx, dw, db), (y_ref, dx_ref, dw_ref, db_ref)) = (run(true), run(false));
            let tol = Tolerance::absolute(5e-5);
            y.into_data().assert_approx_eq::<f32>(&y_ref.into_data(), tol);
            dx.into_data().assert_approx_eq::<f32>(&dx_ref.into_data(), tol);
            assert_eq!(dw.is_some(), train_weight);
            if let (Some(dw), Some(dw_ref)) = (dw, dw_ref) {
                dw.into_data().assert_approx_eq::<f32>(&dw_ref.into_data(), Tolerance::absolute(2e-4));
            }
            assert_eq!(db.is_some(), center, "the shift is LayerNorm's");
            if let (Some(db), Some(db_ref)) = (db, db_ref) {
                db.into_data().assert_approx_eq::<f32>(&db_ref.into_data(), Tolerance::absolute(2e-4));
            }
        }
    }
}
