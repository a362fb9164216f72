//! The decoder view of a GGUF file: the Hugging Face `config.json` its metadata describes, and
//! its tensors under Hugging Face names and layouts, for the architectures replora reads
//! (`llama`, which Mistral's checkpoints convert to as well, `qwen2`, `qwen3`, `phi3`, `gemma3`).
//! What llama.cpp's converter changed is undone here: the q/k row permutation of LLaMA's rotary
//! embedding, and the `+ 1` it adds to Gemma's norm weights. Phi-3's fused `attn_qkv` and
//! `ffn_up` (gate and up rows) keep their Hugging Face layout (`qkv_proj`, `gate_up_proj`).

use std::collections::BTreeMap;

use super::{Gguf, TensorInfo, Value};
use crate::error::{Error, Result};
use crate::quantization::QuantizedMatrix;
use crate::weights::HostTensor;

/// The architectures (`general.architecture`) read as decoders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Phi3,
    Gemma3,
}

impl Arch {
    const ALL: [Arch; 5] = [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Phi3, Arch::Gemma3];

    fn key(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Phi3 => "phi3",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// Gemma 3 in llama.cpp: every sixth layer global, the others a sliding window whose RoPE base
/// is fixed (neither is in the file's metadata).
const GEMMA3_GLOBAL_EVERY: u64 = 6;
const GEMMA3_LOCAL_ROPE_BASE: f64 = 10_000.0;
/// Gemma 3 27B (62 layers) scales queries by `(hidden / heads)^-1/2` rather than the head size's.
const GEMMA3_27B_LAYERS: u64 = 62;

impl Gguf {
    fn arch(&self) -> Result<Arch> {
        let name = self.get("general.architecture")?.as_str().unwrap_or("");
        Arch::ALL.into_iter().find(|a| a.key() == name).ok_or_else(|| {
            let known: Vec<&str> = Arch::ALL.iter().map(|a| a.key()).collect();
            Error::format(&self.path, format!("architecture {name:?} is not supported ({} are)", known.join(", ")))
        })
    }

    /// `{arch}.{key}` of the metadata.
    fn arch_value(&self, arch: Arch, key: &str) -> Option<&Value> {
        self.metadata.get(&format!("{}.{key}", arch.key()))
    }

    fn arch_u64(&self, arch: Arch, key: &str) -> Result<u64> {
        self.get_u64(&format!("{}.{key}", arch.key()))
    }

    /// The model's Hugging Face `config.json` built from the architecture's metadata.
    pub fn llama_config(&self) -> Result<serde_json::Value> {
        let arch = self.arch()?;
        let heads = self.arch_u64(arch, "attention.head_count")?;
        let hidden = self.arch_u64(arch, "embedding_length")?;
        let layers = self.arch_u64(arch, "block_count")?;
        let vocab = match self.arch_value(arch, "vocab_size").and_then(Value::as_u64) {
            Some(v) => v,
            None => self.get("tokenizer.ggml.tokens")?.as_array().map_or(0, |t| t.len() as u64),
        };
        let head_dim = self.arch_value(arch, "attention.key_length").and_then(Value::as_u64).unwrap_or(hidden / heads.max(1));
        let rope_dims = self.arch_value(arch, "rope.dimension_count").and_then(Value::as_u64).unwrap_or(head_dim);
        if rope_dims != head_dim && arch != Arch::Phi3 {
            return Err(Error::format(
                &self.path,
                format!("partial rotary embeddings (rope.dimension_count {rope_dims} != head size {head_dim}) are supported for phi3 only"),
            ));
        }
        if let Some(t) = self.tensors.iter().find(|t| t.name.starts_with("rope_factors")) {
            return Err(Error::format(&self.path, format!("{}: longrope RoPE scaling is not supported", t.name)));
        }
        let mut config = serde_json::json!({
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": self.arch_u64(arch, "feed_forward_length")?,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": self.arch_value(arch, "attention.head_count_kv").and_then(Value::as_u64).unwrap_or(heads),
            "rms_norm_eps": self.get(&format!("{}.attention.layer_norm_rms_epsilon", arch.key()))?.as_f64(),
            "rope_theta": self.arch_value(arch, "rope.freq_base").and_then(Value::as_f64).unwrap_or(10_000.0),
            "max_position_embeddings": self.arch_value(arch, "context_length").and_then(Value::as_u64).unwrap_or(2048),
            "tie_word_embeddings": !self.tensors.iter().any(|t| t.name == "output.weight"),
        });
        let extra = match arch {
            Arch::Llama => serde_json::json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu"}),
            Arch::Qwen2 => serde_json::json!({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu"}),
            Arch::Qwen3 => serde_json::json!({
                "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_act": "silu", "head_dim": head_dim,
            }),
            Arch::Phi3 => serde_json::json!({
                "model_type": "phi3",
                "architectures": ["Phi3ForCausalLM"],
                "hidden_act": "silu",
                "partial_rotary_factor": rope_dims as f64 / head_dim as f64,
                "sliding_window": self.arch_value(arch, "attention.sliding_window").and_then(Value::as_u64),
            }),
            Arch::Gemma3 => {
                let types: Vec<&str> =
                    (1..=layers).map(|i| if i % GEMMA3_GLOBAL_EVERY == 0 { "full_attention" } else { "sliding_attention" }).collect();
                let scalar = if layers == GEMMA3_27B_LAYERS { hidden / heads.max(1) } else { head_dim };
                serde_json::json!({
                    "model_type": "gemma3_text",
                    "architectures": ["Gemma3ForCausalLM"],
                    "hidden_activation": "gelu_pytorch_tanh",
                    "head_dim": head_dim,
                    "query_pre_attn_scalar": scalar,
                    "sliding_window": self.arch_u64(arch, "attention.sliding_window")?,
                    "layer_types": types,
                    "rope_local_base_freq": GEMMA3_LOCAL_ROPE_BASE,
                })
            }
        };
        for (key, value) in extra.as_object().expect("an object").iter() {
            config[key] = value.clone();
        }
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

    /// Every tensor of a decoder file under its Hugging Face name, dequantized to f32.
    pub fn llama_tensors(&self) -> Result<BTreeMap<String, HostTensor>> {
        Ok(self.llama_weights(false, None)?.0)
    }

    /// The tensors of a decoder file under Hugging Face names; with `keep_quantized`, the
    /// block-quantized matrices apart, as stored (rows in Hugging Face order), and the rest f32.
    /// With `layers`, the tensors of the blocks from that one on are left unread.
    pub fn llama_weights(
        &self,
        keep_quantized: bool,
        layers: Option<usize>,
    ) -> Result<(BTreeMap<String, HostTensor>, BTreeMap<String, QuantizedMatrix>)> {
        let arch = self.arch()?;
        let heads = self.arch_u64(arch, "attention.head_count")? as usize;
        let kv_heads = self.arch_value(arch, "attention.head_count_kv").and_then(Value::as_u64).map_or(heads, |v| v as usize);
        let (mut dense, mut quantized) = (BTreeMap::new(), BTreeMap::new());
        let beyond = |name: &str| crate::weights::layer_index(name, "blk.").zip(layers).is_some_and(|(i, n)| i >= n);
        let taken: Vec<(&TensorInfo, u64)> =
            self.tensors.iter().filter(|t| !beyond(&t.name)).map(|t| (t, self.raw(t).map_or(0, |raw| raw.len() as u64))).collect();
        let bar = crate::weights::mapped::loading_bar(taken.iter().map(|(_, bytes)| bytes).sum(), &self.path);
        for (t, bytes) in taken {
            let meaning = || Error::format(&self.path, format!("tensor {} has no {} meaning", t.name, arch.key()));
            let name = hf_name(arch, &t.name).ok_or_else(meaning)?;
            // Only LLaMA's converter permutes q/k rows (Gemma's rotary embedding is llama.cpp's NeoX kind).
            let rotary_heads = match &t.name {
                n if arch == Arch::Llama && n.ends_with("attn_q.weight") => Some(heads),
                n if arch == Arch::Llama && n.ends_with("attn_k.weight") => Some(kv_heads),
                _ => None,
            };
            let rotary_order = |rows: usize| self.rotary_order_checked(&t.name, rows, rotary_heads);
            if let Some(mut matrix) = self.quantized(t).filter(|_| keep_quantized).transpose()? {
                if let Some(order) = rotary_order(matrix.rows)? {
                    matrix = matrix.permute_rows(&order);
                }
                quantized.insert(name, matrix);
                self.release(t);
                bar.inc(bytes);
                continue;
            }
            let mut tensor = self.tensor(&t.name)?;
            if let Some(order) = rotary_order(tensor.shape[0])? {
                tensor = permute_rows(&tensor, &order);
            }
            if arch == Arch::Gemma3 && t.name.ends_with("norm.weight") {
                // llama.cpp stores Gemma's `1 + w`; Hugging Face's checkpoints (and replora's
                // norm, which adds the 1 back) hold `w`.
                tensor.data.iter_mut().for_each(|v| *v -= 1.0);
            }
            dense.insert(name, tensor);
            self.release(t);
            bar.inc(bytes);
        }
        bar.finish();
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
}

/// llama.cpp's tensor names -> Hugging Face's, for `arch`.
fn hf_name(arch: Arch, gguf: &str) -> Option<String> {
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
    let hf = match (module, arch) {
        ("attn_q", _) => "self_attn.q_proj",
        ("attn_k", _) => "self_attn.k_proj",
        ("attn_v", _) => "self_attn.v_proj",
        ("attn_output", _) => "self_attn.o_proj",
        ("ffn_gate", _) => "mlp.gate_proj",
        // Phi-3's `ffn_up` holds the gate rows, then the up rows.
        ("ffn_up", Arch::Phi3) => "mlp.gate_up_proj",
        ("ffn_up", _) => "mlp.up_proj",
        ("ffn_down", _) => "mlp.down_proj",
        ("attn_norm", _) => "input_layernorm",
        // LLaMA's norm before the feed-forward is Hugging Face's `post_attention_layernorm`;
        // Gemma's is `pre_feedforward_layernorm`, and its `post_attention_layernorm` is the
        // attention output's norm.
        ("ffn_norm", Arch::Gemma3) => "pre_feedforward_layernorm",
        ("ffn_norm", _) => "post_attention_layernorm",
        ("post_attention_norm", Arch::Gemma3) => "post_attention_layernorm",
        ("post_ffw_norm", Arch::Gemma3) => "post_feedforward_layernorm",
        ("attn_q_norm", Arch::Gemma3 | Arch::Qwen3) => "self_attn.q_norm",
        ("attn_k_norm", Arch::Gemma3 | Arch::Qwen3) => "self_attn.k_norm",
        ("attn_qkv", Arch::Phi3) => "self_attn.qkv_proj",
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
    fn names_map_to_hugging_face() {
        assert_eq!(hf_name(Arch::Llama, "blk.12.attn_q.weight").unwrap(), "model.layers.12.self_attn.q_proj.weight");
        assert_eq!(hf_name(Arch::Llama, "blk.0.ffn_norm.weight").unwrap(), "model.layers.0.post_attention_layernorm.weight");
        assert_eq!(hf_name(Arch::Llama, "token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert!(hf_name(Arch::Llama, "blk.x.attn_q.weight").is_none());
        assert!(hf_name(Arch::Llama, "rope_freqs.weight").is_none());
        assert_eq!(hf_name(Arch::Gemma3, "blk.3.ffn_norm.weight").unwrap(), "model.layers.3.pre_feedforward_layernorm.weight");
        assert_eq!(hf_name(Arch::Gemma3, "blk.3.post_attention_norm.weight").unwrap(), "model.layers.3.post_attention_layernorm.weight");
        assert!(hf_name(Arch::Llama, "blk.3.post_ffw_norm.weight").is_none());
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
