//! f32 matrix products for the fused kernels, on the `gemm` crate (what burn-flex uses too),
//! called so that it runs at speed.
//!
//! burn-flex hands a 3-d product to `gemm` batch by batch, and a product with few rows to
//! `gemm`'s own threading; on the decoder job's shapes (2 cores) that ran at 110-130 GFLOP/s for
//! `[2048, 576] x [576, 1536]` and at 27-33 GFLOP/s for attention's `[256, 64] x [64, 256]`.
//! Here each of rayon's threads gets one block of output rows (or one attention head) and runs
//! `gemm` single-threaded on it: 190-215 GFLOP/s on the same linears and about 135 on the
//! attention products. (OpenBLAS 0.3.34, tried the same way, was within 5% on the linears and
//! slower per head, so there is no second engine.) Products of at most `FEW_ROWS` rows (a
//! decoder generating) are bound by reading `b`, not by arithmetic, and skip `gemm`: see
//! `few_rows` and `few_rows_dot`.

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
    if m <= FEW_ROWS && b.col_stride == 1 {
        unsafe { few_rows(m, n, k, a, b, c, ldc, accumulate) };
        return;
    }
    if m <= FEW_ROWS && b.row_stride == 1 {
        unsafe { few_rows_dot(m, n, k, a, b, c, ldc, accumulate) };
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
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a.ptr,
            a.col_stride,
            a.row_stride,
            b.ptr,
            b.col_stride,
            b.row_stride,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
}

/// Up to this many rows of `a`, [`few_rows`] streams `b` once instead of calling `gemm`.
const FEW_ROWS: usize = 8;

/// Whether this CPU runs the AVX-512 versions (checked once, cached by std).
#[cfg(target_arch = "x86_64")]
fn avx512_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
}

/// `c = a b` (or `+=`) for a few rows of `a` and a row-major `b`: the decoder's products while
/// generating (one row per sequence). They are bound by reading `b`; `gemm` read it at 14-16
/// GB/s on SmolLM2's layer shapes, where this loop (four rows of `b` per pass over an output
/// tile held in L1) reads it near the machine's bandwidth.
///
/// # Safety
/// As [`matmul_serial`], with `b.col_stride == 1`.
#[allow(clippy::too_many_arguments)]
unsafe fn few_rows(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut f32, ldc: usize, accumulate: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_fma() {
            return unsafe { few_rows_avx512(m, n, k, a, b, c, ldc, accumulate) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return unsafe { few_rows_avx2(m, n, k, a, b, c, ldc, accumulate) };
        }
    }
    unsafe { few_rows_portable(m, n, k, a, b, c, ldc, accumulate) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn few_rows_avx512(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut f32, ldc: usize, accumulate: bool) {
    unsafe { few_rows_portable(m, n, k, a, b, c, ldc, accumulate) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn few_rows_avx2(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut f32, ldc: usize, accumulate: bool) {
    unsafe { few_rows_portable(m, n, k, a, b, c, ldc, accumulate) }
}

/// The loop the wrappers above compile for their instruction sets (inlined into each).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn few_rows_portable(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut f32, ldc: usize, accumulate: bool) {
    const TILE: usize = 4096; // floats of output per tile, all rows together: 16 KiB
    let width = (TILE / m).next_multiple_of(16).min(n);
    let mut acc = [0f32; TILE + 16 * FEW_ROWS];
    let rows_a = copy_rows(m, k, a);
    let a_at = |i: usize, p: usize| rows_a[i * k + p];
    let b_row =
        |p: usize, j: usize, w: usize| unsafe { std::slice::from_raw_parts(b.ptr.offset(p as isize * b.row_stride + j as isize), w) };
    for j in (0..n).step_by(width) {
        let w = width.min(n - j);
        for i in 0..m {
            let y = &mut acc[i * width..i * width + w];
            if accumulate {
                y.copy_from_slice(unsafe { std::slice::from_raw_parts(c.add(i * ldc + j), w) });
            } else {
                y.fill(0.0);
            }
        }
        let mut p = 0;
        while p + 4 <= k {
            let rows = [b_row(p, j, w), b_row(p + 1, j, w), b_row(p + 2, j, w), b_row(p + 3, j, w)];
            let mut coef = [[0f32; 4]; FEW_ROWS];
            for (i, coef) in coef.iter_mut().enumerate().take(m) {
                *coef = [a_at(i, p), a_at(i, p + 1), a_at(i, p + 2), a_at(i, p + 3)];
            }
            // Sixteen columns at a time: the four rows of `b` are loaded once for every row of `a`.
            let mut q = 0;
            while q + 16 <= w {
                let x: [[f32; 16]; 4] = std::array::from_fn(|r| rows[r][q..q + 16].try_into().expect("16 values"));
                for (i, coef) in coef.iter().enumerate().take(m) {
                    let y: &mut [f32; 16] = (&mut acc[i * width + q..i * width + q + 16]).try_into().expect("16 values");
                    for l in 0..16 {
                        y[l] = x[3][l].mul_add(coef[3], x[2][l].mul_add(coef[2], x[1][l].mul_add(coef[1], x[0][l].mul_add(coef[0], y[l]))));
                    }
                }
                q += 16;
            }
            for q in q..w {
                for (i, coef) in coef.iter().enumerate().take(m) {
                    let y = &mut acc[i * width + q];
                    *y = rows[3][q]
                        .mul_add(coef[3], rows[2][q].mul_add(coef[2], rows[1][q].mul_add(coef[1], rows[0][q].mul_add(coef[0], *y))));
                }
            }
            p += 4;
        }
        for p in p..k {
            let x = b_row(p, j, w);
            for i in 0..m {
                let a0 = a_at(i, p);
                for (y, x) in acc[i * width..i * width + w].iter_mut().zip(x) {
                    *y = x.mul_add(a0, *y);
                }
            }
        }
        for i in 0..m {
            unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc + j), w) }.copy_from_slice(&acc[i * width..i * width + w]);
        }
    }
}

/// [`few_rows`] for a `b` whose columns are contiguous (attention's `q k^T` while generating,
/// a tied LM head): dot products, each column of `b` read once for all rows of `a`, one
/// sixteen-lane (AVX-512) or eight-lane (AVX2) sum per row so that the rows' sums run side by side (elsewhere a
/// plain loop).
///
/// # Safety
/// As [`matmul_serial`], with `b.row_stride == 1`.
#[allow(clippy::too_many_arguments)]
unsafe fn few_rows_dot(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut f32, ldc: usize, accumulate: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        // The row count as a constant, so that the sums stay in registers.
        macro_rules! rows_of {
            ($dots:ident) => {{
                let rows = copy_rows(m, k, a);
                // SAFETY: the caller's contract; the instruction set was just detected.
                return unsafe {
                    match m {
                        1 => by_columns($dots::<1>, n, k, &rows, b, c, ldc, accumulate),
                        2 => by_columns($dots::<2>, n, k, &rows, b, c, ldc, accumulate),
                        3 => by_columns($dots::<3>, n, k, &rows, b, c, ldc, accumulate),
                        4 => by_columns($dots::<4>, n, k, &rows, b, c, ldc, accumulate),
                        5 => by_columns($dots::<5>, n, k, &rows, b, c, ldc, accumulate),
                        6 => by_columns($dots::<6>, n, k, &rows, b, c, ldc, accumulate),
                        7 => by_columns($dots::<7>, n, k, &rows, b, c, ldc, accumulate),
                        8 => by_columns($dots::<8>, n, k, &rows, b, c, ldc, accumulate),
                        _ => unreachable!("at most FEW_ROWS rows"),
                    }
                };
            }};
        }
        if avx512_fma() {
            rows_of!(dots_avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            rows_of!(dots_avx2);
        }
    }
    unsafe { few_rows_dot_portable(m, n, k, a, b, c, ldc, accumulate) }
}

/// Writes `dots` of the `M` rows (contiguous, `k` each) with each of the `n` columns of `b` down
/// that column of `c`.
///
/// # Safety
/// As [`few_rows_dot`]'s, and `dots` runnable on this CPU.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn by_columns<const M: usize>(
    dots: unsafe fn(*const f32, *const f32, usize) -> [f32; M],
    n: usize,
    k: usize,
    rows: &[f32],
    b: Mat,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    for j in 0..n {
        let dots = unsafe { dots(rows.as_ptr(), b.ptr.offset(j as isize * b.col_stride), k) };
        unsafe { put_column(c, ldc, j, &dots, accumulate) };
    }
}

/// [`dots_avx512`] in eight lanes, the tail of `k` in a plain loop.
///
/// # Safety
/// `rows` valid for `M * k` reads, `col` for `k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2<const M: usize>(rows: *const f32, col: *const f32, k: usize) -> [f32; M] {
    use std::arch::x86_64::*;
    let mut sums = [_mm256_setzero_ps(); M];
    let mut p = 0;
    while p + 8 <= k {
        let y = unsafe { _mm256_loadu_ps(col.add(p)) };
        for (i, sum) in sums.iter_mut().enumerate() {
            *sum = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(rows.add(i * k + p)) }, y, *sum);
        }
        p += 8;
    }
    std::array::from_fn(|i| {
        let four = _mm_add_ps(_mm256_castps256_ps128(sums[i]), _mm256_extractf128_ps(sums[i], 1));
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        let lanes = _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
        // SAFETY: `p..k` is inside row `i` and the column.
        (p..k).fold(lanes, |sum, q| unsafe { sum + *rows.add(i * k + q) * *col.add(q) })
    })
}

/// The `M` dot products of `rows` (`M` rows of `k`, contiguous) with the `k` values at `col`.
///
/// # Safety
/// `rows` valid for `M * k` reads, `col` for `k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn dots_avx512<const M: usize>(rows: *const f32, col: *const f32, k: usize) -> [f32; M] {
    use std::arch::x86_64::*;
    let mut sums = [_mm512_setzero_ps(); M];
    let mut p = 0;
    while p + 16 <= k {
        let y = unsafe { _mm512_loadu_ps(col.add(p)) };
        for (i, sum) in sums.iter_mut().enumerate() {
            *sum = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(rows.add(i * k + p)) }, y, *sum);
        }
        p += 16;
    }
    if p < k {
        let mask: __mmask16 = (1u16 << (k - p)) - 1;
        let y = unsafe { _mm512_maskz_loadu_ps(mask, col.add(p)) };
        for (i, sum) in sums.iter_mut().enumerate() {
            *sum = _mm512_fmadd_ps(unsafe { _mm512_maskz_loadu_ps(mask, rows.add(i * k + p)) }, y, *sum);
        }
    }
    let mut out = [0f32; M];
    for (out, sum) in out.iter_mut().zip(sums) {
        *out = _mm512_reduce_add_ps(sum);
    }
    out
}

/// The `m` rows of `k` values of `a` (any strides), contiguous.
fn copy_rows(m: usize, k: usize, a: Mat) -> Vec<f32> {
    let mut rows = vec![0f32; m * k];
    for (i, row) in rows.chunks_exact_mut(k).enumerate() {
        for (p, x) in row.iter_mut().enumerate() {
            *x = unsafe { *a.ptr.offset(i as isize * a.row_stride + p as isize * a.col_stride) };
        }
    }
    rows
}

/// Writes (or adds) `dots` down column `j` of `c`.
///
/// # Safety
/// `c` valid at `i * ldc + j` for every row `i` of `dots`.
#[inline(always)]
unsafe fn put_column(c: *mut f32, ldc: usize, j: usize, dots: &[f32], accumulate: bool) {
    for (i, dot) in dots.iter().enumerate() {
        let out = unsafe { &mut *c.add(i * ldc + j) };
        *out = if accumulate { *out + dot } else { *dot };
    }
}

/// The portable version: one row's dot product at a time.
#[allow(clippy::too_many_arguments)]
unsafe fn few_rows_dot_portable(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut f32, ldc: usize, accumulate: bool) {
    let rows = copy_rows(m, k, a);
    let mut dots = [0f32; FEW_ROWS];
    for j in 0..n {
        let col = unsafe { std::slice::from_raw_parts(b.ptr.offset(j as isize * b.col_stride), k) };
        for (dot, row) in dots.iter_mut().zip(rows.chunks_exact(k)) {
            *dot = row.iter().zip(col).map(|(x, y)| x * y).sum();
        }
        unsafe { put_column(c, ldc, j, &dots[..m], accumulate) };
    }
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
    if m <= FEW_ROWS && b.col_stride == 1 && threads > 1 && k >= 64 * threads {
        // Each thread streams its own contiguous rows of `b` (a share of `k`); the partial
        // products (a few rows each) are summed after.
        let share = k.div_ceil(threads);
        let partials: Vec<Option<Vec<f32>>> = (0..k.div_ceil(share))
            .into_par_iter()
            .map(|part| {
                let (p, len) = (part * share, share.min(k - part * share));
                let (a, b) = (a.at_col(p), b.at_row(p));
                if part == 0 {
                    // SAFETY: the caller's contract for `c`.
                    unsafe { few_rows(m, n, len, a, b, c_addr as *mut f32, n, accumulate) };
                    return None;
                }
                let mut out = vec![0f32; m * n];
                // SAFETY: `out` holds m * n values.
                unsafe { few_rows(m, n, len, a, b, out.as_mut_ptr(), n, false) };
                Some(out)
            })
            .collect();
        // SAFETY: the caller's contract for `c`; the tasks above are done.
        let c = unsafe { std::slice::from_raw_parts_mut(c, m * n) };
        for part in partials.iter().flatten() {
            for (c, x) in c.iter_mut().zip(part) {
                *c += x;
            }
        }
        return;
    }
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

    /// Every layout the kernels pass (plain, transposed operands, column blocks, few rows,
    /// accumulation), against an f64 reference.
    #[test]
    fn products_match_f64_reference() {
        // A few rows take `few_rows` (plain `b`), split over `k` from 64 per thread, with tiles
        // wider than one pass (m = 1, n > 4,096) and remainders of 16 columns and 4 rows of `b`;
        // a few rows times a transposed `b` take `few_rows_dot`.
        let few = [(1, 4100, 130), (8, 37, 301), (5, 700, 3), (2, 300, 1000), (1, 40, 37)];
        for (m, n, k) in [(3, 5, 7), (200, 300, 70), (40, 520, 33), (130, 17, 0)].into_iter().chain(few) {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let tol = 1e-3 + 1e-5 * k as f64;
            let (at, bt) = (values(m * k, 1), values(k * n, 2));
            for (a, b) in [(Mat::rows(&a, k), Mat::rows(&b, n)), (Mat::rows(&at, m).t(), Mat::rows(&bt, k).t())] {
                let expected = reference(m, n, k, a, b);
                let mut c = values(m * n, 3);
                let before = c.clone();
                matmul(m, n, k, a, b, &mut c, true);
                for ((c, e), b) in c.iter().zip(&expected).zip(&before) {
                    assert!((*c as f64 - e - *b as f64).abs() < tol, "{m}x{n}x{k}: {c} vs {}", e + *b as f64);
                }
                let c = product(m, n, k, a, b);
                assert!(c.iter().zip(&expected).all(|(c, e)| (*c as f64 - e).abs() < tol));
            }
        }
    }

    /// The loops other CPUs run (this one may take the AVX-512 versions above).
    #[test]
    fn portable_few_rows_match_f64_reference() {
        let (m, n, k) = (5, 37, 70);
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        type Product = unsafe fn(usize, usize, usize, Mat, Mat, *mut f32, usize, bool);
        let mut loops: Vec<(Mat, Product)> = vec![(Mat::rows(&b, n), few_rows_portable), (Mat::rows(&b, k).t(), few_rows_dot_portable)];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            /// The AVX2 dots at this test's 5 rows, which an AVX-512 CPU would not take.
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2_dots(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut f32, ldc: usize, accumulate: bool) {
                assert_eq!(m, 5);
                unsafe { by_columns(dots_avx2::<5>, n, k, &copy_rows(m, k, a), b, c, ldc, accumulate) }
            }
            loops.push((Mat::rows(&b, k).t(), avx2_dots));
        }
        for (b, portable) in loops {
            let expected = reference(m, n, k, Mat::rows(&a, k), b);
            let mut c = vec![1f32; m * n];
            // SAFETY: `c` holds m * n values; `a` and `b` hold m * k and k * n.
            unsafe { portable(m, n, k, Mat::rows(&a, k), b, c.as_mut_ptr(), n, true) };
            assert!(c.iter().zip(&expected).all(|(c, e)| (*c as f64 - e - 1.0).abs() < 1e-3));
        }
    }
}
