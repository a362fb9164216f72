//! Block-quantized matrices as GGUF stores them (Q8_0, Q4_0, Q4_1): a frozen base weight kept
//! at 4.5-8.5 bits per value instead of 32, read by the products in
//! [`kernels::quantized`](crate::kernels::quantized) without an f32 copy.
//!
//! A matrix is row-major `[rows, cols]` (a linear's `[d_out, d_in]`, PyTorch's and GGUF's
//! layout), each row a run of blocks of [`BLOCK`] consecutive values. Per block, with `d` and
//! `m` stored as f16:
//! - Q8_0: `d`, 32 `i8` codes; value `d * q`.
//! - Q4_0: `d`, 16 bytes of 4-bit codes; value `d * (q - 8)`.
//! - Q4_1: `d`, `m`, 16 bytes of 4-bit codes; value `d * q + m`.
//!
//! In 4-bit blocks the low nibbles hold values 0..16 and the high nibbles values 16..32.
//! Quantizing follows ggml's reference rounding, so a matrix quantized here and by llama.cpp
//! from the same f32 values gets the same codes.
//!
//! In memory the codes are kept as stored and each block's f16 scale and offset (0, `-8d` or
//! `m`) are widened to f32 beside them: 4 more bytes per block (Q4_1: 6 bits a weight instead
//! of 5), so that a product broadcasts them from memory instead of converting two halves per
//! block (which made the product compute-bound, at 2-5 GB/s).

use half::f16;

use crate::error::{Error, Result};

/// Values per block (every format here).
pub const BLOCK: usize = 32;

/// A block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockFormat {
    Q8_0,
    Q4_0,
    Q4_1,
}

impl BlockFormat {
    pub const ALL: [BlockFormat; 3] = [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1];

    /// Bytes per block of [`BLOCK`] values.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
        }
    }

    /// The name users type (`--quantize q4_1`) and GGUF tools print (upper case).
    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::Q8_0 => "q8_0",
            BlockFormat::Q4_0 => "q4_0",
            BlockFormat::Q4_1 => "q4_1",
        }
    }

    /// Offset of the codes in a stored block (after the f16 scale, and Q4_1's f16 minimum).
    fn codes_at(self) -> usize {
        match self {
            BlockFormat::Q4_1 => 4,
            _ => 2,
        }
    }

    /// Bytes of codes per block: 32 `i8`, or 16 bytes of nibbles.
    pub fn code_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 32,
            _ => 16,
        }
    }
}

impl std::fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BlockFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
            format!("unknown quantization {s:?} (one of {})", names.join(", "))
        })
    }
}

/// A `[rows, cols]` matrix of blocks.
#[derive(Clone, PartialEq)]
pub struct QuantizedMatrix {
    pub format: BlockFormat,
    pub rows: usize,
    pub cols: usize,
    /// Every block's codes, blocks in row order.
    codes: Vec<u8>,
    /// Every block's `[scale, offset]`: value `scale * q + offset`.
    params: Vec<[f32; 2]>,
}

impl std::fmt::Debug for QuantizedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantizedMatrix({} [{}, {}], {} bytes)", self.format, self.rows, self.cols, self.size_bytes())
    }
}

/// One block: value `i` is `scale * q_i + offset` (`q_i` signed for Q8_0, a nibble for Q4).
#[derive(Clone, Copy)]
pub struct Block<'a> {
    pub scale: f32,
    pub offset: f32,
    pub codes: &'a [u8],
}

fn read_f16(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

impl QuantizedMatrix {
    /// A matrix from stored blocks; `what` names the source in errors.
    pub fn from_blocks(format: BlockFormat, rows: usize, cols: usize, data: Vec<u8>, what: &str) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::Config(format!("{what}: rows of {cols} values are not whole {format} blocks of {BLOCK}")));
        }
        let expected = rows * cols / BLOCK * format.block_bytes();
        if data.len() != expected {
            return Err(Error::Config(format!("{what}: {} bytes of {format} data where [{rows}, {cols}] needs {expected}", data.len())));
        }
        let (mut codes, mut params) =
            (Vec::with_capacity(rows * cols / format.code_bytes().max(1)), Vec::with_capacity(rows * cols / BLOCK));
        for (k, block) in data.chunks_exact(format.block_bytes()).enumerate() {
            let scale = read_f16(&block[..2]);
            let offset = match format {
                BlockFormat::Q8_0 => 0.0,
                BlockFormat::Q4_0 => -8.0 * scale,
                BlockFormat::Q4_1 => read_f16(&block[2..4]),
            };
            // A NaN/Inf scale would only show up later as NaN outputs.
            if !(scale.is_finite() && offset.is_finite()) {
                let row = k / (cols / BLOCK);
                return Err(Error::Config(format!(
                    "{what}: row {row} has a non-finite block scale ({scale} / {offset}); the file is corrupt"
                )));
            }
            codes.extend_from_slice(&block[format.codes_at()..]);
            params.push([scale, offset]);
        }
        let m = Self { format, rows, cols, codes, params };
        Ok(m)
    }

    /// Quantizes row-major `[rows, cols]` f32 values (`cols` a multiple of [`BLOCK`]).
    pub fn quantize(format: BlockFormat, rows: usize, cols: usize, values: &[f32], what: &str) -> Result<Self> {
        assert_eq!(values.len(), rows * cols, "values of the wrong length");
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::Config(format!("{what}: rows of {cols} values cannot be split into {format} blocks of {BLOCK}")));
        }
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::Config(format!("{what}: cannot quantize a matrix holding {bad}")));
        }
        let mut data = Vec::with_capacity(values.len() / BLOCK * format.block_bytes());
        for block in values.chunks_exact(BLOCK) {
            quantize_block(format, block, &mut data);
        }
        Self::from_blocks(format, rows, cols, data, what)
    }

    /// Bytes held in memory (and read by a product): codes and widened scales.
    pub fn size_bytes(&self) -> usize {
        self.codes.len() + self.params.len() * std::mem::size_of::<[f32; 2]>()
    }

    /// Row `i`'s codes and `[scale, offset]` pairs.
    pub fn row(&self, i: usize) -> (&[u8], &[[f32; 2]]) {
        let (blocks, code_bytes) = (self.blocks_per_row(), self.format.code_bytes());
        (&self.codes[i * blocks * code_bytes..(i + 1) * blocks * code_bytes], &self.params[i * blocks..(i + 1) * blocks])
    }

    pub fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    /// Block `j` of row `i`.
    #[inline(always)]
    pub fn block(&self, i: usize, j: usize) -> Block<'_> {
        let k = i * self.blocks_per_row() + j;
        let size = self.format.code_bytes();
        let [scale, offset] = self.params[k];
        Block { scale, offset, codes: &self.codes[k * size..(k + 1) * size] }
    }

    /// Row `i` as f32 values into `out` (`cols` long).
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) {
        for (j, out) in out.chunks_exact_mut(BLOCK).enumerate() {
            let b = self.block(i, j);
            match self.format {
                BlockFormat::Q8_0 => out.iter_mut().zip(b.codes).for_each(|(o, &q)| *o = b.scale * q as i8 as f32),
                BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                    let (lo, hi) = out.split_at_mut(BLOCK / 2);
                    for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(b.codes) {
                        *lo = b.scale * (q & 15) as f32 + b.offset;
                        *hi = b.scale * (q >> 4) as f32 + b.offset;
                    }
                }
            }
        }
    }

    /// All values, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (i, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.dequantize_row(i, row);
        }
        out
    }

    /// The matrix with its rows reordered: row `i` of the result is row `order[i]` of this one.
    pub fn permute_rows(&self, order: &[usize]) -> Self {
        assert_eq!(order.len(), self.rows, "a row order of the wrong length");
        let codes = order.iter().flat_map(|&i| self.row(i).0).copied().collect();
        let params = order.iter().flat_map(|&i| self.row(i).1).copied().collect();
        Self { codes, params, ..*self }
    }
}

/// Appends the quantized `block` (32 values), rounding as ggml's reference quantizers do.
fn quantize_block(format: BlockFormat, block: &[f32], out: &mut Vec<u8>) {
    let inverse = |d: f32| if d != 0.0 { 1.0 / d } else { 0.0 };
    match format {
        BlockFormat::Q8_0 => {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = inverse(d);
            out.extend(f16::from_f32(d).to_le_bytes());
            out.extend(block.iter().map(|&v| (v * id).round() as i8 as u8));
        }
        BlockFormat::Q4_0 => {
            // The value of largest magnitude, with its sign, maps to code 0 (-8).
            let max = block.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let d = max / -8.0;
            let id = inverse(d);
            out.extend(f16::from_f32(d).to_le_bytes());
            let code = |v: f32| ((v * id + 8.5) as u8).min(15);
            out.extend((0..BLOCK / 2).map(|i| code(block[i]) | (code(block[i + BLOCK / 2]) << 4)));
        }
        BlockFormat::Q4_1 => {
            let (min, max) = block.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let d = (max - min) / 15.0;
            let id = inverse(d);
            out.extend(f16::from_f32(d).to_le_bytes());
            out.extend(f16::from_f32(min).to_le_bytes());
            let code = |v: f32| (((v - min) * id + 0.5) as u8).min(15);
            out.extend((0..BLOCK / 2).map(|i| code(block[i]) | (code(block[i + BLOCK / 2]) << 4)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((((i * 37 + seed * 11) % 101) as f32) - 50.0) / 40.0 * (1.0 + (i % 7) as f32)).collect()
    }

    /// Each format's error stays within half a step of its block (plus the f16 rounding of the
    /// scale; Q4_0, whose codes reach -8 steps but only +7, within a step), and the bytes per
    /// value are as GGUF has them.
    #[test]
    fn quantize_then_dequantize_is_within_the_step() {
        let (rows, cols) = (5, 96);
        let x = values(rows * cols, 1);
        for format in BlockFormat::ALL {
            let q = QuantizedMatrix::quantize(format, rows, cols, &x, "test").unwrap();
            assert_eq!(q.size_bytes(), rows * cols / BLOCK * (format.code_bytes() + 8));
            let y = q.dequantize();
            for (b, (xb, yb)) in x.chunks(BLOCK).zip(y.chunks(BLOCK)).enumerate() {
                let (lo, hi) = xb.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let amax = lo.abs().max(hi.abs());
                let step = match format {
                    BlockFormat::Q8_0 => amax / 127.0,
                    BlockFormat::Q4_0 => 2.0 * amax / 8.0,
                    BlockFormat::Q4_1 => (hi - lo) / 15.0,
                };
                let worst = xb.iter().zip(yb).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst <= 0.5 * step * 1.01 + amax * 2e-3, "{format} block {b}: error {worst}, step {step}");
            }
        }
    }

    /// Dequantizing and quantizing again gives the same bytes (codes on the grid stay put).
    #[test]
    fn requantizing_is_stable() {
        let x = values(2 * 64, 2);
        for format in BlockFormat::ALL {
            let q = QuantizedMatrix::quantize(format, 2, 64, &x, "test").unwrap();
            let again = QuantizedMatrix::quantize(format, 2, 64, &q.dequantize(), "test").unwrap();
            assert_eq!(q.dequantize(), again.dequantize(), "{format}");
        }
    }

    #[test]
    fn permuting_rows_moves_whole_rows() {
        let x = values(3 * 32, 3);
        let q = QuantizedMatrix::quantize(BlockFormat::Q4_1, 3, 32, &x, "test").unwrap();
        let p = q.permute_rows(&[2, 0, 1]).dequantize();
        let d = q.dequantize();
        assert_eq!(&p[..32], &d[64..]);
        assert_eq!(&p[32..64], &d[..32]);
    }

    #[test]
    fn bad_shapes_and_values_are_errors() {
        let e = QuantizedMatrix::quantize(BlockFormat::Q8_0, 1, 40, &[0.0; 40], "w").unwrap_err().to_string();
        assert!(e.contains("40 values"), "{e}");
        let e = QuantizedMatrix::quantize(BlockFormat::Q8_0, 1, 32, &[f32::NAN; 32], "w").unwrap_err().to_string();
        assert!(e.contains("NaN"), "{e}");
        let e = QuantizedMatrix::from_blocks(BlockFormat::Q4_0, 2, 32, vec![0; 20], "w").unwrap_err().to_string();
        assert!(e.contains("needs 36"), "{e}");
        assert_eq!("Q4_1".parse::<BlockFormat>(), Ok(BlockFormat::Q4_1));
        assert!("q5_0".parse::<BlockFormat>().unwrap_err().contains("q8_0, q4_0, q4_1"));
    }
}
