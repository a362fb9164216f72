//! `y = x Wᵀ` for a block-quantized frozen `W` (`[d_out, d_in]`), read as stored, with the
//! backward pass to the input (`dx = dy W`; the base weight gets no gradient, QLoRA's recipe).
//!
//! A decoder generating multiplies a few rows by every weight once per token, so its speed is
//! the speed of reading the weights: here each block is widened to f32 in registers and used at
//! once, so a Q4_1 model reads 5 bits per weight where the f32 copy read 32. Products with more
//! rows (a prompt, a training batch) are bound by arithmetic instead: they widen a slab of rows
//! into an f32 buffer and run it through [`sgemm`](super::sgemm), the same engine as f32 weights.

use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{Shape, TensorData, module};
use rayon::prelude::*;

use super::sgemm::{Mat, matmul_serial};
use super::{FlexOp, Kernel, contiguous, on_flex};
use crate::quantization::{BLOCK, BlockFormat, QuantizedMatrix};

/// Up to this many rows use the widen-in-registers dot products; more go through `sgemm`.
const FEW_ROWS: usize = 8;
/// Weight rows (or columns, backward) per `sgemm` task: a 64 x 576 slab is 144 KiB of f32.
const SLAB: usize = 64;

/// `x Wᵀ` over the last dimension of `x` (`[.., d_in]` -> `[.., d_out]`).
pub fn linear<const D: usize>(x: Tensor<D>, w: &Arc<QuantizedMatrix>) -> Tensor<D> {
    on_flex(&x, QuantizedLinear(w.clone())).unwrap_or_else(|| {
        // Off the flex backend (or with the fused kernels off): an f32 copy for this product.
        let device = x.device();
        let dense = Tensor::<2>::from_data(TensorData::new(w.dequantize(), [w.rows, w.cols]), &device);
        module::linear(x, dense.transpose(), None)
    })
}

#[derive(Clone, Debug)]
struct QuantizedLinear(Arc<QuantizedMatrix>);

impl FlexOp for QuantizedLinear {
    const KERNEL: Kernel = Kernel::QuantizedLinear;

    fn forward(self, x: FlexTensor) -> (FlexTensor, ()) {
        let (x, numel) = contiguous(x);
        let w = &self.0;
        let rows = numel / w.cols.max(1);
        let y = product_wt(&x.storage::<f32>()[..numel], rows, w);
        (FlexTensor::from_data(TensorData::new(y, with_last(x.layout().shape(), w.rows))), ())
    }
}

impl Backward<Flex, 1> for QuantizedLinear {
    type State = ();

    fn backward(self, ops: Ops<(), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let w = self.0;
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
            let (dy, numel) = contiguous(dy);
            let rows = numel / w.rows.max(1);
            let dx = product_w(&dy.storage::<f32>()[..numel], rows, &w);
            FlexTensor::from_data(TensorData::new(dx, with_last(dy.layout().shape(), w.cols)))
        });
    }
}

fn with_last(dims: &[usize], last: usize) -> Shape {
    let mut dims = dims.to_vec();
    *dims.last_mut().expect("a linear input has at least one dimension") = last;
    Shape::from(dims)
}

/// `x Wᵀ`: `x` row-major `[rows, w.cols]`, the result `[rows, w.rows]`.
pub fn product_wt(x: &[f32], rows: usize, w: &QuantizedMatrix) -> Vec<f32> {
    assert_eq!(x.len(), rows * w.cols, "input of the wrong size");
    let out = w.rows;
    if rows > FEW_ROWS {
        let mut y = vec![0f32; rows * out];
        let y_addr = y.as_mut_ptr() as usize;
        (0..out.div_ceil(SLAB)).into_par_iter().for_each(|slab| {
            let (first, n) = (slab * SLAB, SLAB.min(out - slab * SLAB));
            let mut wide = vec![0f32; n * w.cols];
            for (i, row) in wide.chunks_exact_mut(w.cols).enumerate() {
                w.dequantize_row(first + i, row);
            }
            // SAFETY: each task writes its own columns `first..first + n` of `y`.
            unsafe {
                let c = (y_addr as *mut f32).add(first);
                matmul_serial(rows, n, w.cols, Mat::rows(x, w.cols), Mat::rows(&wide, w.cols).t(), c, out, false);
            }
        });
        return y;
    }
    // Few rows: the output transposed (`[out, rows]`), each weight row's dots written together.
    let mut yt = vec![0f32; out * rows];
    let task = (out / (4 * rayon::current_num_threads().max(1))).clamp(16, 256);
    yt.par_chunks_mut(task * rows.max(1)).enumerate().for_each(|(t, chunk)| {
        for (i, dots) in chunk.chunks_exact_mut(rows.max(1)).enumerate() {
            row_dots(w, t * task + i, x, rows, dots);
        }
    });
    if rows <= 1 {
        return yt;
    }
    let mut y = vec![0f32; rows * out];
    for (o, dots) in yt.chunks_exact(rows).enumerate() {
        for (r, &v) in dots.iter().enumerate() {
            y[r * out + o] = v;
        }
    }
    y
}

/// `dy W`: `dy` row-major `[rows, w.rows]`, the result `[rows, w.cols]`.
pub fn product_w(dy: &[f32], rows: usize, w: &QuantizedMatrix) -> Vec<f32> {
    assert_eq!(dy.len(), rows * w.rows, "gradient of the wrong size");
    let cols = w.cols;
    let mut dx = vec![0f32; rows * cols];
    let dx_addr = dx.as_mut_ptr() as usize;
    let slab_blocks = (SLAB / BLOCK).max(1);
    let blocks = w.blocks_per_row();
    (0..blocks.div_ceil(slab_blocks)).into_par_iter().for_each(|slab| {
        let (first_block, nb) = (slab * slab_blocks, slab_blocks.min(blocks - slab * slab_blocks));
        let n = nb * BLOCK;
        // Columns `first..first + n` of every weight row, widened: `[w.rows, n]`.
        let mut wide = vec![0f32; w.rows * n];
        let mut row = vec![0f32; cols];
        for (i, out) in wide.chunks_exact_mut(n).enumerate() {
            w.dequantize_row(i, &mut row);
            out.copy_from_slice(&row[first_block * BLOCK..first_block * BLOCK + n]);
        }
        // SAFETY: each task writes its own columns of `dx`.
        unsafe {
            let c = (dx_addr as *mut f32).add(first_block * BLOCK);
            matmul_serial(rows, n, w.rows, Mat::rows(dy, w.rows), Mat::rows(&wide, n), c, cols, false);
        }
    });
    dx
}

/// `dots[r] = x_r · W_o` for the `rows` rows of `x`.
fn row_dots(w: &QuantizedMatrix, o: usize, x: &[f32], rows: usize, dots: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
        macro_rules! rows_of {
            ($($m:literal)*) => {
                match rows {
                    // SAFETY: the features were just detected; `x` holds `rows` rows of `w.cols`.
                    $($m => return dots.copy_from_slice(&unsafe { avx512::dots::<$m>(w, o, x.as_ptr()) }),)*
                    _ => unreachable!("at most FEW_ROWS rows"),
                }
            };
        }
        rows_of!(1 2 3 4 5 6 7 8);
    }
    let mut row = vec![0f32; w.cols];
    w.dequantize_row(o, &mut row);
    for (dot, x) in dots.iter_mut().zip(x.chunks_exact(w.cols)) {
        *dot = super::math::dot(&row, x);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{BLOCK, BlockFormat, QuantizedMatrix};

    /// The dots of weight row `o` with `M` rows of `x` (`M * w.cols` values at `x`): each
    /// block widened to two vectors of 16 floats, then two fused multiply-adds per row, into
    /// two sums per row (one chain of dependent adds per sum would wait on its latency).
    ///
    /// # Safety
    /// AVX-512F and FMA present; `x` valid for `M * w.cols` reads.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn dots<const M: usize>(w: &QuantizedMatrix, o: usize, x: *const f32) -> [f32; M] {
        let mut sums = [[_mm512_setzero_ps(); 2]; M];
        let (codes, params) = w.row(o);
        let code_bytes = w.format.code_bytes();
        let nibbles = _mm_set1_epi8(15);
        // Q6_K: lane `i` takes bits `2i..2i + 2` of 32 high bits, moved to bits 4..6.
        let pair_shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let (pair_mask, centre_32) = (_mm512_set1_epi32(3), _mm512_set1_epi32(32));
        for (j, &[scale, offset]) in params.iter().enumerate() {
            let (d, offset) = (_mm512_set1_ps(scale), _mm512_set1_ps(offset));
            // SAFETY: block `j`'s codes are `code_bytes` bytes at `j * code_bytes` of the row's.
            let (lo, hi) = unsafe {
                let q = codes.as_ptr().add(j * code_bytes);
                // The low 4 bits of values 0..16 and of 16..32, as 32-bit lanes.
                let low_bits = || {
                    let q = _mm_loadu_si128(q.cast());
                    (_mm512_cvtepu8_epi32(_mm_and_si128(q, nibbles)), _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), nibbles)))
                };
                match w.format {
                    BlockFormat::Q8_0 => {
                        let lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.cast())));
                        let hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.add(16).cast())));
                        (_mm512_mul_ps(lo, d), _mm512_mul_ps(hi, d))
                    }
                    BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q4_K => {
                        let (lo, hi) = low_bits();
                        (_mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), d, offset), _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), d, offset))
                    }
                    BlockFormat::Q5_0 => {
                        // Bit `i` of the fifth bits masks lane `i`: add 16 there.
                        let (lo, hi) = low_bits();
                        let fifth = q.add(16).cast::<u32>().read_unaligned();
                        let sixteen = _mm512_set1_epi32(16);
                        let lo = _mm512_mask_add_epi32(lo, fifth as u16, lo, sixteen);
                        let hi = _mm512_mask_add_epi32(hi, (fifth >> 16) as u16, hi, sixteen);
                        (_mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), d, offset), _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), d, offset))
                    }
                    BlockFormat::Q6_K => {
                        // Codes less 32, times the scale of each half (`d`, then `offset`).
                        let (lo, hi) = low_bits();
                        let high = q.add(16).cast::<u64>().read_unaligned();
                        let top = |bits: u64| {
                            let pairs = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(bits as u32 as i32), pair_shifts), pair_mask);
                            _mm512_slli_epi32(pairs, 4)
                        };
                        let lo = _mm512_sub_epi32(_mm512_or_si512(lo, top(high)), centre_32);
                        let hi = _mm512_sub_epi32(_mm512_or_si512(hi, top(high >> 32)), centre_32);
                        (_mm512_mul_ps(_mm512_cvtepi32_ps(lo), d), _mm512_mul_ps(_mm512_cvtepi32_ps(hi), offset))
                    }
                }
            };
            for (r, sum) in sums.iter_mut().enumerate() {
                // SAFETY: block `j` of row `r` of `x` is inside its `M * w.cols` values.
                unsafe {
                    let xr = x.add(r * w.cols + j * BLOCK);
                    sum[0] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xr), sum[0]);
                    sum[1] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xr.add(16)), sum[1]);
                }
            }
        }
        sums.map(|[a, b]| _mm512_reduce_add_ps(_mm512_add_ps(a, b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::sample_tensor as sample;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((((i * 53 + seed * 7) % 97) as f32) - 48.0) / 31.0).collect()
    }

    /// `a bᵀ` in f64, `a` `[m, k]`, `b` `[n, k]`.
    fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[j * k + p] as f64).sum::<f64>() as f32;
            }
        }
        c
    }

    fn assert_close(ours: &[f32], exact: &[f32], what: &str) {
        assert_eq!(ours.len(), exact.len());
        let scale = exact.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = ours.iter().zip(exact).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 2e-5 * scale, "{what}: worst difference {worst} at scale {scale}");
    }

    /// Both products of every format, at every row count of the dot path and past it, on
    /// shapes with odd block and row counts, equal the products of the dequantized matrix.
    #[test]
    fn products_equal_the_dequantized_products() {
        let (out, cols) = (67, 5 * BLOCK);
        for format in BlockFormat::QUANTIZABLE {
            let w = QuantizedMatrix::quantize(format, out, cols, &values(out * cols, 1), "w").unwrap();
            let dense = w.dequantize();
            let wt: Vec<f32> = (0..cols * out).map(|i| dense[(i % out) * cols + i / out]).collect(); // [cols, out]
            for rows in [1, 2, 3, 7, 8, 9, 40] {
                let x = values(rows * cols, rows);
                assert_close(&product_wt(&x, rows, &w), &reference(&x, &dense, rows, out, cols), &format!("{format} x Wᵀ, {rows} rows"));
                let dy = values(rows * out, rows + 1);
                assert_close(&product_w(&dy, rows, &w), &reference(&dy, &wt, rows, cols, out), &format!("{format} dy W, {rows} rows"));
            }
        }
    }

    /// The op's value and input gradient equal burn's linear on the dequantized weight, and
    /// the kernel really ran (a fallback would pass the value check too).
    #[test]
    fn op_matches_burn_linear_with_gradients() {
        let device = Device::flex().autodiff();
        let (out, cols) = (48, 64);
        let w = Arc::new(QuantizedMatrix::quantize(BlockFormat::Q4_1, out, cols, &values(out * cols, 3), "w").unwrap());
        let dense = Tensor::<2>::from_data(TensorData::new(w.dequantize(), [out, cols]), &device).transpose();
        let run = |ours: bool| {
            let x = sample([2, 5, cols], 1, &device).require_grad();
            let y = if ours { linear(x.clone(), &w) } else { module::linear(x.clone(), dense.clone(), None) };
            let grads = (y.clone() * sample([2, 5, out], 2, &device).sin()).sum().backward();
            [y.into_data(), x.grad(&grads).unwrap().into_data()]
        };
        let before = crate::kernels::fused_calls(Kernel::QuantizedLinear);
        let ours = run(true);
        assert!(crate::kernels::fused_calls(Kernel::QuantizedLinear) > before, "the quantized kernel did not run");
        for (a, b) in ours.iter().zip(run(false)) {
            a.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(1e-4));
        }
    }
}
