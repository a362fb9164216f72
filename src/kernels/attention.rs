//! Scaled dot-product attention as one op with its own backward pass, head by head.
//!
//! burn computes `softmax(q k^T + bias) v` as a chain of batched ops: its batched matmul ran
//! the `[t, 64] x [64, t]` score products at 27-33 GFLOP/s on the decoder job (2 cores), the
//! grouped-query keys and values were copied out to every query head, and the bias add, the
//! softmax and the layout changes each made a pass over `[batch, heads, t, keys]`. Here every
//! head is one task on rayon's threads: scores with the bias added in place, softmax, then the
//! weighted values, all through single-threaded `gemm` calls (about 135 GFLOP/s on the same
//! products); query heads read their key/value head directly. Backward keeps only the softmax
//! output `P` and works per key/value head, so a group's `dK`, `dV` are summed without locks:
//! `dV = P^T dO`, `dP = dO V^T`, `dS = P * (dP - rowsum(dP * P))`, `dQ = dS K`, `dK = dS^T Q`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use super::contiguous;
use super::math;
use super::sgemm::{Mat, matmul_serial};

/// `softmax(q k^T + bias) v`: `q` `[batch, heads, t, d]` (already scaled), `k` and `v`
/// `[batch, kv_heads, keys, d]` with `heads` a multiple of `kv_heads` (query head `i` reads
/// key/value head `i / (heads / kv_heads)`), `bias` additive, broadcasting from
/// `[1 or batch, 1, 1 or t, keys]`. `None` when the tensors are not flex f32 or the shapes are
/// not these (the caller then uses burn's ops).
pub fn attention(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, bias: &Tensor<4>) -> Option<Tensor<4>> {
    let out = fused(q, k, v, bias);
    if out.is_some() {
        super::engaged::record(super::Kernel::Attention);
    }
    out
}

fn fused(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, bias: &Tensor<4>) -> Option<Tensor<4>> {
    if [q.dtype(), k.dtype(), v.dtype(), bias.dtype()].iter().any(|d| *d != DType::F32) || !super::fused_allowed() {
        return None;
    }
    // The bias is a constant (a mask); a trained one goes through burn's ops, which differentiate it.
    if bias.is_tracked() {
        return None;
    }
    let bias_dims = bias.dims();
    let bias = bias.clone().inner().try_into_primitive::<Flex>().ok()?;
    let ([b, heads, t, d], [kb, kv_heads, keys, kd], [bb, bh, bt, bk]) = (q.dims(), k.dims(), bias_dims);
    let broadcasts = (bb == 1 || bb == b) && bh == 1 && (bt == 1 || bt == t) && bk == keys;
    if !broadcasts || kb != b || kd != d || kv_heads == 0 || heads % kv_heads != 0 || v.dims() != k.dims() {
        return None;
    }
    let flex = |t: &Tensor<4>| t.clone().try_into_primitive::<Flex>().ok();
    if let (Some(q), Some(k), Some(v)) = (flex(q), flex(k), flex(v)) {
        return Some(Tensor::from_primitive::<Flex>(forward(&q, &k, &v, &bias, false).0));
    }
    fn tracked<C: CheckpointStrategy>(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, bias: FlexTensor) -> Option<Tensor<4>>
    where
        burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
    {
        let prim = |t: &Tensor<4>| t.clone().try_into_primitive::<Autodiff<Flex, C>>().ok().map(|t| t.into_parts());
        let ((q, qn), (k, kn), (v, vn)) = (prim(q)?, prim(k)?, prim(v)?);
        let output = match Attention.prepare::<C>([qn, kn, vn]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, probs) = forward(&q, &k, &v, &bias, true);
                let probs = probs.expect("the weights are kept when asked for");
                prep.finish(Saved { q, k, v, probs }, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(&q, &k, &v, &bias, false).0),
        };
        Some(Tensor::from_primitive::<Autodiff<Flex, C>>(output))
    }
    tracked::<NoCheckpointing>(q, k, v, bias.clone()).or_else(|| tracked::<BalancedCheckpointing>(q, k, v, bias))
}

/// The sizes every pass needs.
#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    t: usize,
    keys: usize,
    d: usize,
}

impl Dims {
    fn of(q: &FlexTensor, k: &FlexTensor) -> Self {
        let (qs, ks) = (q.layout().shape(), k.layout().shape());
        Self { batch: qs[0], heads: qs[1], kv_heads: ks[1], t: qs[2], keys: ks[2], d: qs[3] }
    }
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// The `[rows, cols]` matrix of head `(b, h)` of a 4-d tensor (any strides).
fn head(t: &FlexTensor, b: usize, h: usize) -> Mat {
    let s = t.layout().strides();
    let start = t.layout().start_offset() as isize + b as isize * s[0] + h as isize * s[1];
    Mat { ptr: t.storage::<f32>().as_ptr().wrapping_offset(start), row_stride: s[2], col_stride: s[3] }
}

/// The output `[batch, heads, t, d]` and, with `keep_probs` (for backward), the softmax weights
/// `P` `[batch, heads, t, keys]`; without, each task reuses one `[t, keys]` buffer.
fn forward(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, bias: &FlexTensor, keep_probs: bool) -> (FlexTensor, Option<FlexTensor>) {
    let n = Dims::of(q, k);
    let (bias, _) = contiguous(bias.clone());
    // Shapes checked by `attention`.
    let (bias_batch, bias_rows) = (bias.layout().shape()[0], bias.layout().shape()[2]);
    let bias = bias.storage::<f32>();
    let (tk, td) = (n.t * n.keys, n.t * n.d);
    let mut out = vec![0f32; n.batch * n.heads * td];
    let head_forward = |bh: usize, p: &mut [f32], o: &mut [f32]| {
        let (b, h) = (bh / n.heads, bh % n.heads);
        let g = h / n.group();
        // SAFETY: `p` is [t, keys] and `o` is [t, d], this task's own; the inputs outlive the call.
        unsafe { matmul_serial(n.t, n.keys, n.d, head(q, b, h), head(k, b, g).t(), p.as_mut_ptr(), n.keys, false) };
        let bias = &bias[(b % bias_batch) * bias_rows * n.keys..];
        math::simd(|| {
            for (i, row) in p.chunks_mut(n.keys).enumerate() {
                let bias = &bias[(i % bias_rows) * n.keys..][..n.keys];
                row.iter_mut().zip(bias).for_each(|(s, b)| *s += b);
                softmax_row(row);
            }
        });
        unsafe { matmul_serial(n.t, n.d, n.keys, Mat::rows(p, n.keys), head(v, b, g), o.as_mut_ptr(), n.d, false) };
    };
    let tensor = |values, cols| FlexTensor::from_data(TensorData::new(values, [n.batch, n.heads, n.t, cols]));
    let probs = if keep_probs {
        let mut probs = vec![0f32; n.batch * n.heads * tk];
        probs.par_chunks_mut(tk).zip(out.par_chunks_mut(td)).enumerate().for_each(|(bh, (p, o))| head_forward(bh, p, o));
        Some(tensor(probs, n.keys))
    } else {
        out.par_chunks_mut(td).enumerate().for_each_init(|| vec![0f32; tk], |p, (bh, o)| head_forward(bh, p, o));
        None
    };
    (tensor(out, n.d), probs)
}

/// Key/value heads `[b, kv_heads, keys, d]` copied out to `heads` query heads (query head `i`
/// reads key/value head `i / (heads / kv_heads)`): what burn's ops need for grouped-query heads.
pub fn repeat_kv(y: Tensor<4>, heads: usize) -> Tensor<4> {
    let [b, kv_heads, keys, d] = y.dims();
    let group = heads / kv_heads;
    if group == 1 { y } else { y.unsqueeze_dim::<5>(2).expand([b, kv_heads, group, keys, d]).reshape([b, heads, keys, d]) }
}

/// In place, as the fused softmax kernel: a masked score (very negative) gets exactly 0.
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let max = math::max(row);
    row.iter_mut().for_each(|x| *x = math::exp(*x - max));
    let inv = 1.0 / math::sum(row);
    row.iter_mut().for_each(|x| *x *= inv);
}

#[derive(Debug, Clone, Copy)]
struct Attention;

#[derive(Debug, Clone)]
struct Saved {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    probs: FlexTensor,
}

impl Backward<Flex, 3> for Attention {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved { q, k, v, probs } = ops.state;
        let d_out = grads.consume::<Flex>(&ops.node);
        let n = Dims::of(&q, &k);
        let (tk, td, kd) = (n.t * n.keys, n.t * n.d, n.keys * n.d);
        let probs = probs.storage::<f32>();
        let mut dq = vec![0f32; n.batch * n.heads * td];
        let mut dk = vec![0f32; n.batch * n.kv_heads * kd];
        let mut dv = vec![0f32; n.batch * n.kv_heads * kd];
        let group = n.group();
        // One task per key/value head: it owns that head's dK, dV and its query heads' dQ.
        dq.par_chunks_mut(group * td).zip(dk.par_chunks_mut(kd).zip(dv.par_chunks_mut(kd))).enumerate().for_each(|(bg, (dq, (dk, dv)))| {
            let (b, g) = (bg / n.kv_heads, bg % n.kv_heads);
            let mut ds = vec![0f32; tk];
            for j in 0..group {
                let h = g * group + j;
                let p = &probs[(b * n.heads + h) * tk..][..tk];
                let d_o = head(&d_out, b, h);
                // SAFETY: every output is this task's own buffer; the inputs outlive the calls.
                unsafe {
                    matmul_serial(n.keys, n.d, n.t, Mat::rows(p, n.keys).t(), d_o, dv.as_mut_ptr(), n.d, j > 0);
                    matmul_serial(n.t, n.keys, n.d, d_o, head(&v, b, g).t(), ds.as_mut_ptr(), n.keys, false);
                }
                math::simd(|| {
                    for (ds, p) in ds.chunks_mut(n.keys).zip(p.chunks(n.keys)) {
                        let dot = math::dot(ds, p);
                        ds.iter_mut().zip(p).for_each(|(ds, &p)| *ds = p * (*ds - dot));
                    }
                });
                let dq = &mut dq[j * td..][..td];
                unsafe {
                    matmul_serial(n.t, n.d, n.keys, Mat::rows(&ds, n.keys), head(&k, b, g), dq.as_mut_ptr(), n.d, false);
                    matmul_serial(n.keys, n.d, n.t, Mat::rows(&ds, n.keys).t(), head(&q, b, h), dk.as_mut_ptr(), n.d, j > 0);
                }
            }
        });
        let [q_node, k_node, v_node] = ops.parents;
        let tensor = |values, heads, rows| FlexTensor::from_data(TensorData::new(values, [n.batch, heads, rows, n.d]));
        for (node, grad) in
            [(q_node, tensor(dq, n.heads, n.t)), (k_node, tensor(dk, n.kv_heads, n.keys)), (v_node, tensor(dv, n.kv_heads, n.keys))]
        {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::sample_tensor as sample;
    use burn::tensor::Tolerance;

    /// burn's ops, with each key/value head copied out to its query heads.
    fn reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
        let heads = q.dims()[1];
        burn::tensor::activation::softmax(q.matmul(repeat_kv(k, heads).swap_dims(2, 3)) + bias, 3).matmul(repeat_kv(v, heads))
    }

    fn close(a: Tensor<4>, b: Tensor<4>) {
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
    }

    /// A causal + padding bias `[b, 1, t, keys]` or a padding-only one `[b, 1, 1, keys]`.
    fn bias(b: usize, rows: usize, keys: usize, device: &Device) -> Tensor<4> {
        let mut values = vec![0f32; b * rows * keys];
        for (i, v) in values.iter_mut().enumerate() {
            let (batch, row, key) = (i / (rows * keys), (i / keys) % rows, i % keys);
            let causal = rows > 1 && key > row + keys - rows;
            let padded = batch == 1 && key < 2;
            if causal || padded {
                *v = f32::MIN;
            }
        }
        Tensor::<1>::from_floats(values.as_slice(), device).reshape([b, 1, rows, keys])
    }

    /// Values and the gradients of q, k and v equal burn's ops: grouped-query heads (6 query
    /// heads on 2 key/value heads) and plain heads, both bias shapes, strided q (as the models
    /// pass it, heads swapped out of `[b, t, heads, d]`), more keys than queries (a cache).
    #[test]
    fn matches_burn_ops_with_gradients() {
        let device = Device::flex().autodiff();
        for (heads, kv_heads, bias_rows) in [(6, 2, 5), (3, 3, 1), (4, 1, 5)] {
            let (b, t, keys, d) = (2, 5, 7, 8);
            let run = |ours: bool| {
                let q = sample([b, t, heads, d], 1, &device).require_grad();
                let k = sample([b, kv_heads, keys, d], 2, &device).require_grad();
                let v = sample([b, kv_heads, keys, d], 3, &device).require_grad();
                let qh = q.clone().swap_dims(1, 2);
                let mask = bias(b, bias_rows, keys, &device);
                let y = if ours { attention(&qh, &k, &v, &mask).unwrap() } else { reference(qh, k.clone(), v.clone(), mask) };
                let grads = (y.clone() * sample([b, heads, t, d], 4, &device).sin()).sum().backward();
                [y, q.grad(&grads).unwrap().swap_dims(1, 2), k.grad(&grads).unwrap(), v.grad(&grads).unwrap()]
            };
            for (ours, reference) in run(true).into_iter().zip(run(false)) {
                close(ours, reference);
            }
        }
    }

    /// Without autodiff, and with only some inputs tracked (a frozen key path).
    #[test]
    fn untracked_and_partly_tracked() {
        let device = Device::flex();
        let (q, k, v) = (sample([2, 4, 3, 8], 1, &device), sample([2, 2, 6, 8], 2, &device), sample([2, 2, 6, 8], 3, &device));
        let mask = bias(2, 1, 6, &device);
        close(attention(&q, &k, &v, &mask).unwrap(), reference(q, k, v, mask));

        let device = Device::flex().autodiff();
        let q = sample([1, 2, 3, 4], 1, &device).require_grad();
        let (k, v) = (sample([1, 2, 3, 4], 2, &device), sample([1, 2, 3, 4], 3, &device));
        let mask = bias(1, 3, 3, &device);
        let grads = attention(&q, &k, &v, &mask).unwrap().sum().backward();
        let reference_grads = reference(q.clone(), k.clone(), v.clone(), mask).sum().backward();
        close(q.grad(&grads).unwrap(), q.grad(&reference_grads).unwrap());
        assert!(k.grad(&grads).is_none());
    }

    /// A trained bias, and a bias per head, are left to burn's ops.
    #[test]
    fn trained_or_per_head_bias_is_declined() {
        let device = Device::flex().autodiff();
        let q = sample([1, 2, 3, 4], 1, &device);
        let bias = Tensor::<4>::zeros([1, 1, 3, 3], &device);
        assert!(attention(&q, &q, &q, &bias).is_some());
        assert!(attention(&q, &q, &q, &bias.clone().require_grad()).is_none());
        assert!(attention(&q, &q, &q, &Tensor::zeros([1, 2, 3, 3], &device)).is_none());
    }
}
