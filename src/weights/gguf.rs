//! GGUF (llama.cpp's model file, versions 2 and 3): metadata, tensors dequantized to f32, and
//! the LLaMA view of a file (Hugging Face config, tensor names and layout); its tokenizer is
//! built in `gguf_tokenizer.rs`.
//!
//! Layout: magic `GGUF`, version, tensor count, metadata count, the metadata (typed key/value
//! pairs), one info per tensor (name, dims with the fastest dimension first, type, offset),
//! then the tensor data, aligned to `general.alignment` (32 by default). Everything is little
//! endian. Supported tensor types: F32, F16, BF16, Q8_0, Q4_0, Q4_1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::HostTensor;
use crate::error::{Error, Result};
use crate::quantization::{BlockFormat, QuantizedMatrix};

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
    Other(u32),
}

impl GgmlType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::Bf16,
            other => GgmlType::Other(other),
        }
    }

    /// The block format of a quantized type that [`QuantizedMatrix`] keeps as stored.
    pub fn block_format(self) -> Option<BlockFormat> {
        match self {
            GgmlType::Q8_0 => Some(BlockFormat::Q8_0),
            GgmlType::Q4_0 => Some(BlockFormat::Q4_0),
            GgmlType::Q4_1 => Some(BlockFormat::Q4_1),
            _ => None,
        }
    }

    /// (elements per block, bytes per block).
    fn block(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::Bf16 => Some((1, 2)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Other(_) => None,
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
            GgmlType::Q8_0 => "Q8_0".into(),
            GgmlType::Q4_0 => "Q4_0".into(),
            GgmlType::Q4_1 => "Q4_1".into(),
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

/// A parsed GGUF file (its bytes are held in memory).
pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    path: PathBuf,
    bytes: Vec<u8>,
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
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
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

    /// The stored bytes of a tensor.
    fn raw(&self, t: &TensorInfo) -> Result<&[u8]> {
        let beyond =
            || Error::format(&self.path, format!("truncated or corrupt GGUF file: tensor {} ends beyond the end of the file", t.name));
        let elements = t.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).ok_or_else(beyond)?;
        let (per_block, block_bytes) = t.kind.block().ok_or_else(|| {
            Error::format(
                &self.path,
                format!("tensor {} has ggml type {}, which is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1 are)", t.name, t.kind.name()),
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

    fn architecture(&self) -> Result<&str> {
        let arch = self.get("general.architecture")?.as_str().unwrap_or("");
        if arch != "llama" {
            return Err(Error::format(&self.path, format!("architecture {arch:?} is not supported (only \"llama\")")));
        }
        Ok(arch)
    }

    /// The model's Hugging Face `config.json` built from the `llama.*` metadata.
    pub fn llama_config(&self) -> Result<serde_json::Value> {
        self.architecture()?;
        let heads = self.get_u64("llama.attention.head_count")?;
        let hidden = self.get_u64("llama.embedding_length")?;
        let vocab = match self.metadata.get("llama.vocab_size").and_then(Value::as_u64) {
            Some(v) => v,
            None => self.get("tokenizer.ggml.tokens")?.as_array().map_or(0, |t| t.len() as u64),
        };
        let rope_dims = self.metadata.get("llama.rope.dimension_count").and_then(Value::as_u64);
        if rope_dims.is_some_and(|d| d != hidden / heads.max(1)) {
            return Err(Error::format(&self.path, "partial rotary embeddings (rope.dimension_count != head size) are not supported"));
        }
        let mut config = serde_json::json!({
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_act": "silu",
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": self.get_u64("llama.feed_forward_length")?,
            "num_hidden_layers": self.get_u64("llama.block_count")?,
            "num_attention_heads": heads,
            "num_key_value_heads": self.metadata.get("llama.attention.head_count_kv").and_then(Value::as_u64).unwrap_or(heads),
            "rms_norm_eps": self.get("llama.attention.layer_norm_rms_epsilon")?.as_f64(),
            "rope_theta": self.metadata.get("llama.rope.freq_base").and_then(Value::as_f64).unwrap_or(10_000.0),
            "max_position_embeddings": self.metadata.get("llama.context_length").and_then(Value::as_u64).unwrap_or(2048),
            "tie_word_embeddings": !self.tensors.iter().any(|t| t.name == "output.weight"),
        });
        for (key, name) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let Some(id) = self.metadata.get(key).and_then(Value::as_u64) {
                config[name] = id.into();
            }
        }
        Ok(config)
    }

    /// Every tensor of a LLaMA-family file under its Hugging Face name, dequantized to f32.
    pub fn llama_tensors(&self) -> Result<BTreeMap<String, HostTensor>> {
        Ok(self.llama_weights(false)?.0)
    }

    /// The tensors of a LLaMA-family file under Hugging Face names; with `keep_quantized`, the
    /// Q8_0/Q4_0/Q4_1 matrices apart, as stored (rows in Hugging Face order), and the rest f32.
    pub fn llama_weights(&self, keep_quantized: bool) -> Result<(BTreeMap<String, HostTensor>, BTreeMap<String, QuantizedMatrix>)> {
        self.architecture()?;
        let heads = self.get_u64("llama.attention.head_count")? as usize;
        let kv_heads = self.metadata.get("llama.attention.head_count_kv").and_then(Value::as_u64).map_or(heads, |v| v as usize);
        let (mut dense, mut quantized) = (BTreeMap::new(), BTreeMap::new());
        for t in &self.tensors {
            let name = hf_name(&t.name).ok_or_else(|| Error::format(&self.path, format!("tensor {} has no LLaMA meaning", t.name)))?;
            let rotary_heads = match &t.name {
                n if n.ends_with("attn_q.weight") => Some(heads),
                n if n.ends_with("attn_k.weight") => Some(kv_heads),
                _ => None,
            };
            let rotary_order = |rows: usize| self.rotary_order_checked(&t.name, rows, rotary_heads);
            if let (true, Some(format), &[cols, rows]) = (keep_quantized, t.kind.block_format(), &t.dims[..]) {
                let (rows, cols) = (rows as usize, cols as usize);
                let what = format!("{}: tensor {}", self.path.display(), t.name);
                let mut matrix = QuantizedMatrix::from_blocks(format, rows, cols, self.raw(t)?.to_vec(), &what)?;
                if let Some(order) = rotary_order(rows)? {
                    matrix = matrix.permute_rows(&order);
                }
                quantized.insert(name, matrix);
                continue;
            }
            let mut tensor = self.tensor(&t.name)?;
            if let Some(order) = rotary_order(tensor.shape[0])? {
                tensor = permute_rows(&tensor, &order);
            }
            dense.insert(name, tensor);
        }
        Ok((dense, quantized))
    }

    /// For a q/k weight of `rows` rows in `heads` heads, the row order undoing llama.cpp's
    /// rotary permutation ([`rotary_row_order`]), checked to split into whole, even heads.
    fn rotary_order_checked(&self, name: &str, rows: usize, heads: Option<usize>) -> Result<Option<Vec<usize>>> {
        let Some(heads) = heads else { return Ok(None) };
        if heads > 0 && rows.is_multiple_of(heads) && (rows / heads).is_multiple_of(2) {
            return Ok(Some(rotary_row_order(rows, heads)));
        }
        Err(Error::format(&self.path, format!("tensor {name} with {rows} rows does not split into {heads} heads of an even size")))
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

/// The metadata of a GGUF file, its tensors left unread (whatever their types): enough for its
/// tokenizer.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, Value>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(read_header(&bytes, path)?.2)
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

/// llama.cpp's tensor names -> Hugging Face's.
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = part.rsplit_once('.')?;
    let hf = match module {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// The row order undoing the permutation llama.cpp's converter applies to q/k weights
/// (`[out, in]`) so that its adjacent-pair rotary embedding works: within each head, Hugging
/// Face row `j * head_dim / 2 + i` is GGUF row `2i + j`. Entry `r` is the GGUF row of row `r`.
pub fn rotary_row_order(rows: usize, heads: usize) -> Vec<usize> {
    let head_dim = rows / heads;
    let half = head_dim / 2;
    (0..rows)
        .map(|r| {
            let (h, within) = (r / head_dim, r % head_dim);
            let (j, i) = (within / half, within % half);
            h * head_dim + 2 * i + j
        })
        .collect()
}

/// The rows of a `[rows, cols]` tensor reordered: row `r` of the result is row `order[r]`.
pub fn permute_rows(w: &HostTensor, order: &[usize]) -> HostTensor {
    let cols = w.shape[1];
    let data = order.iter().flat_map(|&r| &w.data[r * cols..(r + 1) * cols]).copied().collect();
    HostTensor { shape: w.shape.clone(), data }
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

    #[test]
    fn names_map_to_hugging_face() {
        assert_eq!(hf_name("blk.12.attn_q.weight").unwrap(), "model.layers.12.self_attn.q_proj.weight");
        assert_eq!(hf_name("blk.0.ffn_norm.weight").unwrap(), "model.layers.0.post_attention_layernorm.weight");
        assert_eq!(hf_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert!(hf_name("blk.x.attn_q.weight").is_none());
        assert!(hf_name("rope_freqs.weight").is_none());
    }

    #[test]
    fn unpermute_inverts_the_converters_permutation() {
        // The converter: w.reshape(heads, 2, head_dim / 2, cols).swapaxes(1, 2).
        let (heads, head_dim, cols) = (3, 4, 2);
        let hf = HostTensor { shape: vec![heads * head_dim, cols], data: (0..heads * head_dim * cols).map(|v| v as f32).collect() };
        let mut permuted = vec![0.0; hf.data.len()];
        for h in 0..heads {
            for i in 0..head_dim / 2 {
                for j in 0..2 {
                    let src = h * head_dim + j * head_dim / 2 + i;
                    let dst = h * head_dim + i * 2 + j;
                    permuted[dst * cols..(dst + 1) * cols].copy_from_slice(&hf.data[src * cols..(src + 1) * cols]);
                }
            }
        }
        let gguf = HostTensor { shape: hf.shape.clone(), data: permuted };
        assert_eq!(permute_rows(&gguf, &rotary_row_order(heads * head_dim, heads)), hf);
    }
}
