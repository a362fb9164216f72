//! ggml's stored blocks unpacked into the in-memory blocks of 32 values that
//! [`QuantizedMatrix`](super::QuantizedMatrix) holds (layouts as in ggml-quants.c's
//! `dequantize_row_*`; each `d`/`dmin` an f16):
//!
//! - Q8_0 (34 bytes / 32 values): `d`, 32 `i8` codes; value `d * q`.
//! - Q4_0 (18 / 32): `d`, 16 bytes of nibbles; value `d * (q - 8)`.
//! - Q4_1 (20 / 32): `d`, `m`, 16 bytes of nibbles; value `d * q + m`.
//! - Q5_0 (22 / 32): `d`, 4 bytes `qh` (bit `i` is value `i`'s fifth bit), 16 bytes of
//!   nibbles; value `d * (q - 16)`.
//! - Q4_K (144 / 256): `d`, `dmin`, 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32,
//!   128 bytes of nibbles (32 bytes per pair of sub-blocks: low nibbles the first, high the
//!   second); value `(d * sc) * q - dmin * m`.
//! - Q6_K (210 / 256): 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 `i8` scales
//!   for 16 sub-blocks of 16, `d`; value `(d * sc) * (q - 32)`.
//!
//! In the 32-value formats the low nibbles hold values 0..16 and the high nibbles 16..32.
//!
//! Every value is then `scale * q + offset` (Q6_K: `scale * (q - 32)`, one scale per 16) with
//! the same single f32 rounding as ggml's: `d * sc` and `dmin * m` are exact in f32 (at most
//! 11 + 8 significant bits), as is `d * sc * q` (at most 24), so only Q4_K's subtraction rounds,
//! once, as in ggml.

use half::f16;

use super::{BLOCK, BlockFormat, Scales};

/// Values per K-quant super-block.
pub const SUPER_BLOCK: usize = 256;

fn read_f16(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// 32 values of 4 bits or less as 16 bytes: value `i` in the low nibble of byte `i`, value
/// `i + 16` in its high nibble.
fn nibbles(values: &[u8; BLOCK]) -> [u8; BLOCK / 2] {
    std::array::from_fn(|i| (values[i] & 15) | (values[i + BLOCK / 2] & 15) << 4)
}

/// Unpacks one stored block of `format` (`format.stored_block().1` bytes), appending the codes
/// and scales of each of its blocks of 32 (one, or 8 for a K-quant super-block): the f16 scales
/// as stored (`scales` is [`Scales::Half`]), or `[scale, offset]` widened to f32 (K-quants,
/// [`Scales::Single`]).
pub(super) fn unpack(format: BlockFormat, stored: &[u8], codes: &mut Vec<u8>, scales: &mut Scales) {
    let half = |at: usize| f16::from_le_bytes([stored[at], stored[at + 1]]);
    match (format, scales) {
        // 32 values of 2 bytes each, no scales.
        (BlockFormat::F16 | BlockFormat::Bf16, Scales::Half(_)) => codes.extend_from_slice(stored),
        (BlockFormat::Q8_0 | BlockFormat::Q4_0, Scales::Half(halves)) => {
            codes.extend_from_slice(&stored[2..]);
            halves.push(half(0));
        }
        (BlockFormat::Q4_1, Scales::Half(halves)) => {
            codes.extend_from_slice(&stored[4..]);
            halves.extend([half(0), half(2)]);
        }
        (BlockFormat::Q5_0, Scales::Half(halves)) => {
            // Kept as nibbles, then the fifth bits (the stored `qh`, after them).
            codes.extend_from_slice(&stored[6..22]);
            codes.extend_from_slice(&stored[2..6]);
            halves.push(half(0));
        }
        (BlockFormat::Q4_K, Scales::Single(params)) => {
            let (d, dmin) = (read_f16(stored), read_f16(&stored[2..]));
            let (scales, qs) = (&stored[4..16], &stored[16..144]);
            for sub in 0..SUPER_BLOCK / BLOCK {
                let (sc, m) = q4_k_scale_min(scales, sub);
                let pair = &qs[BLOCK * (sub / 2)..BLOCK * (sub / 2 + 1)];
                let shift = 4 * (sub % 2);
                let values: [u8; BLOCK] = std::array::from_fn(|l| (pair[l] >> shift) & 15);
                codes.extend_from_slice(&nibbles(&values));
                params.push([d * sc as f32, -(dmin * m as f32)]);
            }
        }
        (BlockFormat::Q6_K, Scales::Single(params)) => {
            let (ql, qh, sub_scales, d) = (&stored[..128], &stored[128..192], &stored[192..208], read_f16(&stored[208..]));
            // Value `v` of the super-block: its half `n`, quarter `k` of the half, place `l`.
            let code = |v: usize| {
                let (n, k, l) = (v / 128, v % 128 / 32, v % 32);
                let low = (ql[64 * n + 32 * (k % 2) + l] >> (4 * (k / 2))) & 15;
                let high = (qh[32 * n + l] >> (2 * k)) & 3;
                low | high << 4
            };
            for block in 0..SUPER_BLOCK / BLOCK {
                let values: [u8; BLOCK] = std::array::from_fn(|i| code(BLOCK * block + i));
                codes.extend_from_slice(&nibbles(&values));
                let high = values.iter().enumerate().fold(0u64, |bits, (i, &q)| bits | u64::from(q >> 4) << (2 * i));
                codes.extend_from_slice(&high.to_le_bytes());
                let scale = |sub: usize| d * sub_scales[sub] as i8 as f32;
                params.push([scale(2 * block), scale(2 * block + 1)]);
            }
        }
        (format, _) => unreachable!("{format}'s scales held in the other kind ([`Scales::for_format`] chooses)"),
    }
}

/// Sub-block `j`'s 6-bit scale and min from Q4_K's 12 packed bytes: bytes 0..4 hold the scales
/// of sub-blocks 0..4 in their low 6 bits, bytes 4..8 their mins; sub-blocks 4..8 keep their low
/// 4 bits in bytes 8..12 (scale low nibble, min high nibble) and their top 2 bits in the top
/// bits of bytes 0..4 (scales) and 4..8 (mins).
fn q4_k_scale_min(q: &[u8], j: usize) -> (u8, u8) {
    if j < 4 { (q[j] & 63, q[j + 4] & 63) } else { ((q[j + 4] & 15) | (q[j - 4] >> 6) << 4, (q[j + 4] >> 4) | (q[j] >> 6) << 4) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scales and mins of every sub-block, each set alone, land where the packing says.
    #[test]
    fn q4_k_scales_and_mins_unpack_from_their_bits() {
        for j in 0..8 {
            for (sc, m) in [(63u8, 0u8), (0, 63), (37, 22)] {
                let mut q = [0u8; 12];
                if j < 4 {
                    (q[j], q[j + 4]) = (sc, m);
                } else {
                    q[j + 4] = (sc & 15) | (m & 15) << 4;
                    q[j - 4] |= (sc >> 4) << 6;
                    q[j] |= (m >> 4) << 6;
                }
                assert_eq!(q4_k_scale_min(&q, j), (sc, m), "sub-block {j}");
                for other in (0..8).filter(|&o| o != j) {
                    assert_eq!(q4_k_scale_min(&q, other), (0, 0), "sub-block {j} leaked into {other}");
                }
            }
        }
    }
}
