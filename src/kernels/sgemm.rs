//! f32 matrix products for the fused kernels, on the `gemm` crate (what burn-flex uses too),
//! called so that it runs at speed.
//!
//! burn-flex hands a 3-d product to `gemm` batch by batch, and a product with few rows to
//! `gemm`'s own threading; on the decoder job's shapes (2 cores) that ran at 110-130 GFLOP/s for
//! `[2048, 576] x [576, 1536]` and at 27-33 GFLOP/s for attention's `[256, 64] x [64, 256]`.
//! Here each of rayon's threads gets one block of output rows (or one attention head) and runs
//! `gemm` single-threaded on it: 190-215 GFLOP/s on the same linears and about 135 on the
//! attention products. (OpenBLAS 0.3.34, tried the same way, was within 5% on the linears and
//! slower per head, so there is no second engine.)

use rayon::prelude::*;

/// A read-only f32 matrix: `ptr[i * row_stride + j * col_stride]` is element `(i, j)`.
#[derive(Clone, Copy, Debug)]
pub struct Mat {
    pub ptr: *const f32,
    pub row_stride: isize,
    pub col_stride: isize,
}

// SAFETY: a `Mat` is only read, and its callers keep the data alive for the product.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

impl Mat {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &[f32], cols: usize) -> Self {
        Self { ptr: data.as_ptr(), row_stride: cols as isize, col_stride: 1 }
    }
    /// The transpose (a view: strides swapped).
    pub fn t(self) -> Self {
        Self { ptr: self.ptr, row_stride: self.col_stride, col_stride: self.row_stride }
    }
    /// The view starting at row `i`.
    fn at_row(self, i: usize) -> Self {
        Self { ptr: self.ptr.wrapping_offset(i as isize * self.row_stride), ..self }
    }
    /// The view starting at column `j`.
    fn at_col(self, j: usize) -> Self {
        Self { ptr: self.ptr.wrapping_offset(j as isize * self.col_stride), ..self }
    }
}

/// `c = a b` (or `c += a b` with `accumulate`) on this thread, `a` `[m, k]`, `b` `[k, n]`, `c`
/// row-major `[m, n]` with row stride `ldc`.
///
/// # Safety
/// `a`, `b` and `c` must be valid for the shapes and strides given, and `c` not overlap them.
#[allow(clippy::too_many_arguments)] // a BLAS-style call: shape, operands, output, mode
pub unsafe fn matmul_serial(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut f32, ldc: usize, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), n).fill(0.0) };
            }
        }
        return;
    }
    unsafe {
        gemm::gemm(
            m, n, k, c, 1, ldc as isize, accumulate, a.ptr, a.col_stride, a.row_stride, b.ptr, b.col_stride,
            b.row_stride, 1.0f32, 1.0f32, false, false, false, gemm::Parallelism::None,
        )
    };
}

/// `c = a b` (or `c += a b`) over all of rayon's threads, `c` row-major `[m, n]`, contiguous.
pub fn matmul(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], accumulate: bool) {
    assert_eq!(c.len(), m * n, "output buffer of the wrong size");
    // SAFETY: `c` holds m * n values.
    unsafe { par_matmul(m, n, k, a, b, c.as_mut_ptr(), accumulate) };
}

/// `a b` as a new row-major `[m, n]` buffer, written once (no zero-fill pass first).
pub fn product(m: usize, n: usize, k: usize, a: Mat, b: Mat) -> Vec<f32> {
    let mut c = Vec::with_capacity(m * n);
    // SAFETY: the product writes all m * n values (it does not read `c`) before the length is set.
    unsafe {
        par_matmul(m, n, k, a, b, c.as_mut_ptr(), false);
        c.set_len(m * n);
    }
    c
}

/// The output rows split into one block per thread (the columns, when there are few rows).
///
/// # Safety
/// `c` must be valid for m * n writes (and reads, with `accumulate`).
unsafe fn par_matmul(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut f32, accumulate: bool) {
    let threads = rayon::current_num_threads().max(1);
    let c_addr = c as usize;
    if m < 128 && n >= 256 {
        let cols = n.div_ceil(threads).max(64);
        (0..n.div_ceil(cols)).into_par_iter().for_each(|block| {
            let j = block * cols;
            // SAFETY: each task writes its own columns of `c`.
            unsafe { matmul_serial(m, cols.min(n - j), k, a, b.at_col(j), (c_addr as *mut f32).add(j), n, accumulate) };
        });
    } else {
        let rows = m.div_ceil(threads).max(64).next_multiple_of(16);
        (0..m.div_ceil(rows)).into_par_iter().for_each(|block| {
            let i = block * rows;
            // SAFETY: each task writes its own rows of `c`.
            unsafe { matmul_serial(rows.min(m - i), n, k, a.at_row(i), b, (c_addr as *mut f32).add(i * n), n, accumulate) };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 37 + seed * 11) % 101) as f32 - 50.0) / 25.0).collect()
    }

    fn reference(m: usize, n: usize, k: usize, a: Mat, b: Mat) -> Vec<f64> {
        let at = |x: Mat, i: usize, j: usize| unsafe { *x.ptr.offset(i as isize * x.row_stride + j as isize * x.col_stride) as f64 };
        (0..m * n).map(|ij| (0..k).map(|p| at(a, ij / n, p) * at(b, p, ij % n)).sum()).collect()
    }

    /// Every layout the kernels pass (plain, transposed operands, column blocks, accumulation),
    /// against an f64 reference.
    #[test]
    fn products_match_f64_reference() {
        for (m, n, k) in [(3, 5, 7), (200, 300, 70), (40, 520, 33), (130, 17, 0)] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let (at, bt) = (values(m * k, 1), values(k * n, 2));
            for (a, b) in [
                (Mat::rows(&a, k), Mat::rows(&b, n)),
                (Mat::rows(&at, m).t(), Mat::rows(&bt, k).t()),
            ] {
                let expected = reference(m, n, k, a, b);
                let mut c = values(m * n, 3);
                let before = c.clone();
                matmul(m, n, k, a, b, &mut c, true);
                for ((c, e), b) in c.iter().zip(&expected).zip(&before) {
                    assert!((*c as f64 - e - *b as f64).abs() < 1e-3, "{m}x{n}x{k}: {c} vs {}", e + *b as f64);
                }
                let c = product(m, n, k, a, b);
                assert!(c.iter().zip(&expected).all(|(c, e)| (*c as f64 - e).abs() < 1e-3));
            }
        }
    }
}
