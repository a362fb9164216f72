//! A quantized matrix in the form it takes on a device other than the CPU: its codes packed
//! into 32-bit words, with a scale (and an offset) per group of values.
//!
//! burn's int tensors are 32-bit on every backend and WGSL has no 8-bit type, so the codes go
//! into `i32` words: eight 4-bit codes or four 8-bit ones to a word. The device unpacks them
//! with shifts and masks and widens them to f32 (`adapters::FrozenBlocks`), computing each value
//! as [`Block::widen`](super::Block) does on the host, so the two are equal bit for bit.

use super::{BLOCK, BlockFormat, QuantizedMatrix};

/// A matrix's codes and scales, packed for a device: value `k` of a row is
/// `scale * (code - centre) + offset`, with the scale (and offset) of its group.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedWords {
    /// Bits per code: 4 (Q4_0, Q4_1, Q4_K) or 8 (Q8_0, Q5_0, Q6_K).
    pub bits: u32,
    /// What each code less `centre` is multiplied by: Q8_0's 128 (its codes are stored
    /// unsigned, shifted by it), Q4_0's 8, Q5_0's 16, Q6_K's 32, or 0.
    pub centre: i32,
    /// Values per scale: [`BLOCK`], or 16 for Q6_K's halves.
    pub group: usize,
    /// `[rows, cols * bits / 32]`: value `k` of a row is bits `bits * (k % n)..` of word `k / n`,
    /// `n = 32 / bits`.
    pub words: Vec<i32>,
    /// `[rows, cols / group]`.
    pub scales: Vec<f32>,
    /// `[rows, cols / group]`, for the formats with a minimum (Q4_1, Q4_K).
    pub offsets: Option<Vec<f32>>,
}

impl PackedWords {
    /// Codes per word.
    pub fn per_word(&self) -> usize {
        (32 / self.bits) as usize
    }
}

impl QuantizedMatrix {
    /// The codes packed into words; `None` for the 16-bit floats, which go to a device as they are.
    pub fn packed_words(&self) -> Option<PackedWords> {
        use BlockFormat::*;
        let (bits, centre) = match self.format {
            Q4_0 => (4, 8),
            Q4_1 | Q4_K => (4, 0),
            Q8_0 => (8, 128),
            Q5_0 => (8, 16),
            Q6_K => (8, 32),
            F16 | Bf16 => return None,
        };
        let group = if self.format == Q6_K { BLOCK / 2 } else { BLOCK };
        let per_word = (32 / bits) as usize;
        let mut words = Vec::with_capacity(self.rows * self.cols / per_word);
        let mut scales = Vec::with_capacity(self.rows * self.cols / group);
        let mut offsets = matches!(self.format, Q4_1 | Q4_K).then(|| Vec::with_capacity(self.rows * self.blocks_per_row()));
        for i in 0..self.rows {
            for j in 0..self.blocks_per_row() {
                let block = self.block(i, j);
                for codes in block.codes(self.format).chunks_exact(per_word) {
                    let word = codes.iter().enumerate().fold(0u32, |word, (k, &q)| word | ((q + centre) as u32) << (bits as usize * k));
                    words.push(word as i32);
                }
                // Q4_0's and Q5_0's offsets are `-centre * scale`: the device subtracts the
                // centre from the codes instead, as the host does.
                let [scale, second] = block.params;
                match &mut offsets {
                    Some(offsets) => {
                        scales.push(scale);
                        offsets.push(second);
                    }
                    None if self.format == Q6_K => scales.extend([scale, second]),
                    None => scales.push(scale),
                }
            }
        }
        Some(PackedWords { bits, centre, group, words, scales, offsets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unpacking the words as the device does gives every value [`QuantizedMatrix::dequantize`]
    /// gives, bit for bit.
    #[test]
    fn unpacked_words_are_the_dequantized_values() {
        let (rows, cols) = (3, 64);
        let values: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1] {
            let m = QuantizedMatrix::quantize(format, rows, cols, &values, "w").unwrap();
            let p = m.packed_words().unwrap();
            let n = p.per_word();
            let unpacked: Vec<f32> = (0..rows * cols)
                .map(|k| {
                    let code = (p.words[k / n] >> (p.bits as usize * (k % n))) & ((1 << p.bits) - 1);
                    let g = k / p.group;
                    let value = (code - p.centre) as f32 * p.scales[g];
                    p.offsets.as_ref().map_or(value, |o| value + o[g])
                })
                .collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&unpacked), bits(&m.dequantize()), "{format}");
        }
        assert!(QuantizedMatrix::quantize(BlockFormat::Bf16, rows, cols, &values, "w").unwrap().packed_words().is_none());
    }
}
