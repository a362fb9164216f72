//! The rotary position embedding (Hugging Face's `rotate_half` layout) as one pass with its own
//! backward. burn's version is seven ops (two narrows, a negation, a concatenation, two
//! products and a sum); in a decoding step at batch 1, where every op is small, that was about
//! a quarter of a layer's ops.
//!
//! With `h = d / 2`: `y_j = x_j cos_j - x_{j+h} sin_j` and `y_{j+h} = x_{j+h} cos_{j+h} + x_j
//! sin_{j+h}` for `j < h`. It is linear in `x`, so backward needs only the tables:
//! `dx_j = dy_j cos_j + dy_{j+h} sin_{j+h}` and `dx_{j+h} = dy_{j+h} cos_{j+h} - dy_j sin_j`.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use rayon::prelude::*;

use super::{FlexOp, Kernel, contiguous, math, on_flex, rows_per_task};

/// Rotates `x` (`[.., t, d]`, `d` even) by the angles whose `cos` and `sin` are given per
/// position, `[t, d]` each, laid out for `rotate_half` (each frequency in both halves).
pub fn rope<const D: usize>(x: Tensor<D>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<D> {
    let table = |t: &Tensor<2>| t.clone().inner().try_into_primitive::<Flex>().ok().map(|t| contiguous(t).0);
    let [t, d] = cos.dims();
    let fits = D >= 2 && x.dims()[D - 2] == t && x.dims()[D - 1] == d && d % 2 == 0 && sin.dims() == [t, d];
    let fused = match (table(cos), table(sin)) {
        (Some(cos), Some(sin)) if fits => on_flex(&x, Rope { cos, sin }),
        _ => None,
    };
    fused.unwrap_or_else(|| with_burn_ops(x, cos, sin))
}

/// The same in burn's ops (other backends and dtypes; the tests' reference).
fn with_burn_ops<const D: usize>(x: Tensor<D>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<D> {
    let half = x.dims()[D - 1] / 2;
    let x1 = x.clone().narrow(D - 1, 0, half);
    let x2 = x.clone().narrow(D - 1, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], D - 1);
    x * cos.clone().unsqueeze::<D>() + rotated * sin.clone().unsqueeze::<D>()
}

#[derive(Debug, Clone)]
struct Rope {
    cos: FlexTensor,
    sin: FlexTensor,
}

impl Rope {
    fn width(&self) -> usize {
        *self.cos.layout().shape().last().unwrap()
    }

    /// Rotates one row (position `pos`) from `x` into `out`; `transpose`: the transposed
    /// rotation, for backward. `x` and `out` may be the same row (each pair is read first).
    #[inline(always)]
    fn rotate(&self, pos: usize, x: &[f32], out: &mut [f32], transpose: bool) {
        let d = self.width();
        let h = d / 2;
        let at = pos * d;
        let (c, s) = (&self.cos.storage::<f32>()[at..at + d], &self.sin.storage::<f32>()[at..at + d]);
        for j in 0..h {
            let (a, b) = (x[j], x[j + h]);
            if transpose {
                out[j] = a * c[j] + b * s[j + h];
                out[j + h] = b * c[j + h] - a * s[j];
            } else {
                out[j] = a * c[j] - b * s[j];
                out[j + h] = b * c[j + h] + a * s[j + h];
            }
        }
    }
}

impl FlexOp for Rope {
    const KERNEL: Kernel = Kernel::Rope;

    /// Reads `x` in place when its rows are contiguous (the decoder passes heads swapped out of
    /// `[b, t, heads, d]`); the state is unused, backward needs only the tables the op carries.
    fn forward(self, x: FlexTensor) -> (FlexTensor, FlexTensor) {
        let x = if x.layout().strides().last() == Some(&1) { x } else { contiguous(x).0 };
        let (shape, strides) = (x.layout().shape().to_vec(), x.layout().strides().to_vec());
        let d = self.width();
        let t = shape[shape.len() - 2];
        let n: usize = shape.iter().product();
        let data = &x.storage::<f32>()[x.layout().start_offset()..];
        // Where row `r` (counted over the leading dimensions, row-major) starts in `data`.
        let row_start = |mut r: usize| {
            let mut offset = 0isize;
            for k in (0..shape.len() - 1).rev() {
                offset += (r % shape[k]) as isize * strides[k];
                r /= shape[k];
            }
            offset as usize
        };
        let mut y = vec![0f32; n];
        let task = rows_per_task(d);
        y.par_chunks_mut(task * d).enumerate().for_each(|(i, out)| {
            math::simd(|| {
                for (k, out) in out.chunks_mut(d).enumerate() {
                    let r = i * task + k;
                    let start = row_start(r);
                    self.rotate(r % t, &data[start..start + d], out, false);
                }
            })
        });
        (FlexTensor::from_data(burn::tensor::TensorData::new(y, shape)), self.cos)
    }
}

impl Backward<Flex, 1> for Rope {
    type State = FlexTensor;

    /// Rotates the output gradient back in its own buffer.
    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
            let (mut dy, n) = contiguous(dy);
            let d = self.width();
            let t = dy.layout().shape()[dy.layout().shape().len() - 2];
            let task = rows_per_task(d);
            dy.storage_mut::<f32>()[..n].par_chunks_mut(task * d).enumerate().for_each(|(i, rows)| {
                math::simd(|| {
                    let mut row = vec![0f32; d];
                    for (k, g) in rows.chunks_mut(d).enumerate() {
                        row.copy_from_slice(g);
                        self.rotate((i * task + k) % t, &row, g, true);
                    }
                })
            });
            dy
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::sample_tensor as sample;
    use burn::tensor::Tolerance;

    /// Values and input gradients equal burn's seven-op version, for a strided input (heads
    /// swapped out of `[b, t, heads, d]`, as the decoder passes it).
    #[test]
    fn matches_burn_ops_with_gradients() {
        let device = Device::flex().autodiff();
        let (cos, sin) = (sample([5, 8], 7, &device).cos(), sample([5, 8], 8, &device).sin());
        let run = |ours: bool| {
            let x = sample([2, 5, 3, 8], 1, &device).require_grad();
            let xh = x.clone().swap_dims(1, 2);
            let y = if ours { rope(xh, &cos, &sin) } else { with_burn_ops(xh, &cos, &sin) };
            let grads = (y.clone() * sample([2, 3, 5, 8], 4, &device).sin()).sum().backward();
            (y, x.grad(&grads).unwrap())
        };
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        y.into_data().assert_approx_eq::<f32>(&y_ref.into_data(), Tolerance::absolute(1e-6));
        dx.into_data().assert_approx_eq::<f32>(&dx_ref.into_data(), Tolerance::absolute(1e-6));
    }
}
