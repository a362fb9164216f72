//! Fused CPU kernels for the flex backend (GELU, SiLU, softmax), with their own backward passes.
//!
//! burn's autodiff builds softmax out of five tracked ops and runs GELU's erf through scalar
//! libm, one element at a time on one thread; together they took about 30% of a MiniLM
//! training step. These versions are single passes over contiguous f32 data, vectorized and
//! parallel. On any other backend or dtype, or with `REPLORA_FUSED_KERNELS=off` (the arithmetic
//! a GPU runs, checked on the CPU: see [`with_fallback`]), they fall back to burn's own ops, so
//! model code can call them unconditionally.

mod attention;
mod engaged;
#[cfg(test)]
mod finite_differences;
mod linear;
mod math;
mod norm;
pub mod quantized;
mod rope;
pub mod sgemm;

pub use attention::{attention, repeat_kv};
pub use engaged::{Kernel, SWITCH, fused_allowed, fused_calls, with_fallback};
pub use linear::linear;
pub use norm::{layer_norm, rms_norm};
pub use rope::rope;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorData, activation};
use rayon::prelude::*;

/// A flex f32 primitive in, a flex f32 primitive out.
trait FlexOp: Backward<Flex, 1> + Clone {
    const KERNEL: Kernel;
    /// The forward pass and what backward needs (its input or its output, or nothing).
    fn forward(self, x: FlexTensor) -> (FlexTensor, Self::State);
}

/// Runs `op` on `x` if it is an f32 flex tensor (tracked or not); `None` otherwise.
fn on_flex<const D: usize, O: FlexOp>(x: &Tensor<D>, op: O) -> Option<Tensor<D>> {
    let y = on_flex_untallied(x, op);
    if y.is_some() {
        engaged::record(O::KERNEL);
    }
    y
}

fn on_flex_untallied<const D: usize, O: FlexOp>(x: &Tensor<D>, op: O) -> Option<Tensor<D>> {
    if x.dtype() != DType::F32 || !fused_allowed() {
        return None;
    }
    if let Ok(t) = x.clone().try_into_primitive::<Flex>() {
        return Some(Tensor::from_primitive::<Flex>(op.forward(t).0));
    }
    fn tracked<const D: usize, C: CheckpointStrategy, O: FlexOp>(x: &Tensor<D>, op: O) -> Option<Tensor<D>>
    where
        burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
    {
        let (primitive, node) = x.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?.into_parts();
        let output = match op.clone().prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, saved) = op.forward(primitive);
                prep.finish(saved, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(op.forward(primitive).0),
        };
        Some(Tensor::from_primitive::<Autodiff<Flex, C>>(output))
    }
    tracked::<D, NoCheckpointing, O>(x, op.clone()).or_else(|| tracked::<D, BalancedCheckpointing, O>(x, op))
}

/// A flex f32 op of two tensors (an input and a weight), with its backward pass.
trait FlexOp2: Backward<Flex, 2> + Copy {
    const KERNEL: Kernel;
    /// The output, and what backward needs, given which of the two inputs are tracked.
    fn forward(self, x: FlexTensor, w: &FlexTensor, tracked: [bool; 2]) -> (FlexTensor, Self::State);
}

/// Runs `op` on `x` and `w` if both are f32 flex tensors (tracked or not); `None` otherwise.
fn on_flex2<const D: usize, const E: usize, O: FlexOp2>(x: &Tensor<D>, w: &Tensor<E>, op: O) -> Option<Tensor<D>> {
    let y = on_flex2_untallied(x, w, op);
    if y.is_some() {
        engaged::record(O::KERNEL);
    }
    y
}

fn on_flex2_untallied<const D: usize, const E: usize, O: FlexOp2>(x: &Tensor<D>, w: &Tensor<E>, op: O) -> Option<Tensor<D>> {
    if x.dtype() != DType::F32 || w.dtype() != DType::F32 || !fused_allowed() {
        return None;
    }
    if let (Ok(x), Ok(w)) = (x.clone().try_into_primitive::<Flex>(), w.clone().try_into_primitive::<Flex>()) {
        return Some(Tensor::from_primitive::<Flex>(op.forward(x, &w, [false; 2]).0));
    }
    fn tracked<const D: usize, const E: usize, C: CheckpointStrategy, O: FlexOp2>(x: &Tensor<D>, w: &Tensor<E>, op: O) -> Option<Tensor<D>>
    where
        burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
    {
        let x = x.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
        let w = w.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
        let tracked = [x.is_tracked(), w.is_tracked()];
        let ((x, x_node), (w, w_node)) = (x.into_parts(), w.into_parts());
        let output = match op.prepare::<C>([x_node, w_node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, state) = op.forward(x, &w, tracked);
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(op.forward(x, &w, [false; 2]).0),
        };
        Some(Tensor::from_primitive::<Autodiff<Flex, C>>(output))
    }
    tracked::<D, E, NoCheckpointing, O>(x, w, op).or_else(|| tracked::<D, E, BalancedCheckpointing, O>(x, w, op))
}

/// The f32 values of a flex tensor, contiguous (copied only if they were not).
fn contiguous(t: FlexTensor) -> (FlexTensor, usize) {
    let t = if t.is_contiguous() && t.layout().start_offset() == 0 { t } else { t.to_contiguous() };
    let n = t.layout().num_elements();
    (t, n)
}

fn last_dim(t: &FlexTensor) -> usize {
    t.layout().shape().last().copied().unwrap_or(1).max(1)
}

/// Rows of length `row` per parallel task: about [`math::CHUNK`] values.
fn rows_per_task(row: usize) -> usize {
    (math::CHUNK / row.max(1)).max(1)
}

/// Calls `f(out_row, [input rows])` for every row of length `row`, rows in parallel chunks;
/// `out` may hold values that `f` reads (in-place updates).
fn for_rows<const N: usize>(row: usize, out: &mut [f32], inputs: [&[f32]; N], f: impl Fn(&mut [f32], [&[f32]; N]) + Sync) {
    let task_rows = rows_per_task(row);
    out.par_chunks_mut(task_rows * row).enumerate().for_each(|(task, out)| {
        let start = task * task_rows * row;
        math::simd(|| {
            for (i, out) in out.chunks_mut(row).enumerate() {
                let at = start + i * row;
                f(out, inputs.map(|x| &x[at..at + row]));
            }
        })
    });
}

fn new_like(t: &FlexTensor, values: Vec<f32>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, t.layout().shape().clone()))
}

/// `y = f(x)` element-wise; backward needs `x`.
fn elementwise(x: FlexTensor, f: impl Fn(f32) -> f32 + Sync + Copy) -> (FlexTensor, FlexTensor) {
    let (x, n) = contiguous(x);
    let mut y = vec![0f32; n];
    math::map(&x.storage::<f32>()[..n], &mut y, f);
    (new_like(&x, y), x)
}

/// The backward of an element-wise op: `dx = df(x, dy)` with `x` saved by [`elementwise`],
/// written over `dy`'s buffer when nothing else holds it (copy-on-write otherwise).
fn elementwise_backward(ops: Ops<FlexTensor, 1>, grads: &mut Gradients, df: impl Fn(f32, f32) -> f32 + Sync + Copy) {
    let (x, n) = contiguous(ops.state);
    unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
        let (mut grad, _) = contiguous(grad);
        math::update(&x.storage::<f32>()[..n], &mut grad.storage_mut::<f32>()[..n], df);
        grad
    });
}

/// Exact (erf) GELU, `x * Phi(x)`, as BERT uses it.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    on_flex(&x, Gelu).unwrap_or_else(|| activation::gelu(x))
}

#[derive(Debug, Clone, Copy)]
struct Gelu;

impl FlexOp for Gelu {
    const KERNEL: Kernel = Kernel::Gelu;

    fn forward(self, x: FlexTensor) -> (FlexTensor, FlexTensor) {
        elementwise(x, |v| v * math::normal_cdf(v).0)
    }
}

impl Backward<Flex, 1> for Gelu {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        elementwise_backward(ops, grads, |v, g| {
            let (cdf, gauss) = math::normal_cdf(v);
            g * (cdf + v * gauss * math::INV_SQRT_2PI)
        });
    }
}

/// SiLU, `x * sigmoid(x)`, as LLaMA's SwiGLU uses it.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    on_flex(&x, Silu).unwrap_or_else(|| activation::silu(x))
}

#[derive(Debug, Clone, Copy)]
struct Silu;

impl FlexOp for Silu {
    const KERNEL: Kernel = Kernel::Silu;

    fn forward(self, x: FlexTensor) -> (FlexTensor, FlexTensor) {
        elementwise(x, |v| v * math::sigmoid(v))
    }
}

impl Backward<Flex, 1> for Silu {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        elementwise_backward(ops, grads, |v, g| {
            let s = math::sigmoid(v);
            g * s * (1.0 + v * (1.0 - s))
        });
    }
}

/// SwiGLU's gate, `silu(gate) * up`, as one op: backward keeps `gate` and `up` only (burn's
/// SiLU then multiply also kept `silu(gate)`, a third `[tokens, intermediate]` tensor per layer).
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    let fused = if gate.dims() == up.dims() { on_flex2(&gate, &up, SwiGlu) } else { None };
    fused.unwrap_or_else(|| silu(gate) * up)
}

#[derive(Debug, Clone, Copy)]
struct SwiGlu;

impl FlexOp2 for SwiGlu {
    const KERNEL: Kernel = Kernel::SwiGlu;

    fn forward(self, gate: FlexTensor, up: &FlexTensor, _: [bool; 2]) -> (FlexTensor, Self::State) {
        let ((gate, n), (up, _)) = (contiguous(gate), contiguous(up.clone()));
        let mut y = vec![0f32; n];
        let (g, u) = (&gate.storage::<f32>()[..n], &up.storage::<f32>()[..n]);
        y.par_chunks_mut(math::CHUNK).zip(g.par_chunks(math::CHUNK).zip(u.par_chunks(math::CHUNK))).for_each(|(y, (g, u))| {
            math::simd(|| y.iter_mut().zip(g.iter().zip(u)).for_each(|(y, (&g, &u))| *y = g * math::sigmoid(g) * u))
        });
        (new_like(&gate, y), (gate, up))
    }
}

impl Backward<Flex, 2> for SwiGlu {
    /// `gate` and `up`, contiguous.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (gate, up) = ops.state;
        let n = gate.layout().num_elements();
        let (g, u) = (&gate.storage::<f32>()[..n], &up.storage::<f32>()[..n]);
        // `dy` is overwritten by the gradient: d gate = dy * up * silu'(gate), d up = dy * silu(gate).
        let update = |dy: FlexTensor, f: fn(f32, f32, f32) -> f32| {
            let (mut dy, _) = contiguous(dy);
            dy.storage_mut::<f32>()[..n]
                .par_chunks_mut(math::CHUNK)
                .zip(g.par_chunks(math::CHUNK).zip(u.par_chunks(math::CHUNK)))
                .for_each(|(dy, (g, u))| math::simd(|| dy.iter_mut().zip(g.iter().zip(u)).for_each(|(dy, (&g, &u))| *dy = f(*dy, g, u))));
            dy
        };
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |dy| {
                update(dy, |dy, g, u| {
                    let s = math::sigmoid(g);
                    dy * u * s * (1.0 + g * (1.0 - s))
                })
            },
            |dy| update(dy, |dy, g, _| dy * g * math::sigmoid(g)),
        );
    }
}

/// Softmax over the last dimension: one pass per row forward, and one backward,
/// `dx = y * (dy - sum(dy * y))`, keeping only `y` alive in between.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    on_flex(&x, Softmax).unwrap_or_else(|| activation::softmax(x, D - 1))
}

#[derive(Debug, Clone, Copy)]
struct Softmax;

impl FlexOp for Softmax {
    const KERNEL: Kernel = Kernel::Softmax;

    fn forward(self, x: FlexTensor) -> (FlexTensor, FlexTensor) {
        let (x, n) = contiguous(x);
        let row = last_dim(&x);
        let mut y = vec![0f32; n];
        for_rows(row, &mut y, [&x.storage::<f32>()[..n]], |y, [x]| {
            let max = math::max(x);
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = math::exp(x - max));
            let inv = 1.0 / math::sum(y);
            y.iter_mut().for_each(|y| *y *= inv);
        });
        let y = new_like(&x, y);
        (y.clone(), y)
    }
}

impl Backward<Flex, 1> for Softmax {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (y, n) = contiguous(ops.state);
        let row = last_dim(&y);
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let (mut grad, _) = contiguous(grad);
            for_rows(row, &mut grad.storage_mut::<f32>()[..n], [&y.storage::<f32>()[..n]], |g, [y]| {
                let dot = math::dot(y, g);
                g.iter_mut().zip(y).for_each(|(g, &y)| *g = y * (*g - dot));
            });
            grad
        });
    }
}

/// Deterministic test values in about [-1.7, 1.7], varied by `seed`.
#[cfg(test)]
fn sample_tensor<const D: usize>(shape: [usize; D], seed: usize, device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| (((i * 37 + seed * 13) % 101) as f32 - 50.0) / 30.0).collect();
    Tensor::<1>::from_floats(values.as_slice(), device).reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(device: &Device) -> Tensor<3> {
        let values: Vec<f32> = (0..2 * 3 * 40).map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0).collect();
        Tensor::<1>::from_floats(values.as_slice(), device).reshape([2, 3, 40])
    }

    /// Forward values and input gradients of `ours` and `reference` on the same input.
    fn both(ours: fn(Tensor<3>) -> Tensor<3>, reference: fn(Tensor<3>) -> Tensor<3>) -> [(Vec<f32>, Vec<f32>); 2] {
        let device = Device::flex().autodiff();
        [ours, reference].map(|f| {
            let x = sample(&device).require_grad();
            // A non-uniform upstream gradient, so that softmax's backward is not trivially zero.
            let weights = sample(&device).sin();
            let y = f(x.clone());
            let grads = (y.clone() * weights).sum().backward();
            let dx = x.grad(&grads).unwrap();
            (y.into_data().try_into_vec_as::<f32>().unwrap(), dx.into_data().try_into_vec_as::<f32>().unwrap())
        })
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn gelu_matches_burn() {
        let [(y, dx), (y_ref, dx_ref)] = both(gelu, activation::gelu);
        assert!(max_diff(&y, &y_ref) < 1e-6 && max_diff(&dx, &dx_ref) < 1e-6);
    }

    #[test]
    fn silu_matches_burn() {
        let [(y, dx), (y_ref, dx_ref)] = both(silu, activation::silu);
        assert!(max_diff(&y, &y_ref) < 1e-6 && max_diff(&dx, &dx_ref) < 1e-6);
    }

    #[test]
    fn swiglu_matches_burn() {
        let device = Device::flex().autodiff();
        let run = |ours: bool| {
            let g = sample(&device).require_grad();
            let u = sample(&device).cos().require_grad();
            let y = if ours { swiglu(g.clone(), u.clone()) } else { activation::silu(g.clone()) * u.clone() };
            let grads = (y.clone() * sample(&device).sin()).sum().backward();
            [y, g.grad(&grads).unwrap(), u.grad(&grads).unwrap()].map(|t| t.into_data().try_into_vec_as::<f32>().unwrap())
        };
        for (ours, reference) in run(true).iter().zip(run(false)) {
            assert!(max_diff(ours, &reference) < 1e-5);
        }
    }

    #[test]
    fn softmax_matches_burn() {
        let [(y, dx), (y_ref, dx_ref)] = both(softmax_last, |x| activation::softmax(x, 2));
        assert!(max_diff(&y, &y_ref) < 1e-6 && max_diff(&dx, &dx_ref) < 1e-6);
    }

    #[test]
    fn untracked_and_strided_inputs() {
        let device = Device::flex();
        let x = sample(&device).swap_dims(1, 2); // non-contiguous
        let reference = activation::gelu(x.clone()).into_data();
        gelu(x.clone()).into_data().assert_approx_eq::<f32>(&reference, burn::tensor::Tolerance::absolute(1e-6));
        let reference = activation::silu(x.clone()).into_data();
        silu(x.clone()).into_data().assert_approx_eq::<f32>(&reference, burn::tensor::Tolerance::absolute(1e-6));
        // Masked scores (-inf) get exactly zero weight, as in burn.
        let mask = Tensor::<3>::zeros([2, 40, 3], &device).slice_fill([0..2, 0..40, 2..3], f32::NEG_INFINITY);
        let x = x + mask;
        let reference = activation::softmax(x.clone(), 2).into_data();
        assert!(reference.iter::<f32>().skip(2).step_by(3).all(|v| v == 0.0));
        softmax_last(x).into_data().assert_approx_eq::<f32>(&reference, burn::tensor::Tolerance::absolute(1e-6));
    }
}
