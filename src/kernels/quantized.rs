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
use burn::tensor::{Shape, TensorData};
use rayon::prelude::*;

use super::sgemm::{Mat, matmul_serial};
use super::{FlexOp, Kernel, contiguous, on_flex};
use crate::quantization::{BLOCK, BlockFormat, QuantizedMatrix, RowScales};

/// Up to this many rows use the widen-in-registers dot products; more go through `sgemm`.
const FEW_ROWS: usize = 8;
/// At most this many weight rows (or columns, backward) per `sgemm` task: a 64 x 576 slab is
/// 144 KiB of f32.
const SLAB: usize = 64;

/// The slab height (a multiple of `unit`, at most [`SLAB`]) that splits `n` rows most evenly
/// over `threads`: the largest of those whose busiest thread gets the fewest rows. With 2
/// threads a 576-row matrix takes 12 slabs of 48 (6 each), not 9 of 64 (5 and 4), and a
/// 192-row one 4 slabs of 48, not 3 of 64.
fn slab_height(n: usize, unit: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    let busiest = |h: usize| n.div_ceil(h).div_ceil(threads) * h;
    (1..=SLAB / unit).rev().map(|k| k * unit).min_by_key(|&h| busiest(h)).unwrap_or(unit)
}

/// `x Wᵀ` over the last dimension of `x` (`[.., d_in]` -> `[.., d_out]`) on the flex backend's
/// f32 tensors; `None` elsewhere (or with the fused kernels off), where the caller multiplies
/// by the weight on `x`'s device (`adapters::FrozenBlocks::product`).
pub fn linear<const D: usize>(x: &Tensor<D>, w: &Arc<QuantizedMatrix>) -> Option<Tensor<D>> {
    on_flex(x, QuantizedLinear(w.clone()))
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
    product_wt_using(simd(), x, rows, w)
}

fn product_wt_using(simd: Simd, x: &[f32], rows: usize, w: &QuantizedMatrix) -> Vec<f32> {
    assert_eq!(x.len(), rows * w.cols, "input of the wrong size");
    let out = w.rows;
    if rows > FEW_ROWS {
        // Written once by the products (no zero-fill pass first); the length is set after.
        let mut y = Vec::with_capacity(rows * out);
        let y_addr = y.as_mut_ptr() as usize;
        let height = slab_height(out, 16, rayon::current_num_threads());
        (0..out.div_ceil(height)).into_par_iter().for_each(|slab| {
            let (first, n) = (slab * height, height.min(out - slab * height));
            with_scratch(n * w.cols, |wide| {
                for (i, row) in wide.chunks_exact_mut(w.cols).enumerate() {
                    widen_blocks(simd, w, first + i, 0, row);
                }
                // SAFETY: each task writes its own columns `first..first + n` of `y`, every row.
                unsafe {
                    let c = (y_addr as *mut f32).add(first);
                    matmul_serial(rows, n, w.cols, Mat::rows(x, w.cols), Mat::rows(wide, w.cols).t(), c, out, false);
                }
            });
        });
        // SAFETY: the slabs cover every column of every row.
        unsafe { y.set_len(rows * out) };
        return y;
    }
    // Few rows: the output transposed (`[out, rows]`), each weight row's dots written together.
    let mut yt = vec![0f32; out * rows];
    let task = (out / (4 * rayon::current_num_threads().max(1))).clamp(16, 256);
    yt.par_chunks_mut(task * rows.max(1)).enumerate().for_each(|(t, chunk)| {
        let mut scratch = if simd == Simd::Portable { vec![0f32; w.cols] } else { Vec::new() };
        for (i, dots) in chunk.chunks_exact_mut(rows.max(1)).enumerate() {
            row_dots(simd, w, t * task + i, x, rows, dots, &mut scratch);
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
    product_w_using(simd(), dy, rows, w)
}

fn product_w_using(simd: Simd, dy: &[f32], rows: usize, w: &QuantizedMatrix) -> Vec<f32> {
    assert_eq!(dy.len(), rows * w.rows, "gradient of the wrong size");
    let cols = w.cols;
    let mut dx = Vec::with_capacity(rows * cols);
    let dx_addr = dx.as_mut_ptr() as usize;
    let blocks = w.blocks_per_row();
    let slab_blocks = slab_height(blocks * BLOCK, BLOCK, rayon::current_num_threads()) / BLOCK;
    (0..blocks.div_ceil(slab_blocks)).into_par_iter().for_each(|slab| {
        let (first_block, nb) = (slab * slab_blocks, slab_blocks.min(blocks - slab * slab_blocks));
        let n = nb * BLOCK;
        // Columns `first..first + n` of every weight row, widened: `[w.rows, n]`.
        with_scratch(w.rows * n, |wide| {
            for (i, out) in wide.chunks_exact_mut(n).enumerate() {
                widen_blocks(simd, w, i, first_block, out);
            }
            // SAFETY: each task writes its own columns of `dx`, every row.
            unsafe {
                let c = (dx_addr as *mut f32).add(first_block * BLOCK);
                matmul_serial(rows, n, w.rows, Mat::rows(dy, w.rows), Mat::rows(wide, n), c, cols, false);
            }
        });
    });
    // SAFETY: the slabs cover every column of every row.
    unsafe { dx.set_len(rows * cols) };
    dx
}

/// Runs `f` on this thread's scratch buffer of `len` floats (contents unspecified), which
/// stays allocated between calls: the slabs are written whole, so no zero-fill is needed.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            f(&mut buffer[..len])
        }
        // In use further up this thread's stack (a task rayon stole while `f` waited).
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// `dots[r] = x_r · W_o` for the `rows` rows of `x`: AVX-512 or AVX2 where the CPU has it,
/// otherwise the row widened into `scratch` (`w.cols` long) and dotted.
fn row_dots(simd: Simd, w: &QuantizedMatrix, o: usize, x: &[f32], rows: usize, dots: &mut [f32], scratch: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! rows_of {
            ($isa:ident) => {
                match rows {
                    // SAFETY: `simd` is at most what `available_simd` found; `x` holds `rows` rows of `w.cols`.
                    1 => return dots.copy_from_slice(&unsafe { $isa::dots::<1>(w, o, x.as_ptr()) }),
                    2 => return dots.copy_from_slice(&unsafe { $isa::dots::<2>(w, o, x.as_ptr()) }),
                    3 => return dots.copy_from_slice(&unsafe { $isa::dots::<3>(w, o, x.as_ptr()) }),
                    4 => return dots.copy_from_slice(&unsafe { $isa::dots::<4>(w, o, x.as_ptr()) }),
                    5 => return dots.copy_from_slice(&unsafe { $isa::dots::<5>(w, o, x.as_ptr()) }),
                    6 => return dots.copy_from_slice(&unsafe { $isa::dots::<6>(w, o, x.as_ptr()) }),
                    7 => return dots.copy_from_slice(&unsafe { $isa::dots::<7>(w, o, x.as_ptr()) }),
                    8 => return dots.copy_from_slice(&unsafe { $isa::dots::<8>(w, o, x.as_ptr()) }),
                    _ => unreachable!("at most FEW_ROWS rows"),
                }
            };
        }
        match simd {
            Simd::Avx512 => rows_of!(avx512),
            Simd::Avx2 => rows_of!(avx2),
            Simd::Portable => {}
        }
    }
    w.dequantize_row(o, scratch);
    for (dot, x) in dots.iter_mut().zip(x.chunks_exact(w.cols)) {
        *dot = super::math::dot(scratch, x);
    }
}

/// Blocks `first_block..` of row `o` of `w` widened into `out` (as many blocks as it holds),
/// with `simd`'s instructions.
fn widen_blocks(simd: Simd, w: &QuantizedMatrix, o: usize, first_block: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd != Simd::Portable {
        // SAFETY: AVX-512 CPUs have AVX2; `simd` is at most what `available_simd` found.
        return unsafe { avx2::widen(w, o, first_block, out) };
    }
    for (j, out) in (first_block..).zip(out.chunks_exact_mut(BLOCK)) {
        w.block(o, j).widen(w.format, out);
    }
}

/// The instruction set the few-row dots use.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Simd {
    Avx512,
    Avx2,
    Portable,
}

/// What this CPU offers, unless `REPLORA_QUANTIZED_SIMD` (`avx512`, `avx2` or `portable`) asks for
/// less (to compare the paths on one machine); read once.
fn simd() -> Simd {
    static CHOSEN: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let available = available_simd();
        match std::env::var("REPLORA_QUANTIZED_SIMD").as_deref() {
            Ok("portable") => Simd::Portable,
            Ok("avx2") if available != Simd::Portable => Simd::Avx2,
            _ => available,
        }
    })
}

fn available_simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        // Every CPU with AVX2 and FMA has F16C (the products widen f16 scales with it).
        if has!("fma") && has!("f16c") && has!("avx512f") {
            return Simd::Avx512;
        }
        if has!("fma") && has!("f16c") && has!("avx2") {
            return Simd::Avx2;
        }
    }
    Simd::Portable
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

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

    /// `[rows, 5 blocks]` (3 super-blocks for Q4_K and Q6_K) of stored blocks with every code
    /// bit random and random finite f16 scales of either sign, up to 1/16; 16-bit floats of
    /// random sign, mantissa and magnitude (2^-5 to 2^4, so that no sum overflows).
    fn random_blocks(format: BlockFormat, rows: usize) -> QuantizedMatrix {
        let (per_block, block_bytes) = format.stored_block();
        let cols = if per_block == BLOCK { 5 * BLOCK } else { 3 * per_block };
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut byte = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        if format.is_16_bit_float() {
            let values: Vec<f32> =
                (0..rows * cols).map(|_| (byte() as f32 - 127.5) / 64.0 * 2f32.powi(i32::from(byte() % 8) - 4)).collect();
            return QuantizedMatrix::quantize(format, rows, cols, &values, "w").unwrap();
        }
        let scales_at: &[usize] = match format {
            BlockFormat::Q4_1 | BlockFormat::Q4_K => &[0, 2],
            BlockFormat::Q6_K => &[208],
            _ => &[0],
        };
        let mut data = Vec::new();
        for _ in 0..rows * cols / per_block {
            let mut block: Vec<u8> = (0..block_bytes).map(|_| byte()).collect();
            for &at in scales_at {
                let scale = (byte() as f32 - 127.5) / 2048.0;
                block[at..at + 2].copy_from_slice(&half::f16::from_f32(scale).to_le_bytes());
            }
            data.extend(block);
        }
        QuantizedMatrix::from_blocks(format, rows, cols, &data, "w").unwrap()
    }

    /// Every instruction set of the few-row dots this CPU can run.
    fn simd_paths() -> Vec<Simd> {
        let all = [Simd::Avx512, Simd::Avx2, Simd::Portable];
        all[all.iter().position(|&s| s == available_simd()).unwrap()..].to_vec()
    }

    /// Both products of every format, at every row count of the dot path (on each instruction
    /// set this CPU has) and past it, on shapes with odd block and row counts, equal the
    /// products of the dequantized matrix.
    #[test]
    fn products_equal_the_dequantized_products() {
        let out = 67;
        for format in BlockFormat::ALL {
            let w = random_blocks(format, out);
            let cols = w.cols;
            let dense = w.dequantize();
            let wt: Vec<f32> = (0..cols * out).map(|i| dense[(i % out) * cols + i / out]).collect(); // [cols, out]
            for rows in [1, 2, 3, 4, 5, 7, 8, 9, 40] {
                let x = values(rows * cols, rows);
                for simd in simd_paths() {
                    let what = format!("{format} x Wᵀ, {rows} rows, {simd:?}");
                    assert_close(&product_wt_using(simd, &x, rows, &w), &reference(&x, &dense, rows, out, cols), &what);
                }
                let dy = values(rows * out, rows + 1);
                for simd in simd_paths() {
                    let what = format!("{format} dy W, {rows} rows, {simd:?}");
                    assert_close(&product_w_using(simd, &dy, rows, &w), &reference(&dy, &wt, rows, cols, out), &what);
                }
            }
        }
    }

    #[test]
    fn slabs_split_the_rows_evenly_over_the_threads() {
        assert_eq!(slab_height(576, 16, 2), 48);
        assert_eq!(slab_height(192, 16, 2), 48);
        assert_eq!(slab_height(1536, 16, 2), 64);
        assert_eq!(slab_height(576, 16, 1), 64);
        assert_eq!(slab_height(576, 32, 2), 32);
        assert_eq!(slab_height(20, 16, 4), 16);
    }

    /// The SIMD widening gives `dequantize_row`'s values exactly (`==`: zeros of either sign).
    #[test]
    fn widened_rows_equal_the_dequantized_rows() {
        for format in BlockFormat::ALL {
            let w = random_blocks(format, 3);
            let (mut ours, mut exact) = (vec![0f32; w.cols], vec![0f32; w.cols]);
            for simd in simd_paths() {
                for o in 0..w.rows {
                    widen_blocks(simd, &w, o, 0, &mut ours);
                    w.dequantize_row(o, &mut exact);
                    assert!(ours == exact, "{format} row {o} widened with {simd:?}");
                }
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
            let y = match ours {
                true => linear(&x, &w).expect("the fused path runs on flex"),
                false => burn::tensor::module::linear(x.clone(), dense.clone(), None),
            };
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
