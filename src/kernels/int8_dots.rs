//! Decoding's products with a block-quantized weight as integer dots: the few rows of
//! activations are quantized to 8 bits per block of 32 (llama.cpp's Q8 activations), then each
//! pair of weight blocks meets them in one AVX512-VNNI `vpdpbusd` (64 products of an unsigned
//! code and a signed activation) and is scaled once per block.
//!
//! Widening every code to f32 first (the other path of [`quantized`](super::quantized)) spends
//! about 14 instructions per block on the widening, which made batch-1 decoding compute-bound
//! at a third of the memory-bandwidth floor. Here a pair of blocks costs about 5 instructions,
//! plus 3 per row of activations.
//!
//! Exactness: the result is the f32 product of the *quantized* activations with the
//! dequantized weight, to f32 rounding (the test below checks that invariant). Quantizing
//! the activations moves each value by at most 1/254 of its block's largest magnitude, so the
//! kernel runs only for untracked inputs (inference: generation, evaluation), never inside a
//! training step, where the forward pass must be the function the gradients differentiate.
//!
//! Layout: `vpdpbusd` sums 4 neighbouring byte products into each 32-bit lane. A Q4 pair of
//! blocks unpacks most cheaply as [block 0 values 0..16, block 1 values 0..16, block 0 values
//! 16..32, block 1 values 16..32] (low nibbles of both, then high nibbles), so the activations
//! are stored in that order once per product, and Q8_0's codes are moved into it (one lane
//! shuffle). Lanes 0-3 and 8-11 then belong to the first block, 4-7 and 12-15 to the second.

use crate::quantization::{BLOCK, BlockFormat, QuantizedMatrix};

/// Whether this CPU and format run the integer dots.
pub fn available(format: BlockFormat) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let formats = matches!(format, BlockFormat::Q8_0 | BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q4_K);
        formats
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = format;
        false
    }
}

/// Rows of activations quantized for one weight format (made only where [`available`] holds).
pub struct Int8Rows {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    /// `[rows, pairs, 64]` codes in the pair order of the module docs (a missing second block
    /// of an odd row is zeros).
    codes: Vec<i8>,
    /// `[rows, pairs, 16]`: each block's scale, in the lanes its products land in.
    scales: Vec<f32>,
    /// `[rows, 2 * blocks]`, dotted with the weight row's `[scale, offset]` pairs: the term
    /// a block's offset adds (`offset * Σx̂`), or for Q8_0, whose codes are read shifted by 128
    /// into unsigned bytes, the term that takes the shift back (`-128 * scale * Σx̂`).
    sums: Vec<f32>,
}

impl Int8Rows {
    /// `rows` rows of `cols` values (`cols` a multiple of [`BLOCK`]), quantized per block as
    /// ggml quantizes to Q8_0 (round to nearest of `x * 127 / max|x|`); `None` where
    /// [`available`] does not hold for `format`.
    pub fn quantize(x: &[f32], rows: usize, cols: usize, format: BlockFormat) -> Option<Self> {
        assert_eq!(x.len(), rows * cols, "activations of the wrong size");
        if !available(format) {
            return None;
        }
        let blocks = cols / BLOCK;
        let pairs = blocks.div_ceil(2);
        let mut q = Self {
            format,
            rows,
            cols,
            codes: vec![0; rows * pairs * 64],
            scales: vec![0.0; rows * pairs * 16],
            sums: vec![0.0; rows * 2 * blocks],
        };
        for (r, row) in x.chunks_exact(cols.max(1)).enumerate() {
            for (j, values) in row.chunks_exact(BLOCK).enumerate() {
                let largest = values.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = largest / 127.0;
                let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
                let (pair, second) = (r * pairs + j / 2, j % 2);
                let mut total = 0i32;
                for (i, &v) in values.iter().enumerate() {
                    let code = (v * inverse).round() as i8;
                    total += i32::from(code);
                    let half = i / (BLOCK / 2);
                    q.codes[pair * 64 + half * 32 + second * 16 + i % (BLOCK / 2)] = code;
                }
                for half in 0..2 {
                    let lanes = pair * 16 + half * 8 + second * 4;
                    q.scales[lanes..lanes + 4].fill(d);
                }
                let sum = d * total as f32;
                let at = r * 2 * blocks + 2 * j;
                q.sums[at..at + 2].copy_from_slice(&match format {
                    BlockFormat::Q8_0 => [-128.0 * sum, 0.0],
                    _ => [0.0, sum],
                });
            }
        }
        Some(q)
    }

    /// The quantized activations as f32 (`[rows, cols]`, value order): what the dots multiply.
    #[cfg(test)]
    fn widened(&self) -> Vec<f32> {
        let pairs = (self.cols / BLOCK).div_ceil(2);
        let mut out = vec![0f32; self.rows * self.cols];
        for (k, out) in out.iter_mut().enumerate() {
            let (r, c) = (k / self.cols, k % self.cols);
            let (j, i) = (c / BLOCK, c % BLOCK);
            let (pair, second, half) = (r * pairs + j / 2, j % 2, i / (BLOCK / 2));
            *out = f32::from(self.codes[pair * 64 + half * 32 + second * 16 + i % (BLOCK / 2)]) * self.scales[pair * 16 + second * 4];
        }
        out
    }
}

/// `dots[r] = x̂_r · W_o` for every row of `x`, where `rows` is `M`.
///
/// Panics unless `x` was quantized for `w`'s format, with `M` rows of `w.cols`.
pub fn dots<const M: usize>(w: &QuantizedMatrix, o: usize, x: &Int8Rows) -> [f32; M] {
    assert!(x.format == w.format && x.rows == M && x.cols == w.cols, "int8 dots of activations quantized for another matrix");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `x` exists, so the features are present; it holds `M` rows of `w.cols`.
    unsafe {
        avx512::dots::<M>(w, o, x)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("available() is false off x86-64")
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{BlockFormat, Int8Rows, QuantizedMatrix};

    /// # Safety
    /// AVX-512F/BW/VL/VNNI and FMA present; `x` quantized for `w.format` with `M` rows of `w.cols`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
    pub(super) unsafe fn dots<const M: usize>(w: &QuantizedMatrix, o: usize, x: &Int8Rows) -> [f32; M] {
        let (codes, params) = w.row(o);
        let blocks = params.len();
        let pairs = blocks.div_ceil(2);
        let code_bytes = w.format.code_bytes();
        let params = params.as_ptr().cast::<f32>();
        let nibbles = _mm256_set1_epi8(15);
        let shift_128 = _mm512_set1_epi8(-128);
        // Each block's [scale, offset] in 4 floats; its scale into that block's lanes.
        let scale_lanes = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
        let mut acc = [_mm512_setzero_ps(); M];
        for p in 0..pairs {
            let whole = 2 * p + 1 < blocks;
            // SAFETY (this block): pair `p`'s codes and parameters are in the row's, the second
            // block's only when `whole` (else masked off); `x` has `pairs` pairs per row.
            unsafe {
                let q = codes.as_ptr().add(2 * p * code_bytes);
                let weights = match w.format {
                    BlockFormat::Q8_0 => {
                        let bytes = if whole { _mm512_loadu_si512(q.cast()) } else { _mm512_maskz_loadu_epi8(u32::MAX as u64, q.cast()) };
                        // [b0 0..16, b0 16..32, b1 0..16, b1 16..32] -> the pair order, as unsigned codes.
                        _mm512_xor_si512(_mm512_shuffle_i64x2::<0b11_01_10_00>(bytes, bytes), shift_128)
                    }
                    _ => {
                        let bytes = if whole { _mm256_loadu_si256(q.cast()) } else { _mm256_maskz_loadu_epi8(0xffff, q.cast()) };
                        let low = _mm256_and_si256(bytes, nibbles);
                        let high = _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), nibbles);
                        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
                    }
                };
                let block_params = _mm_maskz_loadu_ps(if whole { 0b1111 } else { 0b0011 }, params.add(4 * p));
                let w_scales = _mm512_permutexvar_ps(scale_lanes, _mm512_castps128_ps512(block_params));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let at = r * pairs + p;
                    let x_codes = _mm512_loadu_si512(x.codes.as_ptr().add(at * 64).cast());
                    let products = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), weights, x_codes));
                    let scaled = _mm512_mul_ps(products, _mm512_loadu_ps(x.scales.as_ptr().add(at * 16)));
                    *acc = _mm512_fmadd_ps(scaled, w_scales, *acc);
                }
            }
        }
        // The offsets' (or Q8_0's shift's) terms: the row's parameters dotted with `sums`.
        let flat = 2 * blocks;
        let mut out = [0f32; M];
        for (r, out) in out.iter_mut().enumerate() {
            let mut terms = _mm512_setzero_ps();
            let sums = &x.sums[r * flat..(r + 1) * flat];
            for k in (0..flat).step_by(16) {
                let mask = if flat - k >= 16 { u16::MAX } else { (1u16 << (flat - k)) - 1 };
                // SAFETY: lanes `k..k + 16` masked to the `flat` values of both.
                terms = unsafe {
                    _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, params.add(k)), _mm512_maskz_loadu_ps(mask, sums.as_ptr().add(k)), terms)
                };
            }
            *out = _mm512_reduce_add_ps(_mm512_add_ps(acc[r], terms));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((((i * 53 + seed * 7) % 97) as f32) - 48.0) / 31.0).collect()
    }

    /// The quantized activations are within half a step of the input, a step being the
    /// block's largest magnitude / 127.
    #[test]
    fn activations_round_to_the_nearest_step() {
        let (rows, cols) = (3, 5 * BLOCK);
        let x = values(rows * cols, 4);
        let Some(quantized) = Int8Rows::quantize(&x, rows, cols, BlockFormat::Q4_1) else {
            return eprintln!("skipped: this CPU lacks AVX512-VNNI");
        };
        let widened = quantized.widened();
        for (block, (a, b)) in x.chunks(BLOCK).zip(widened.chunks(BLOCK)).enumerate() {
            let step = a.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let worst = a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 0.5 * step * (1.0 + 1e-5), "block {block}: moved by {worst}, step {step}");
        }
    }

    /// The dots equal the f64 product of the quantized activations with the dequantized
    /// weight, for every format they take, 1-8 rows, odd and even block counts.
    #[test]
    fn dots_equal_the_product_of_the_quantized_activations() {
        let formats = [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1];
        if !formats.iter().all(|&f| available(f)) {
            eprintln!("skipped: this CPU lacks AVX512-VNNI");
            return;
        }
        for blocks in [1, 4, 5] {
            let (out, cols) = (9, blocks * BLOCK);
            for format in formats {
                let w = QuantizedMatrix::quantize(format, out, cols, &values(out * cols, blocks), "w").unwrap();
                let dense = w.dequantize();
                macro_rules! check {
                    ($($m:literal)*) => {$({
                        let x = Int8Rows::quantize(&values($m * cols, $m + blocks), $m, cols, format).unwrap();
                        let xs = x.widened();
                        for o in 0..out {
                            let ours = dots::<$m>(&w, o, &x);
                            for r in 0..$m {
                                let exact: f64 = (0..cols).map(|c| xs[r * cols + c] as f64 * dense[o * cols + c] as f64).sum();
                                let scale = (0..cols).map(|c| (xs[r * cols + c] * dense[o * cols + c]).abs() as f64).sum::<f64>().max(1.0);
                                assert!((ours[r] as f64 - exact).abs() <= 1e-5 * scale, "{format}, {blocks} blocks, {} rows: {} against {exact}", $m, ours[r]);
                            }
                        }
                    })*};
                }
                check!(1 2 3 8);
            }
        }
    }
}
