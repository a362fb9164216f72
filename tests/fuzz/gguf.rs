//! A tiny LLaMA GGUF file (one layer, hidden 32, every tensor type replora reads, a byte-level
//! BPE tokenizer), written field by field so the fuzzer knows where the length fields are.

use half::{bf16, f16};

use super::Rng;

pub struct GgufFile {
    pub bytes: Vec<u8>,
    /// Offsets of u64 counts, lengths, dims and tensor offsets.
    pub fields: Vec<usize>,
}

struct Writer {
    buf: Vec<u8>,
    fields: Vec<usize>,
}

impl Writer {
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn field(&mut self, v: u64) {
        self.fields.push(self.buf.len());
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        self.field(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }
    fn key(&mut self, key: &str, kind: u32) {
        self.string(key);
        self.u32(kind);
    }
    fn kv_u32(&mut self, key: &str, v: u32) {
        self.key(key, 4);
        self.u32(v);
    }
    fn kv_f32(&mut self, key: &str, v: f32) {
        self.key(key, 6);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn kv_str(&mut self, key: &str, v: &str) {
        self.key(key, 8);
        self.string(v);
    }
    fn kv_strings(&mut self, key: &str, items: &[String]) {
        self.key(key, 9);
        self.u32(8);
        self.field(items.len() as u64);
        for s in items {
            self.string(s);
        }
    }
    fn kv_i32s(&mut self, key: &str, items: &[i32]) {
        self.key(key, 9);
        self.u32(5);
        self.field(items.len() as u64);
        for v in items {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// (name, GGUF dims with the fastest first, ggml type id).
const TENSORS: [(&str, [u64; 2], u32); 12] = [
    ("token_embd.weight", [32, 40], 1),
    ("output_norm.weight", [32, 1], 0),
    ("output.weight", [32, 40], 8),
    ("blk.0.attn_norm.weight", [32, 1], 0),
    ("blk.0.ffn_norm.weight", [32, 1], 0),
    ("blk.0.attn_q.weight", [32, 32], 2),
    ("blk.0.attn_k.weight", [32, 16], 3),
    ("blk.0.attn_v.weight", [32, 16], 30),
    ("blk.0.attn_output.weight", [32, 32], 0),
    ("blk.0.ffn_gate.weight", [32, 64], 8),
    ("blk.0.ffn_up.weight", [32, 64], 1),
    ("blk.0.ffn_down.weight", [64, 32], 0),
];

/// Stored bytes of `n` seeded values of ggml type `kind`.
fn data(kind: u32, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut value = || (rng.below(2001) as f32 - 1000.0) / 20_000.0;
    let block = |rng_value: &mut dyn FnMut() -> f32, quants: usize, min: bool| {
        let mut b = f16::from_f32(0.01).to_le_bytes().to_vec();
        if min {
            b.extend_from_slice(&f16::from_f32(-0.05).to_le_bytes());
        }
        b.extend((0..quants).map(|_| (rng_value() * 10_000.0) as i8 as u8));
        b
    };
    match kind {
        0 => (0..n).flat_map(|_| value().to_le_bytes()).collect(),
        1 => (0..n).flat_map(|_| f16::from_f32(value()).to_le_bytes()).collect(),
        30 => (0..n).flat_map(|_| bf16::from_f32(value()).to_le_bytes()).collect(),
        8 => (0..n / 32).flat_map(|_| block(&mut value, 32, false)).collect(),
        2 => (0..n / 32).flat_map(|_| block(&mut value, 16, false)).collect(),
        3 => (0..n / 32).flat_map(|_| block(&mut value, 16, true)).collect(),
        other => unreachable!("type {other}"),
    }
}

/// The vocabulary: two control tokens, the letters, the space marker and two merges.
fn vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into()];
    tokens.extend(('a'..='z').map(String::from));
    tokens.extend(["Ġ", "ab", "Ġa", "Ġab", "0", "1", "2", ".", ",", "!", "?", "x1"].map(String::from));
    let types = (0..tokens.len()).map(|i| if i < 2 { 3 } else { 1 }).collect();
    (tokens, types, vec!["a b".into(), "Ġ a".into(), "Ġa b".into()])
}

pub fn tiny_llama() -> GgufFile {
    tiny_llama_with_heads(4)
}

/// [`tiny_llama`] with `heads` query heads declared (4 fit its 32-wide q/k weights).
pub fn tiny_llama_with_heads(heads: u32) -> GgufFile {
    let mut w = Writer { buf: b"GGUF".to_vec(), fields: vec![] };
    w.u32(3);
    w.field(TENSORS.len() as u64);
    w.field(16);
    w.kv_str("general.architecture", "llama");
    w.kv_u32("general.alignment", 32);
    w.kv_u32("llama.block_count", 1);
    w.kv_u32("llama.embedding_length", 32);
    w.kv_u32("llama.feed_forward_length", 64);
    w.kv_u32("llama.attention.head_count", heads);
    w.kv_u32("llama.attention.head_count_kv", 2);
    w.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    w.kv_f32("llama.rope.freq_base", 10_000.0);
    w.kv_u32("llama.context_length", 64);
    w.kv_str("tokenizer.ggml.model", "gpt2");
    w.kv_str("tokenizer.ggml.pre", "smollm");
    let (tokens, types, merges) = vocab();
    assert_eq!(tokens.len(), 40, "the embedding has 40 rows");
    w.kv_strings("tokenizer.ggml.tokens", &tokens);
    w.kv_i32s("tokenizer.ggml.token_type", &types);
    w.kv_strings("tokenizer.ggml.merges", &merges);
    w.kv_u32("tokenizer.ggml.eos_token_id", 0);
    let mut rng = Rng(11);
    let blobs: Vec<Vec<u8>> = TENSORS.iter().map(|(_, dims, kind)| data(*kind, (dims[0] * dims[1]) as usize, &mut rng)).collect();
    let mut offset = 0u64;
    for ((name, dims, kind), blob) in TENSORS.iter().zip(&blobs) {
        w.string(name);
        let dims: &[u64] = if dims[1] == 1 { &dims[..1] } else { dims };
        w.u32(dims.len() as u32);
        for &d in dims {
            w.field(d);
        }
        w.u32(*kind);
        w.field(offset);
        offset += (blob.len() as u64).div_ceil(32) * 32;
    }
    for blob in blobs {
        w.buf.resize(w.buf.len().div_ceil(32) * 32, 0);
        w.buf.extend_from_slice(&blob);
    }
    GgufFile { bytes: w.buf, fields: w.fields }
}
