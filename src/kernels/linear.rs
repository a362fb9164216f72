//! `y = x W (+ b)` with its backward pass, through [`sgemm`](super::sgemm).
//!
//! burn's own linear runs the product in the `gemm` crate, batch by batch for 3-d inputs, and
//! zero-fills every output first. Here the input is one `[rows, d_in]` matrix, the output is
//! written once, and the products run one output block per thread ([`sgemm`](super::sgemm)).
//! Backward computes
//! `dx = dy W^T` and, only for a trained weight, `dW = x^T dy`; `x` is kept for backward only
//! in that case (a frozen base weight keeps no activation alive).

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, binary};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{Shape, TensorData};

use super::sgemm::{Mat, product};
use super::{FlexOp2, Kernel, contiguous, on_flex2};

/// `x W + b` over the last dimension of `x`, `W` in burn's `[d_in, d_out]` layout.
pub fn linear<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    let y = match on_flex2(&x, &weight, LinearOp) {
        Some(y) => y,
        None => return crate::precision::linear(x, weight, bias),
    };
    match bias {
        Some(b) => y + b.unsqueeze::<D>(),
        None => y,
    }
}

/// A 2-d flex tensor as a [`Mat`] view (any strides).
pub(super) fn mat(t: &FlexTensor) -> Mat {
    let strides = t.layout().strides();
    let data = t.storage::<f32>();
    Mat { ptr: data[t.layout().start_offset()..].as_ptr(), row_stride: strides[0], col_stride: strides[1] }
}

/// `[.., d_in] x [d_in, d_out] -> [.., d_out]`.
fn forward(x: FlexTensor, w: &FlexTensor) -> FlexTensor {
    let (x, numel) = contiguous(x);
    let dims = x.layout().shape().clone();
    let (d_in, d_out) = (w.layout().shape()[0], w.layout().shape()[1]);
    let rows = numel / d_in.max(1);
    let y = product(rows, d_out, d_in, Mat::rows(&x.storage::<f32>()[..numel], d_in), mat(w));
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("linear input has at least one dimension") = d_out;
    FlexTensor::from_data(TensorData::new(y, Shape::from(out_dims)))
}

#[derive(Debug, Clone, Copy)]
struct LinearOp;

impl FlexOp2 for LinearOp {
    const KERNEL: Kernel = Kernel::Linear;

    /// dx needs W, dW needs x: each is kept only if the other is trained (x as the contiguous
    /// copy the product read, so backward does not copy it again).
    fn forward(self, x: FlexTensor, w: &FlexTensor, [x_tracked, w_tracked]: [bool; 2]) -> (FlexTensor, Self::State) {
        let (x, _) = contiguous(x);
        let y = forward(x.clone(), w);
        (y, (w_tracked.then_some(x), x_tracked.then(|| w.clone())))
    }
}

impl Backward<Flex, 2> for LinearOp {
    /// The input (when the weight is trained) and the weight (when the input is).
    type State = (Option<FlexTensor>, Option<FlexTensor>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w) = ops.state;
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |dy| {
                let w = w.expect("the weight is kept when the input needs a gradient");
                let (dy, numel) = contiguous(dy);
                let (d_in, d_out) = (w.layout().shape()[0], w.layout().shape()[1]);
                let rows = numel / d_out.max(1);
                let dx = product(rows, d_in, d_out, Mat::rows(&dy.storage::<f32>()[..numel], d_out), mat(&w).t());
                let mut dims = dy.layout().shape().to_vec();
                *dims.last_mut().unwrap() = d_in;
                FlexTensor::from_data(TensorData::new(dx, Shape::from(dims)))
            },
            |dy| {
                let x = x.expect("the input is kept when the weight needs a gradient");
                let (x, numel) = contiguous(x);
                let (dy, dy_numel) = contiguous(dy);
                let d_in = *x.layout().shape().last().unwrap();
                let rows = numel / d_in.max(1);
                let d_out = dy_numel / rows.max(1);
                let xt = Mat::rows(&x.storage::<f32>()[..numel], d_in).t();
                let dw = product(d_in, d_out, rows, xt, Mat::rows(&dy.storage::<f32>()[..dy_numel], d_out));
                FlexTensor::from_data(TensorData::new(dw, Shape::new([d_in, d_out])))
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::sample_tensor as sample;
    use burn::tensor::{Tolerance, module};

    fn close<const D: usize>(a: Tensor<D>, b: Tensor<D>) {
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(2e-4));
    }

    /// Values and gradients (input, weight, bias) equal burn's linear, with the weight trained
    /// or frozen, for a 3-d input and a strided (transposed) weight.
    #[test]
    fn matches_burn_linear_with_gradients() {
        let device = Device::flex().autodiff();
        for train_weight in [true, false] {
            let run = |ours: bool| {
                let x = sample([3, 70, 40], 1, &device).require_grad();
                // Stored as [d_out, d_in] and viewed transposed, as loaded checkpoints often are.
                let mut w = sample([50, 40], 2, &device).swap_dims(0, 1);
                if train_weight {
                    w = w.require_grad();
                }
                let b = sample([50], 3, &device).require_grad();
                let y = if ours {
                    linear(x.clone(), w.clone(), Some(b.clone()))
                } else {
                    module::linear(x.clone(), w.clone(), Some(b.clone()))
                };
                let grads = (y.clone() * sample([3, 70, 50], 4, &device).sin()).sum().backward();
                (y, x.grad(&grads).unwrap(), w.grad(&grads), b.grad(&grads).unwrap())
            };
            let (y, dx, dw, db) = run(true);
            let (y_ref, dx_ref, dw_ref, db_ref) = run(false);
            close(y, y_ref);
            close(dx, dx_ref);
            close(db, db_ref);
            assert_eq!(dw.is_some(), train_weight);
            if let (Some(dw), Some(dw_ref)) = (dw, dw_ref) {
                close(dw, dw_ref);
            }
        }
    }

    #[test]
    fn untracked_strided_input() {
        let device = Device::flex();
        let x = sample([40, 6, 5], 1, &device).swap_dims(0, 2); // [5, 6, 40], not contiguous
        let w = sample([40, 30], 2, &device);
        close(linear(x.clone(), w.clone(), None), module::linear(x, w, None));
    }
}
