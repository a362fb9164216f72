//! GGUF (llama.cpp's model file, versions 2 and 3): metadata, tensors dequantized to f32, and
//! the decoder view of a file (Hugging Face config, tensor names and layout, in `gguf/decoder.rs`); its
//! tokenizer is built in `gguf_tokenizer.rs`.
//!
//! Layout: magic `GGUF`, version, tensor count, metadata count, the metadata (typed key/value
//! pairs), one info per tensor (name, dims with the fastest dimension first, type, offset),
//! then the tensor data, aligned to `general.alignment` (32 by default). Everything is little
//! endian. Supported tensor types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod decoder;

pub use decoder::{permute_rows, rotary_row_order};

use super::HostTensor;
use crate::error::{Error, Result};
use crate::quantization::{BLOCK, BlockFormat, QuantizedMatrix};

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// The ggml tensor types this reader dequantizes (others are named in errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    #[allow(non_camel_case_types)] // ggml's names
    Q4_K,
    #[allow(non_camel_case_types)]
    Q6_K,
    Other(u32),
}

impl GgmlType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            14 => GgmlType::Q6_K,
            30 => GgmlType::Bf16,
            other => GgmlType::Other(other),
        }
    }

    /// The block format of a quantized or 16-bit type that [`QuantizedMatrix`] keeps as stored.
    pub fn block_format(self) -> Option<BlockFormat> {
        match self {
            GgmlType::Q8_0 => Some(BlockFormat::Q8_0),
            GgmlType::Q4_0 => Some(BlockFormat::Q4_0),
            GgmlType::Q4_1 => Some(BlockFormat::Q4_1),
            GgmlType::Q5_0 => Some(BlockFormat::Q5_0),
            GgmlType::Q4_K => Some(BlockFormat::Q4_K),
            GgmlType::Q6_K => Some(BlockFormat::Q6_K),
            GgmlType::F16 => Some(BlockFormat::F16),
            GgmlType::Bf16 => Some(BlockFormat::Bf16),
            _ => None,
        }
    }

    /// (elements per block, bytes per block).
    fn block(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::Bf16 => Some((1, 2)),
            GgmlType::Other(_) => None,
            quantized => quantized.block_format().map(BlockFormat::stored_block),
        }
    }

    /// ggml's name of the type (`Q4_K`), or its number when this reader does not know it.
    fn name(self) -> String {
        const GGML_NAMES: [&str; 31] = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
            "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
            "BF16",
        ];
        match self {
            GgmlType::Other(id) => GGML_NAMES.get(id as usize).map_or_else(|| format!("number {id}"), |n| n.to_string()),
            GgmlType::F32 => "F32".into(),
            GgmlType::F16 => "F16".into(),
            GgmlType::Bf16 => "BF16".into(),
            quantized => quantized.block_format().expect("every other type is a block format").name().to_uppercase(),
        }
    }
}

/// Where a tensor is and how it is stored.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the fastest-varying (a linear's input width).
    pub dims: Vec<u64>,
    pub kind: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

/// A parsed GGUF file (its bytes mapped into memory).
pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    path: PathBuf,
    bytes: memmap2::Mmap,
    data_start: usize,
}

/// How deeply metadata arrays may nest (real files nest at most once).
const MAX_ARRAY_DEPTH: usize = 8;

/// A little-endian cursor whose errors name the file and what was being read.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| Error::format(self.path, format!("truncated GGUF file: it ends inside {what} (byte {})", self.pos)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("length checked"))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count or length, bounded by the bytes left so that a corrupt header cannot ask for
    /// terabytes of memory.
    fn len(&mut self, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(Error::format(self.path, format!("truncated or corrupt GGUF file: {what} of {n} exceeds the bytes left")));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| Error::format(self.path, format!("{what} is not UTF-8")))
    }
    fn value(&mut self, kind: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match kind {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(self.array::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => Value::Bool(self.array::<1>(key)?[0] != 0),
            8 => Value::String(self.string(key)?),
            // Nested arrays recurse: a corrupt file must not nest deep enough to overflow the stack.
            9 if depth >= MAX_ARRAY_DEPTH => {
                return Err(Error::format(self.path, format!("metadata {key}: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
            }
            9 => {
                let inner = self.u32(key)?;
                let n = self.len(key)?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(inner, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(Error::format(self.path, format!("metadata {key}: unknown value type {other}"))),
        })
    }
}

impl Gguf {
    /// Reads and parses a GGUF file; tensor data is checked to lie inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = crate::files::map(path)?;
        let (version, tensor_count, metadata, pos) = read_header(&bytes, path)?;
        let mut c = Cursor { bytes: &bytes, pos, path };
        // Each info takes at least 24 bytes of the file; the count alone reserves no more.
        let mut tensors = Vec::with_capacity(tensor_count.min((bytes.len() - c.pos) / 24));
        for _ in 0..tensor_count {
            let name = c.string("a tensor name")?;
            let n_dims = c.u32(&name)? as usize;
            if n_dims > 4 {
                return Err(Error::format(path, format!("tensor {name} has {n_dims} dimensions (at most 4)")));
            }
            let dims = (0..n_dims).map(|_| c.u64(&name)).collect::<Result<Vec<_>>>()?;
            let kind = GgmlType::from_id(c.u32(&name)?);
            let offset = c.u64(&name)?;
            tensors.push(TensorInfo { name, dims, kind, offset });
        }
        let alignment = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(32) as usize;
        if alignment == 0 {
            return Err(Error::format(path, "general.alignment is 0"));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let gguf = Gguf { version, metadata, tensors, path: path.to_path_buf(), data_start, bytes };
        for t in &gguf.tensors {
            gguf.raw(t)?;
        }
        Ok(gguf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name).ok_or_else(|| {
            let shared = |n: &str| n.bytes().zip(name.bytes()).take_while(|(a, b)| a == b).count();
            let mut names: Vec<&str> = self.tensors.iter().map(|t| t.name.as_str()).collect();
            names.sort_by_key(|n| std::cmp::Reverse(shared(n)));
            let close: Vec<&str> = names.into_iter().take(3).collect();
            Error::format(
                &self.path,
                format!("no tensor {name} in the file (similar: {})", if close.is_empty() { "none".into() } else { close.join(", ") }),
            )
        })
    }

    /// Gives back the memory of tensor `t`'s bytes once they have been copied or widened
    /// ([`crate::files::release`]); reading them again reads the file.
    pub(crate) fn release(&self, t: &TensorInfo) {
        if let Ok(raw) = self.raw(t) {
            crate::files::release(&self.bytes, raw);
        }
    }

    /// The stored bytes of a tensor.
    fn raw(&self, t: &TensorInfo) -> Result<&[u8]> {
        let beyond =
            || Error::format(&self.path, format!("truncated or corrupt GGUF file: tensor {} ends beyond the end of the file", t.name));
        let elements = t.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).ok_or_else(beyond)?;
        let (per_block, block_bytes) = t.kind.block().ok_or_else(|| {
            Error::format(
                &self.path,
                format!(
                    "tensor {} has ggml type {}, which is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K are)",
                    t.name,
                    t.kind.name()
                ),
            )
        })?;
        if t.dims.first().is_some_and(|d| d % per_block as u64 != 0) {
            return Err(Error::format(
                &self.path,
                format!("tensor {}: row length {} is not a multiple of the block size {per_block}", t.name, t.dims[0]),
            ));
        }
        let size = (elements / per_block as u64).checked_mul(block_bytes as u64).ok_or_else(beyond)?;
        let start = (self.data_start as u64).checked_add(t.offset).ok_or_else(beyond)?;
        let end = start.checked_add(size).filter(|&e| e <= self.bytes.len() as u64).ok_or_else(beyond)?;
        Ok(&self.bytes[start as usize..end as usize])
    }

    /// A block-quantized or 16-bit matrix as stored (`[rows, cols]`, GGUF's dims reversed), or
    /// `None` for a tensor of another type, not of two dimensions, or of rows not whole blocks.
    pub fn quantized(&self, t: &TensorInfo) -> Option<Result<QuantizedMatrix>> {
        let (Some(format), &[cols, rows]) = (t.kind.block_format(), &t.dims[..]) else { return None };
        if format.is_16_bit_float() && !cols.is_multiple_of(BLOCK as u64) {
            return None; // 16-bit rows that are not whole blocks of 32: widened instead
        }
        let what = format!("{}: tensor {}", self.path.display(), t.name);
        // Pages given back as they are unpacked: the file's bytes and the blocks are not both held whole.
        let release = |part: &[u8]| crate::files::release(&self.bytes, part);
        Some(self.raw(t).and_then(|raw| QuantizedMatrix::from_blocks_with(format, rows as usize, cols as usize, raw, &what, release)))
    }

    /// A tensor dequantized to f32, shaped in PyTorch order (GGUF dims reversed: a linear's
    /// weight is `[out, in]`).
    pub fn tensor(&self, name: &str) -> Result<HostTensor> {
        let t = self.info(name)?;
        let raw = self.raw(t)?;
        let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let data: Vec<f32> = match t.kind {
            GgmlType::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            GgmlType::F16 => raw.chunks_exact(2).map(f16).collect(),
            GgmlType::Bf16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            GgmlType::Q8_0 => raw.chunks_exact(34).flat_map(|b| (0..32).map(move |i| f16(&b[..2]) * b[2 + i] as i8 as f32)).collect(),
            // 4-bit blocks: the low nibbles hold elements 0..16, the high nibbles 16..32.
            GgmlType::Q4_0 => raw.chunks_exact(18).flat_map(|b| nibbles(&b[2..]).map(move |q| f16(&b[..2]) * (q as f32 - 8.0))).collect(),
            GgmlType::Q4_1 => {
                raw.chunks_exact(20).flat_map(|b| nibbles(&b[4..]).map(move |q| f16(&b[..2]) * q as f32 + f16(&b[2..4]))).collect()
            }
            // The newer formats widen through their in-memory blocks (one implementation).
            GgmlType::Q5_0 | GgmlType::Q4_K | GgmlType::Q6_K => {
                let format = t.kind.block_format().expect("a block format");
                let (per_block, block_bytes) = format.stored_block();
                let cols = t.dims.first().map_or(1, |&d| d as usize).max(1);
                let rows = raw.len() / block_bytes * per_block / cols;
                let what = format!("{}: tensor {}", self.path.display(), t.name);
                QuantizedMatrix::from_blocks(format, rows, cols, raw, &what)?.dequantize()
            }
            GgmlType::Other(_) => unreachable!("raw() rejects unsupported types"),
        };
        Ok(HostTensor { shape: t.dims.iter().rev().map(|&d| d as usize).collect(), data })
    }

    fn get(&self, key: &str) -> Result<&Value> {
        self.metadata.get(key).ok_or_else(|| Error::format(&self.path, format!("metadata {key} is missing")))
    }

    fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)?.as_u64().ok_or_else(|| Error::format(&self.path, format!("metadata {key} is not an integer")))
    }

    /// The chat template (a Jinja string), if the file has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.metadata.get("tokenizer.chat_template").and_then(Value::as_str)
    }

    /// The tokenizer from `tokenizer.ggml.*` ([`super::gguf_tokenizer`]).
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        super::gguf_tokenizer::tokenizer(&self.metadata, &self.path)
    }
}

/// The version, tensor count, metadata and the offset of the first tensor info.
fn read_header(bytes: &[u8], path: &Path) -> Result<(u32, usize, BTreeMap<String, Value>, usize)> {
    let mut c = Cursor { bytes, pos: 0, path };
    if c.take(4, "the magic number").ok() != Some(b"GGUF".as_slice()) {
        return Err(Error::format(path, "not a GGUF file (no GGUF magic number)"));
    }
    let version = c.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::format(path, format!("GGUF version {version} is not supported (2 and 3 are)")));
    }
    let tensor_count = c.len("the tensor count")?;
    let kv_count = c.len("the metadata count")?;
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = c.string("a metadata key")?;
        let kind = c.u32(&key)?;
        let value = c.value(kind, &key, 0)?;
        metadata.insert(key, value);
    }
    Ok((version, tensor_count, metadata, c.pos))
}

/// The 32 4-bit values of a block's 16 bytes: low nibbles first, then high nibbles.
fn nibbles(qs: &[u8]) -> impl Iterator<Item = u8> + '_ {
    qs.iter().map(|b| b & 0x0f).chain(qs.iter().map(|b| b >> 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_are_low_then_high() {
        let qs: Vec<u8> = (0..16).map(|i| (i as u8) | ((15 - i as u8) << 4)).collect();
        let v: Vec<u8> = nibbles(&qs).collect();
        assert_eq!(&v[..16], &(0..16).collect::<Vec<u8>>()[..]);
        assert_eq!(&v[16..], &(0..16).rev().collect::<Vec<u8>>()[..]);
    }
}
