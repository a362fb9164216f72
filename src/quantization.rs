//! Block-quantized matrices as GGUF stores them (Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K), and 16-bit
//! floats (F16, BF16): a frozen base weight kept at 5-16 bits per value instead of 32, read by
//! the products in [`kernels::quantized`](crate::kernels::quantized) without an f32 copy.
//!
//! A matrix is row-major `[rows, cols]` (a linear's `[d_out, d_in]`, PyTorch's and GGUF's
//! layout), each row a run of blocks of [`BLOCK`] consecutive values. ggml's layouts, and how
//! they unpack into these blocks, are in [`stored`]; K-quant super-blocks of 256 values become
//! 8 blocks. In memory each block keeps its codes and two f32 parameters, value
//! `scale * q + offset`:
//! - Q8_0: 32 `i8` codes; `[d, 0]`.
//! - Q4_0, Q4_1, Q4_K: 16 bytes of 4-bit codes; `[d, -8d]`, `[d, m]`, `[d * sc, -dmin * m]`.
//! - Q5_0: 16 bytes of the low 4 bits, then 4 bytes of the fifth bits (bit `i` for value `i`);
//!   `[d, -16d]`.
//! - Q6_K: 16 bytes of the low 4 bits, then 8 bytes of the top 2 bits (bits `2i..2i + 2` for
//!   value `i`); two scales, `d * sc` of values 0..16 and of 16..32: value `scale * (q - 32)`.
//! - F16, BF16: the 32 values as 64 little-endian bytes; no scales (`[1, 0]`).
//!
//! In the 4-bit codes the low nibbles hold values 0..16 and the high nibbles values 16..32.
//! Quantizing (Q8_0, Q4_0, Q4_1) follows ggml's reference rounding, so a matrix quantized here
//! and by llama.cpp from the same f32 values gets the same codes.
//!
//! Q8_0, Q4_0, Q4_1 and Q5_0 keep the file's f16 scales, so they take the file's bytes (8.5, 4.5,
//! 5 and 5.5 bits a weight); a product widens each block's scales as it reads the block, with
//! one F16C instruction (converting them in software made the product compute-bound).
//! Q4_K's and Q6_K's scales are products of the super-block's f16 scale and a 6- or 8-bit
//! sub-block scale, which an f16 cannot hold: they are widened to f32 at load (8 bytes per
//! block: 6 bits a weight against the file's 4.5, 8 against 6.56).

use half::{bf16, f16};

use crate::error::{Error, Result};

pub mod stored;
pub mod words;

/// Values per block (every format here; a K-quant super-block is 8 of them).
pub const BLOCK: usize = 32;

/// A block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockFormat {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    #[serde(rename = "q4_k")]
    #[allow(non_camel_case_types)] // ggml's names
    Q4_K,
    #[serde(rename = "q6_k")]
    #[allow(non_camel_case_types)]
    Q6_K,
    /// IEEE half precision, 16 bits a weight and no scales (GGUF's F16, `--quantize f16`).
    F16,
    /// bfloat16: f32's exponent with 8 bits of mantissa, 16 bits a weight (GGUF's BF16).
    Bf16,
}

impl BlockFormat {
    pub const ALL: [BlockFormat; 8] = [
        BlockFormat::Q8_0,
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q4_K,
        BlockFormat::Q6_K,
        BlockFormat::F16,
        BlockFormat::Bf16,
    ];

    /// The formats [`QuantizedMatrix::quantize`] produces from f32 values (the others are read
    /// from files only).
    pub const QUANTIZABLE: [BlockFormat; 5] =
        [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::F16, BlockFormat::Bf16];

    /// (values, bytes) of a block as GGUF stores it.
    pub fn stored_block(self) -> (usize, usize) {
        match self {
            BlockFormat::Q8_0 => (BLOCK, 34),
            BlockFormat::Q4_0 => (BLOCK, 18),
            BlockFormat::Q4_1 => (BLOCK, 20),
            BlockFormat::Q5_0 => (BLOCK, 22),
            BlockFormat::Q4_K => (stored::SUPER_BLOCK, 144),
            BlockFormat::Q6_K => (stored::SUPER_BLOCK, 210),
            BlockFormat::F16 | BlockFormat::Bf16 => (BLOCK, 64),
        }
    }

    /// The name users type (`--quantize q4_1`) and GGUF tools print (upper case).
    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::Q8_0 => "q8_0",
            BlockFormat::Q4_0 => "q4_0",
            BlockFormat::Q4_1 => "q4_1",
            BlockFormat::Q5_0 => "q5_0",
            BlockFormat::Q4_K => "q4_k",
            BlockFormat::Q6_K => "q6_k",
            BlockFormat::F16 => "f16",
            BlockFormat::Bf16 => "bf16",
        }
    }

    /// Whether values are stored as 16-bit floats (F16, BF16), with no codes or scales.
    pub fn is_16_bit_float(self) -> bool {
        matches!(self, BlockFormat::F16 | BlockFormat::Bf16)
    }

    /// The f16 scales per block a matrix of this format keeps as the file has them (`d`, and
    /// Q4_1's `m`; none for the 16-bit floats); `None` where they are widened to f32.
    pub fn half_scales(self) -> Option<usize> {
        match self {
            BlockFormat::F16 | BlockFormat::Bf16 => Some(0),
            BlockFormat::Q8_0 | BlockFormat::Q4_0 | BlockFormat::Q5_0 => Some(1),
            BlockFormat::Q4_1 => Some(2),
            BlockFormat::Q4_K | BlockFormat::Q6_K => None,
        }
    }

    /// A block's `[scale, offset]` from its f16 scales (value `scale * q + offset`, `q` the code
    /// as stored: Q4_0's and Q5_0's centre is in the offset).
    #[inline(always)]
    pub fn params_of(self, d: f32, m: f32) -> [f32; 2] {
        match self {
            BlockFormat::Q4_0 => [d, -8.0 * d],
            BlockFormat::Q5_0 => [d, -16.0 * d],
            BlockFormat::Q4_1 => [d, m],
            _ => [d, 0.0],
        }
    }

    /// Bytes of codes per block of [`BLOCK`] values in memory (the module's layouts).
    pub fn code_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 32,
            BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q4_K => 16,
            BlockFormat::Q5_0 => 20,
            BlockFormat::Q6_K => 24,
            BlockFormat::F16 | BlockFormat::Bf16 => 64,
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
    /// Every block's scales, in the same order.
    scales: Scales,
}

/// One row's scales as held: the file's f16 scales, or `[scale, offset]` pairs widened to f32.
#[derive(Clone, Copy)]
pub enum RowScales<'a> {
    Half(&'a [f16]),
    Single(&'a [[f32; 2]]),
}

impl RowScales<'_> {
    /// Block `j`'s `[scale, offset]` (value `scale * q + offset`).
    #[inline(always)]
    pub fn params(self, format: BlockFormat, j: usize) -> [f32; 2] {
        match self {
            RowScales::Single(v) => v[j],
            RowScales::Half(_) if format.is_16_bit_float() => [1.0, 0.0],
            RowScales::Half(v) if format.half_scales() == Some(2) => format.params_of(v[2 * j].to_f32(), v[2 * j + 1].to_f32()),
            RowScales::Half(v) => format.params_of(v[j].to_f32(), 0.0),
        }
    }
}

/// The blocks' scales as held.
#[derive(Clone, PartialEq)]
pub(crate) enum Scales {
    /// The file's f16 scales, [`BlockFormat::half_scales`] per block.
    Half(Vec<f16>),
    /// `[scale, offset]` per block: value `scale * q + offset` (Q6_K: the scales of its halves).
    Single(Vec<[f32; 2]>),
}

impl Scales {
    pub(crate) fn for_format(format: BlockFormat) -> Self {
        if format.half_scales().is_some() { Scales::Half(Vec::new()) } else { Scales::Single(Vec::new()) }
    }

    fn bytes(&self) -> usize {
        match self {
            Scales::Half(v) => 2 * v.len(),
            Scales::Single(v) => 8 * v.len(),
        }
    }
}

impl std::fmt::Debug for QuantizedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantizedMatrix({} [{}, {}], {} bytes)", self.format, self.rows, self.cols, self.size_bytes())
    }
}

/// One block: its codes and `[scale, offset]` (Q6_K: the scales of its two halves; the offset
/// of Q4_0 and Q5_0 is `-centre * scale`, for the products).
#[derive(Clone, Copy)]
pub struct Block<'a> {
    pub params: [f32; 2],
    pub codes: &'a [u8],
}

impl Block<'_> {
    /// The 32 codes in value order, less the format's centre where it has one (Q4_0's 8,
    /// Q5_0's 16, Q6_K's 32; Q8_0's read as `i8`).
    #[inline(always)]
    fn codes(&self, format: BlockFormat) -> [i32; BLOCK] {
        let half = BLOCK / 2;
        let nibble = |i: usize| i32::from(if i < half { self.codes[i] & 15 } else { self.codes[i - half] >> 4 });
        match format {
            BlockFormat::Q8_0 => std::array::from_fn(|i| i32::from(self.codes[i] as i8)),
            BlockFormat::Q4_1 | BlockFormat::Q4_K => std::array::from_fn(nibble),
            BlockFormat::Q4_0 => std::array::from_fn(|i| nibble(i) - 8),
            BlockFormat::Q5_0 => {
                let high = u32::from_le_bytes(self.codes[half..half + 4].try_into().expect("4 bytes"));
                std::array::from_fn(|i| (nibble(i) | ((high >> i & 1) << 4) as i32) - 16)
            }
            BlockFormat::Q6_K => {
                let high = u64::from_le_bytes(self.codes[half..half + 8].try_into().expect("8 bytes"));
                std::array::from_fn(|i| (nibble(i) | ((high >> (2 * i) & 3) << 4) as i32) - 32)
            }
            BlockFormat::F16 | BlockFormat::Bf16 => unreachable!("{format} holds values, not codes"),
        }
    }

    /// The 32 values into `out`, computed as ggml's `dequantize_row_*` does, so that they are
    /// the same f32 values, signed zeros included: `d * (q - centre)`, or for Q4_1 and Q4_K
    /// `scale * q + offset` (`scale * q` is exact, so this rounds once, as ggml does).
    #[inline(always)]
    pub(crate) fn widen(&self, format: BlockFormat, out: &mut [f32]) {
        let halves = || self.codes.chunks_exact(2).map(|b| [b[0], b[1]]);
        match format {
            BlockFormat::F16 => return out.iter_mut().zip(halves()).for_each(|(o, b)| *o = f16::from_le_bytes(b).to_f32()),
            BlockFormat::Bf16 => return out.iter_mut().zip(halves()).for_each(|(o, b)| *o = bf16::from_le_bytes(b).to_f32()),
            _ => {}
        }
        let codes = self.codes(format);
        let [scale, offset] = self.params;
        match format {
            BlockFormat::Q4_1 | BlockFormat::Q4_K => out.iter_mut().zip(codes).for_each(|(o, q)| *o = scale * q as f32 + offset),
            BlockFormat::Q6_K => {
                let (first, second) = out.split_at_mut(BLOCK / 2);
                first.iter_mut().zip(&codes[..BLOCK / 2]).for_each(|(o, &q)| *o = scale * q as f32);
                second.iter_mut().zip(&codes[BLOCK / 2..]).for_each(|(o, &q)| *o = offset * q as f32);
            }
            BlockFormat::Q8_0 | BlockFormat::Q4_0 | BlockFormat::Q5_0 => out.iter_mut().zip(codes).for_each(|(o, q)| *o = scale * q as f32),
            BlockFormat::F16 | BlockFormat::Bf16 => unreachable!("widened above"),
        }
    }
}

impl QuantizedMatrix {
    /// A matrix from blocks as GGUF stores them; `what` names the source in errors.
    pub fn from_blocks(format: BlockFormat, rows: usize, cols: usize, data: &[u8], what: &str) -> Result<Self> {
        Self::from_blocks_with(format, rows, cols, data, what, |_| ())
    }

    /// [`QuantizedMatrix::from_blocks`], handing each piece of `data` to `unpacked` once it is
    /// (so that a mapped file's pages can be given back as they are read).
    pub fn from_blocks_with(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        data: &[u8],
        what: &str,
        mut unpacked: impl FnMut(&[u8]),
    ) -> Result<Self> {
        let (per_block, block_bytes) = format.stored_block();
        if !cols.is_multiple_of(per_block) {
            return Err(Error::Config(format!("{what}: rows of {cols} values are not whole {format} blocks of {per_block}")));
        }
        let expected = rows * cols / per_block * block_bytes;
        if data.len() != expected {
            return Err(Error::Config(format!("{what}: {} bytes of {format} data where [{rows}, {cols}] needs {expected}", data.len())));
        }
        let blocks = rows * cols / BLOCK;
        let (mut codes, mut scales) = (Vec::with_capacity(blocks * format.code_bytes()), Scales::for_format(format));
        for piece in data.chunks(block_bytes << 15) {
            for stored in piece.chunks_exact(block_bytes) {
                stored::unpack(format, stored, &mut codes, &mut scales);
            }
            unpacked(piece);
        }
        Self::checked(format, rows, cols, codes, scales, what)
    }

    /// The matrix of `codes` and `scales`, refusing a non-finite scale.
    fn checked(format: BlockFormat, rows: usize, cols: usize, codes: Vec<u8>, scales: Scales, what: &str) -> Result<Self> {
        // A NaN/Inf scale would only show up later as NaN outputs.
        let bad = match &scales {
            Scales::Half(v) => v.iter().position(|d| !d.is_finite()).map(|k| (k / format.half_scales().unwrap_or(1), v[k].to_f32())),
            Scales::Single(v) => {
                v.iter().position(|p| !p.iter().all(|x| x.is_finite())).map(|k| (k, v[k][usize::from(v[k][0].is_finite())]))
            }
        };
        if let Some((block, value)) = bad {
            return Err(Error::Config(format!(
                "{what}: row {} has a non-finite block scale ({value}); the file is corrupt",
                block / (cols / BLOCK)
            )));
        }
        Ok(Self { format, rows, cols, codes, scales })
    }

    /// Quantizes row-major `[rows, cols]` f32 values (`cols` a multiple of [`BLOCK`]).
    pub fn quantize(format: BlockFormat, rows: usize, cols: usize, values: &[f32], what: &str) -> Result<Self> {
        assert_eq!(values.len(), rows * cols, "values of the wrong length");
        Self::quantize_rows(format, rows, cols, what, |range, out| {
            out.extend_from_slice(&values[range.start * cols..range.end * cols]);
            Ok(())
        })
    }

    /// [`QuantizedMatrix::quantize`] of values that `rows_of(range, out)` appends to `out` a few
    /// rows at a time, so that no f32 copy of the whole matrix is ever made (a file's matrix
    /// converted as it is read).
    pub fn quantize_rows(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        what: &str,
        mut rows_of: impl FnMut(std::ops::Range<usize>, &mut Vec<f32>) -> Result<()>,
    ) -> Result<Self> {
        if !BlockFormat::QUANTIZABLE.contains(&format) {
            return Err(Error::Config(format!("{what}: quantizing to {format} is not supported (only reading it from a file)")));
        }
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::Config(format!("{what}: rows of {cols} values cannot be split into {format} blocks of {BLOCK}")));
        }
        const CHUNK_VALUES: usize = 1 << 20;
        let chunk = (CHUNK_VALUES / cols.max(1)).max(1);
        let (mut codes, mut scales) = (Vec::with_capacity(rows * cols / BLOCK * format.code_bytes()), Scales::for_format(format));
        let (mut values, mut stored) = (Vec::with_capacity(chunk.min(rows) * cols), Vec::new());
        for start in (0..rows).step_by(chunk) {
            let end = (start + chunk).min(rows);
            values.clear();
            rows_of(start..end, &mut values)?;
            assert_eq!(values.len(), (end - start) * cols, "rows of the wrong length");
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(Error::Config(format!("{what}: cannot quantize a matrix holding {bad}")));
            }
            if format == BlockFormat::F16
                && let Some(big) = values.iter().find(|v| v.abs() > f16::MAX.to_f32())
            {
                return Err(Error::Config(format!("{what}: {big} is beyond f16's range (65504); bf16 holds it")));
            }
            for block in values.chunks_exact(BLOCK) {
                stored.clear();
                quantize_block(format, block, &mut stored);
                stored::unpack(format, &stored, &mut codes, &mut scales);
            }
        }
        Self::checked(format, rows, cols, codes, scales, what)
    }

    /// Bytes held in memory (and read by a product): codes and scales.
    pub fn size_bytes(&self) -> usize {
        self.codes.len() + self.scales.bytes()
    }

    /// Every block's codes, in row order: for the 16-bit floats, the values as stored
    /// (little-endian), row after row.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// Row `i`'s codes.
    pub fn row_codes(&self, i: usize) -> &[u8] {
        let row_bytes = self.blocks_per_row() * self.format.code_bytes();
        &self.codes[i * row_bytes..(i + 1) * row_bytes]
    }

    /// Row `i`'s scales as held.
    pub fn row_scales(&self, i: usize) -> RowScales<'_> {
        let n = self.scale_entries_per_row();
        match &self.scales {
            Scales::Single(v) => RowScales::Single(&v[i * n..(i + 1) * n]),
            Scales::Half(v) => RowScales::Half(&v[i * n..(i + 1) * n]),
        }
    }

    /// Entries of [`Scales`] per row: f16 values, or `[scale, offset]` pairs (one per block).
    fn scale_entries_per_row(&self) -> usize {
        self.blocks_per_row() * self.format.half_scales().unwrap_or(1)
    }

    pub fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    /// Block `j` of row `i`.
    #[inline(always)]
    pub fn block(&self, i: usize, j: usize) -> Block<'_> {
        let k = i * self.blocks_per_row() + j;
        let size = self.format.code_bytes();
        Block { params: self.row_scales(i).params(self.format, j), codes: &self.codes[k * size..(k + 1) * size] }
    }

    /// Row `i` as f32 values into `out` (`cols` long).
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) {
        for (j, out) in out.chunks_exact_mut(BLOCK).enumerate() {
            self.block(i, j).widen(self.format, out);
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
        self.gather_rows(order)
    }

    /// Rows `start..end` as a matrix of their own (one block of a fused projection).
    pub fn row_block(&self, start: usize, end: usize) -> Self {
        self.gather_rows(&(start..end).collect::<Vec<_>>())
    }

    fn gather_rows(&self, rows: &[usize]) -> Self {
        let codes = rows.iter().flat_map(|&i| self.row_codes(i)).copied().collect();
        let n = self.scale_entries_per_row();
        let scales = match &self.scales {
            Scales::Single(v) => Scales::Single(rows.iter().flat_map(|&i| &v[i * n..(i + 1) * n]).copied().collect()),
            Scales::Half(v) => Scales::Half(rows.iter().flat_map(|&i| &v[i * n..(i + 1) * n]).copied().collect()),
        };
        Self { codes, scales, rows: rows.len(), ..*self }
    }
}

/// Appends the quantized `block` (32 values), rounding as ggml's reference quantizers do; for
/// the [quantizable](BlockFormat::QUANTIZABLE) formats.
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
        // Rounded to nearest, ties to even.
        BlockFormat::F16 => out.extend(block.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes())),
        BlockFormat::Bf16 => out.extend(block.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes())),
        other => unreachable!("quantize() refuses {other}"),
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
        for format in BlockFormat::QUANTIZABLE {
            let q = QuantizedMatrix::quantize(format, rows, cols, &x, "test").unwrap();
            // The file's bytes: codes and f16 scales.
            assert_eq!(q.size_bytes(), rows * cols / BLOCK * format.stored_block().1);
            let y = q.dequantize();
            for (b, (xb, yb)) in x.chunks(BLOCK).zip(y.chunks(BLOCK)).enumerate() {
                let (lo, hi) = xb.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let amax = lo.abs().max(hi.abs());
                let step = match format {
                    BlockFormat::Q8_0 => amax / 127.0,
                    BlockFormat::Q4_0 => 2.0 * amax / 8.0,
                    BlockFormat::Q4_1 => (hi - lo) / 15.0,
                    // Twice the largest rounding error (half an ulp: 2^-11 and 2^-8 of the value).
                    BlockFormat::F16 => amax / 1024.0,
                    BlockFormat::Bf16 => amax / 128.0,
                    other => unreachable!("{other} is not quantizable"),
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
        for format in BlockFormat::QUANTIZABLE {
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
        let e = QuantizedMatrix::from_blocks(BlockFormat::Q4_0, 2, 32, &[0; 20], "w").unwrap_err().to_string();
        assert!(e.contains("needs 36"), "{e}");
        assert_eq!("Q4_1".parse::<BlockFormat>(), Ok(BlockFormat::Q4_1));
        assert_eq!("Q6_K".parse::<BlockFormat>(), Ok(BlockFormat::Q6_K));
        assert!("q5_1".parse::<BlockFormat>().unwrap_err().contains("q8_0, q4_0, q4_1, q5_0, q4_k, q6_k, f16, bf16"));
        let e = QuantizedMatrix::quantize(BlockFormat::F16, 1, 32, &[7e4; 32], "w").unwrap_err().to_string();
        assert!(e.contains("beyond f16's range"), "{e}");
        assert!(QuantizedMatrix::quantize(BlockFormat::Bf16, 1, 32, &[7e4; 32], "w").is_ok());
        let e = QuantizedMatrix::quantize(BlockFormat::Q4_K, 1, 256, &[0.0; 256], "w").unwrap_err().to_string();
        assert!(e.contains("quantizing to q4_k is not supported"), "{e}");
        let e = QuantizedMatrix::from_blocks(BlockFormat::Q6_K, 1, 128, &[0; 105], "w").unwrap_err().to_string();
        assert!(e.contains("not whole q6_k blocks of 256"), "{e}");
    }
}
