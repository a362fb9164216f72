//! The few-row dots on AVX-512.

use std::arch::x86_64::*;

use super::avx2::block_scales;
use super::{BLOCK, BlockFormat, QuantizedMatrix};

/// The dots of weight row `o` with `M` rows of `x` (`M * w.cols` values at `x`): each
/// block widened to two vectors of 16 floats, then two fused multiply-adds per row, into
/// two sums per row (one chain of dependent adds per sum would wait on its latency).
///
/// # Safety
/// AVX-512F, FMA and F16C present; `x` valid for `M * w.cols` reads.
#[target_feature(enable = "avx512f,fma,f16c")]
pub(super) unsafe fn dots<const M: usize>(w: &QuantizedMatrix, o: usize, x: *const f32) -> [f32; M] {
    let mut sums = [[_mm512_setzero_ps(); 2]; M];
    let (codes, scales) = (w.row_codes(o), w.row_scales(o));
    let code_bytes = w.format.code_bytes();
    let nibbles = _mm_set1_epi8(15);
    // Q6_K: lane `i` takes bits `2i..2i + 2` of 32 high bits, moved to bits 4..6.
    let pair_shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let (pair_mask, centre_32) = (_mm512_set1_epi32(3), _mm512_set1_epi32(32));
    // 16-bit floats have no scales (their row's are empty).
    let scaled = !w.format.is_16_bit_float();
    for j in 0..w.blocks_per_row() {
        // SAFETY: F16C present.
        let (d, offset) = if scaled { unsafe { block_scales(w.format, scales, j) } } else { (_mm_set_ss(1.0), _mm_setzero_ps()) };
        let (d, offset) = (_mm512_broadcastss_ps(d), _mm512_broadcastss_ps(offset));
        // SAFETY: block `j`'s codes are `code_bytes` bytes at `j * code_bytes` of the row's.
        let (lo, hi) = unsafe {
            let q = codes.as_ptr().add(j * code_bytes);
            // The low 4 bits of values 0..16 and of 16..32, as 32-bit lanes.
            let low_bits = || {
                let q = _mm_loadu_si128(q.cast());
                (_mm512_cvtepu8_epi32(_mm_and_si128(q, nibbles)), _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), nibbles)))
            };
            match w.format {
                BlockFormat::F16 => (_mm512_cvtph_ps(_mm256_loadu_si256(q.cast())), _mm512_cvtph_ps(_mm256_loadu_si256(q.add(32).cast()))),
                // A bf16 is the top half of an f32.
                BlockFormat::Bf16 => {
                    let widen =
                        |p: *const u8| _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast())), 16));
                    (widen(q), widen(q.add(32)))
                }
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
