//! RMSNorm, `y = x / sqrt(mean(x^2) + eps) * w`, as one pass with its own backward.
//!
//! burn builds it from six tracked ops (square, mean, add, sqrt, divide, multiply), each a pass
//! over the activations with its own saved tensor; this keeps only `x` and one `1 / rms` per
//! row. Backward, per row with `g = dy * w` and `r = 1 / rms`:
//! `dx = r * (g - x * r^2 * mean(g * x))`, and `dw = sum over rows of dy * x * r`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, binary};
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;

use super::{FlexOp2, contiguous, last_dim, math, new_like, on_flex2};

/// RMSNorm over the last dimension of `x` with scale `weight` (`[d]`).
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    match on_flex2(&x, &weight, RmsNorm { eps: eps as f32 }) {
        Some(y) => y,
        None => with_burn_ops(x, weight, eps),
    }
}

/// The same in burn's ops (other backends and dtypes; the tests' reference).
fn with_burn_ops<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    let rms = x.clone().square().mean_dim(D - 1).add_scalar(eps).sqrt();
    x / rms * weight.unsqueeze::<D>()
}

#[derive(Debug, Clone, Copy)]
struct RmsNorm {
    eps: f32,
}

/// Rows per parallel task: about 16k values.
fn rows_per_task(d: usize) -> usize {
    (16 * 1024 / d.max(1)).max(1)
}

impl FlexOp2 for RmsNorm {
    fn forward(self, x: FlexTensor, w: &FlexTensor, _: [bool; 2]) -> (FlexTensor, Self::State) {
        let (x, n) = contiguous(x);
        let (w, _) = contiguous(w.clone());
        let d = last_dim(&x);
        let rows = n / d;
        let (xs, ws) = (&x.storage::<f32>()[..n], &w.storage::<f32>()[..d]);
        let mut y = vec![0f32; n];
        let mut inv = vec![0f32; rows];
        let task = rows_per_task(d);
        y.par_chunks_mut(task * d).zip(inv.par_chunks_mut(task)).zip(xs.par_chunks(task * d)).for_each(|((y, inv), x)| {
            math::simd(|| {
                for ((y, r), x) in y.chunks_mut(d).zip(inv.iter_mut()).zip(x.chunks(d)) {
                    *r = 1.0 / (math::dot(x, x) / d as f32 + self.eps).sqrt();
                    y.iter_mut().zip(x).zip(ws).for_each(|((y, &x), &w)| *y = x * *r * w);
                }
            })
        });
        let y = new_like(&x, y);
        let inv = FlexTensor::from_data(TensorData::new(inv, [rows]));
        (y, (x, w, inv))
    }
}

impl Backward<Flex, 2> for RmsNorm {
    /// `x` (contiguous), `w` and `1 / rms` per row.
    type State = (FlexTensor, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, inv) = ops.state;
        let d = last_dim(&x);
        let n = x.layout().num_elements();
        let task = rows_per_task(d);
        let (xs, ws, inv) = (&x.storage::<f32>()[..n], &w.storage::<f32>()[..d], &inv.storage::<f32>()[..n / d]);
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |dy| {
                let (mut dy, _) = contiguous(dy);
                let dys = &mut dy.storage_mut::<f32>()[..n];
                dys.par_chunks_mut(task * d).zip(xs.par_chunks(task * d)).zip(inv.par_chunks(task)).for_each(|((dy, x), inv)| {
                    math::simd(|| {
                        for ((dy, x), &r) in dy.chunks_mut(d).zip(x.chunks(d)).zip(inv) {
                            // mean(g * x) with g = dy * w, then dx written over dy.
                            let gx = dy.iter().zip(ws).zip(x).map(|((dy, w), x)| dy * w * x).sum::<f32>() / d as f32;
                            let c = r * r * gx;
                            dy.iter_mut().zip(ws).zip(x).for_each(|((dy, &w), &x)| *dy = r * (*dy * w - x * c));
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
                    .zip(inv.par_chunks(task))
                    .fold(
                        || vec![0f32; d],
                        |mut acc, ((dy, x), inv)| {
                            math::simd(|| {
                                for ((dy, x), &r) in dy.chunks(d).zip(x.chunks(d)).zip(inv) {
                                    acc.iter_mut().zip(dy).zip(x).for_each(|((a, dy), x)| *a += dy * x * r);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::sample_tensor as sample;
    use burn::tensor::Tolerance;

    /// Values and the gradients of x and w equal burn's six-op version, for a strided input.
    #[test]
    fn matches_burn_ops_with_gradients() {
        let device = Device::flex().autodiff();
        for train_weight in [true, false] {
            let run = |ours: bool| {
                let x = sample([3, 40, 24], 1, &device).require_grad();
                let mut w = sample([24], 2, &device);
                if train_weight {
                    w = w.require_grad();
                }
                let xs = x.clone().swap_dims(0, 1); // not contiguous
                let y = if ours { rms_norm(xs, w.clone(), 1e-5) } else { with_burn_ops(xs, w.clone(), 1e-5) };
                let grads = (y.clone() * sample([40, 3, 24], 3, &device).sin()).sum().backward();
                (y, x.grad(&grads).unwrap(), w.grad(&grads))
            };
            let ((y, dx, dw), (y_ref, dx_ref, dw_ref)) = (run(true), run(false));
            let tol = Tolerance::absolute(2e-5);
            y.into_data().assert_approx_eq::<f32>(&y_ref.into_data(), tol);
            dx.into_data().assert_approx_eq::<f32>(&dx_ref.into_data(), tol);
            assert_eq!(dw.is_some(), train_weight);
            if let (Some(dw), Some(dw_ref)) = (dw, dw_ref) {
                dw.into_data().assert_approx_eq::<f32>(&dw_ref.into_data(), Tolerance::absolute(1e-4));
            }
        }
    }
}
