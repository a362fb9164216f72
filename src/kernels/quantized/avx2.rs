//! The few-row dots on AVX2 (most laptops and desktops without AVX-512: every AMD CPU before
//! Zen 4, Intel's client CPUs since Alder Lake).

use std::arch::x86_64::*;

use super::{BLOCK, BlockFormat, QuantizedMatrix, RowScales};

/// Runs `$body` with `$block` bound to a closure giving block `j` of row `$o` of `$w` as four
/// vectors of 8 floats: one closure per kind of block (16-bit floats, blocks with scales), so
/// that each kind gets its own loop with its widening inlined (with one match over every format
/// in the loop the widening was not inlined, and one-row products took twice as long).
macro_rules! with_blocks {
    ($w:expr, $o:expr, |$block:ident| $body:expr) => {{
        let (w, o): (&QuantizedMatrix, usize) = ($w, $o);
        let (codes, code_bytes) = (w.row_codes(o).as_ptr(), w.format.code_bytes());
        // SAFETY (each closure): block `j`'s bytes are `code_bytes` bytes at `j * code_bytes` of the row's.
        match w.format {
            BlockFormat::F16 => {
                let $block = |j: usize| unsafe { widen_f16(codes.add(j * code_bytes)) };
                $body
            }
            BlockFormat::Bf16 => {
                let $block = |j: usize| unsafe { widen_bf16(codes.add(j * code_bytes)) };
                $body
            }
            format => {
                let scales = w.row_scales(o);
                let $block = |j: usize| unsafe {
                    let (d, offset) = block_scales(format, scales, j);
                    widen_block(format, codes.add(j * code_bytes), (_mm256_broadcastss_ps(d), _mm256_broadcastss_ps(offset)))
                };
                $body
            }
        }
    }};
}

/// The dots of weight row `o` with `M` rows of `x` (`M * w.cols` values at `x`).
///
/// # Safety
/// AVX2, FMA and F16C present; `x` valid for `M * w.cols` reads.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dots<const M: usize>(w: &QuantizedMatrix, o: usize, x: *const f32) -> [f32; M] {
    // SAFETY: as this function's.
    with_blocks!(w, o, |block| unsafe { dots_of::<M>(w, x, block) })
}

/// The dots of one weight row, whose block `j` `block(j)` widens, with `M` rows of `x`: each
/// block widened to four vectors of 8 floats, then four fused multiply-adds per row. Up to 4 rows
/// keep two sums each, so that at least 8 independent chains of adds hide the latency of each;
/// more rows keep one (16 registers hold 8 sums, the block's 4 vectors and the temporaries).
///
/// # Safety
/// AVX2 and FMA present; `x` valid for `M * w.cols` reads.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dots_of<const M: usize>(w: &QuantizedMatrix, x: *const f32, block: impl Fn(usize) -> [__m256; 4]) -> [f32; M] {
    let two_sums = M <= 4;
    let mut sums = [[_mm256_setzero_ps(); 2]; M];
    for j in 0..w.blocks_per_row() {
        let block = block(j);
        for (r, sum) in sums.iter_mut().enumerate() {
            // SAFETY: block `j` of row `r` of `x` is inside its `M * w.cols` values.
            unsafe {
                let xr = x.add(r * w.cols + j * BLOCK);
                for (g, &v) in block.iter().enumerate() {
                    let s = if two_sums { g % 2 } else { 0 };
                    sum[s] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr.add(8 * g)), sum[s]);
                }
            }
        }
    }
    sums.map(|[a, b]| horizontal_sum(_mm256_add_ps(a, b)))
}

/// Blocks `first_block..` of row `o` of `w` as f32 values into `out` (as many blocks as it
/// holds): the values of [`QuantizedMatrix::dequantize_row`], but for the sign of some zeros (each is
/// `scale * q + offset` with `scale * q` exact, so one fused multiply-add rounds as the
/// separate add does; Q4_0's and Q5_0's centre code gives +0 where `d * 0` gives -0 for a
/// negative `d`).
///
/// # Safety
/// AVX2, FMA and F16C present.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn widen(w: &QuantizedMatrix, o: usize, first_block: usize, out: &mut [f32]) {
    assert!(first_block * BLOCK + out.len() <= w.cols, "blocks past the end of the row");
    with_blocks!(w, o, |block| for (j, out) in (first_block..).zip(out.chunks_exact_mut(BLOCK)) {
        // SAFETY: `out` holds the block's 32 values.
        for (g, v) in block(j).into_iter().enumerate() {
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * g), v) };
        }
    })
}

/// Block `j`'s scale and offset (value `scale * q + offset`, [`RowScales::params`]) in lane 0 of
/// two vectors, an f16 scale widened with F16C. They stay in vector registers: a `[f32; 2]` built
/// from two scalars went through memory, where a 64-bit load of two 32-bit stores is not
/// forwarded (Q8_0, Q4_0 and Q5_0 took twice Q4_1's time per one-row product).
///
/// # Safety
/// AVX2 and F16C present.
#[target_feature(enable = "avx2,f16c")]
#[inline]
pub(super) unsafe fn block_scales(format: BlockFormat, scales: RowScales<'_>, j: usize) -> (__m128, __m128) {
    match scales {
        RowScales::Single(v) => {
            let [scale, offset] = v[j];
            (_mm_set_ss(scale), _mm_set_ss(offset))
        }
        RowScales::Half(v) if format.half_scales() == Some(2) => {
            let wide = _mm_cvtph_ps(_mm_cvtsi32_si128((u32::from(v[2 * j].to_bits()) | u32::from(v[2 * j + 1].to_bits()) << 16) as i32));
            (wide, _mm_movehdup_ps(wide))
        }
        RowScales::Half(v) => {
            let d = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(v[j].to_bits())));
            // The offset of a centred format: -8d (Q4_0), -16d (Q5_0); Q8_0 has none.
            let centre = format.params_of(1.0, 0.0)[1];
            (d, _mm_mul_ss(d, _mm_set_ss(centre)))
        }
    }
}

/// 32 f16 values at `q` as four vectors of 8.
///
/// # Safety
/// AVX and F16C present; `q` valid for 64 bytes.
#[target_feature(enable = "avx,f16c")]
#[inline]
unsafe fn widen_f16(q: *const u8) -> [__m256; 4] {
    // SAFETY: the reads stay inside the 64 bytes.
    std::array::from_fn(|g| unsafe { _mm256_cvtph_ps(_mm_loadu_si128(q.add(16 * g).cast())) })
}

/// 32 bf16 values at `q` as four vectors of 8 (a bf16 is the top half of an f32).
///
/// # Safety
/// AVX2 present; `q` valid for 64 bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn widen_bf16(q: *const u8) -> [__m256; 4] {
    // SAFETY: the reads stay inside the 64 bytes.
    std::array::from_fn(|g| unsafe {
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(q.add(16 * g).cast())), 16))
    })
}

/// One block's 32 values (codes at `q`, its scale and offset broadcast) as four vectors of 8.
///
/// # Safety
/// AVX2 and FMA present; `q` valid for the format's code bytes; `format` not a 16-bit float.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn widen_block(format: BlockFormat, q: *const u8, (d, offset): (__m256, __m256)) -> [__m256; 4] {
    let nibbles = _mm_set1_epi8(15);
    // Lane `i` of a group of 8 values: its fifth bit (Q5_0), the shift of its 2 top bits (Q6_K).
    let lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let pair_shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    // SAFETY: the reads stay inside the block's codes.
    unsafe {
        // Values 8g..8g + 8 of the 4-bit codes, as 32-bit lanes.
        let low_bits = || {
            let q = _mm_loadu_si128(q.cast());
            let (lo, hi) = (_mm_and_si128(q, nibbles), _mm_and_si128(_mm_srli_epi16(q, 4), nibbles));
            [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)].map(|v| _mm256_cvtepu8_epi32(v))
        };
        match format {
            // SAFETY: `with_blocks` widens them with `widen_f16` and `widen_bf16` (a panic here,
            // never taken, kept this function from being inlined: twice the time per product).
            BlockFormat::F16 | BlockFormat::Bf16 => std::hint::unreachable_unchecked(),
            BlockFormat::Q8_0 => std::array::from_fn(|g| {
                let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(q.add(8 * g).cast()));
                _mm256_mul_ps(_mm256_cvtepi32_ps(q), d)
            }),
            BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q4_K => {
                low_bits().map(|q| _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), d, offset))
            }
            BlockFormat::Q5_0 => {
                // Lanes whose fifth bit is set get 16 more.
                let fifth = q.add(16).cast::<u32>().read_unaligned();
                let sixteen = _mm256_set1_epi32(16);
                let low = low_bits();
                std::array::from_fn(|g| {
                    let bits = _mm256_and_si256(_mm256_set1_epi32((fifth >> (8 * g)) as i32), lane_bits);
                    let high = _mm256_and_si256(_mm256_cmpeq_epi32(bits, lane_bits), sixteen);
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(low[g], high)), d, offset)
                })
            }
            BlockFormat::Q6_K => {
                // Codes less 32, times the scale of each half (`d`, then `offset`).
                let high = q.add(16).cast::<u64>().read_unaligned();
                let (pair_mask, centre_32) = (_mm256_set1_epi32(3), _mm256_set1_epi32(32));
                let low = low_bits();
                std::array::from_fn(|g| {
                    let bits = _mm256_set1_epi32((high >> (16 * g)) as u16 as i32);
                    let top = _mm256_slli_epi32(_mm256_and_si256(_mm256_srlv_epi32(bits, pair_shifts), pair_mask), 4);
                    let half_scale = if g < 2 { d } else { offset };
                    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_or_si256(low[g], top), centre_32)), half_scale)
                })
            }
        }
    }
}

#[target_feature(enable = "avx2")]
fn horizontal_sum(v: __m256) -> f32 {
    let four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)))
}
