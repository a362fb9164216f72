//! The LLaMA decoder on a tiny random checkpoint (grouped-query attention, untied head):
//! cache == full pass, padding == no padding, adapters (zero-init, merge) and file round trips.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use replora::adapters::{AdapterConfig, Deltas, Method, MethodConfig, PeftModel, PrefixConfig, TargetModules};
use replora::generate::{Sampling, generate};
use replora::models::Architecture;
use replora::models::llama::{KvCache, Llama, LlamaConfig};
use replora::tasks::choice_model::CausalLm;
use replora::training::Objective;
use replora::weights::HostTensor;

mod support;

const VOCAB: usize = 40;

fn device() -> Device {
    Device::flex()
}

fn config(tied: bool) -> LlamaConfig {
    serde_json::from_value(serde_json::json!({
        "vocab_size": VOCAB, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 64, "tie_word_embeddings": tied, "eos_token_id": 2, "hidden_act": "silu",
        "model_type": "llama",
    }))
    .unwrap()
}

fn checkpoint(c: &LlamaConfig) -> BTreeMap<String, HostTensor> {
    support::llama_checkpoint(c)
}

fn tiny(tied: bool) -> Llama {
    tiny_on(tied, &device())
}

fn tiny_on(tied: bool, device: &Device) -> Llama {
    let c = config(tied);
    Llama::from_tensors(c.clone(), &mut checkpoint(&c), Path::new("tiny"), device).unwrap()
}

fn ids(rows: &[&[i64]]) -> Tensor<2, Int> {
    let t = rows[0].len();
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), t]), &device())
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const TOKENS: [i64; 7] = [5, 17, 3, 29, 11, 8, 21];

/// The tiny model bare and with a prefix (prefix tuning, 3 virtual tokens on the grouped-query
/// key/value heads): the decoding invariants hold for both.
fn bare_and_prefixed(tied: bool) -> Vec<(&'static str, Llama, Deltas)> {
    let config = AdapterConfig {
        method: MethodConfig::Prefix(PrefixConfig { length: 3, ..Default::default() }),
        ..adapter(Method::Prefix, &["k_proj"])
    };
    let peft = PeftModel::new(tiny(tied), &config).unwrap();
    vec![("bare", tiny(tied), Deltas::none()), ("prefixed", peft.model.clone(), peft.deltas())]
}

#[test]
fn cached_decoding_equals_the_full_pass() {
    let mut outputs = vec![];
    for (name, model, deltas) in bare_and_prefixed(false) {
        let full = values(model.forward(ids(&[&TOKENS]), None, None, &deltas));
        let mut cache = KvCache::new();
        let mut cached = values(model.forward(ids(&[&TOKENS[..3]]), None, Some(&mut cache), &deltas));
        for t in &TOKENS[3..] {
            cached.extend(values(model.forward(ids(&[&[*t]]), None, Some(&mut cache), &deltas)));
        }
        assert_eq!(cache.len, TOKENS.len() + deltas.prefix_len(), "{name}");
        let diff = max_diff(&full, &cached);
        assert!(diff < 1e-5, "{name}: cache vs full pass: {diff}");
        outputs.push(full);
    }
    assert!(max_diff(&outputs[0], &outputs[1]) > 1e-3, "the prefix changed nothing");
}

#[test]
fn right_padding_does_not_change_real_positions_and_causality_holds() {
    for (name, model, deltas) in bare_and_prefixed(false) {
        let alone = values(model.forward(ids(&[&TOKENS[..4]]), None, None, &deltas));
        let padded_ids = ids(&[&TOKENS, &[TOKENS[0], TOKENS[1], TOKENS[2], TOKENS[3], 0, 0, 0]]);
        let mask =
            Tensor::<2>::from_data(TensorData::new(vec![1f32, 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 0.], [2, 7]), &device());
        let batch = model.forward(padded_ids, Some(mask), None, &deltas);
        let h = 16;
        let row1 = values(batch.clone().narrow(0, 1, 1).narrow(1, 0, 4));
        assert!(max_diff(&alone, &row1) < 1e-5, "{name}: padding changed a real position");
        // Causality: the first four positions of the full row equal the four-token pass.
        let row0 = values(batch.narrow(0, 0, 1).narrow(1, 0, 4));
        assert!(max_diff(&alone, &row0) < 1e-5, "{name}: a later token changed an earlier position");
        assert_eq!(row0.len(), 4 * h);
    }
}

#[test]
fn greedy_generation_with_the_cache_equals_recomputing_every_step() {
    for (name, model, deltas) in bare_and_prefixed(true) {
        let prompt = [5u32, 17, 3];
        let sampling = Sampling { max_new_tokens: 6, ..Sampling::default() };
        let cached = generate(&model, &deltas, &prompt, &sampling, &device(), &mut |_| {});
        let mut seq: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        let mut slow = vec![];
        for _ in 0..6 {
            let hidden = model.forward(ids(&[&seq]), None, None, &deltas);
            let last = hidden.narrow(1, seq.len() - 1, 1).reshape([1, 16]);
            let scores = values(model.logits(last));
            let best = scores.iter().enumerate().fold(0, |b, (i, s)| if *s > scores[b] { i } else { b });
            slow.push(best as u32);
            seq.push(best as i64);
        }
        assert_eq!(cached, slow, "{name}");
    }
}

fn adapter(method: Method, targets: &[&str]) -> AdapterConfig {
    AdapterConfig {
        method: method.defaults(),
        r: 2,
        target_modules: TargetModules::Names(targets.iter().map(|s| s.to_string()).collect()),
        seed: 7,
        ..Default::default()
    }
}

/// Five AdamW steps on the untied tiny decoder with `config`: the model, the answer loss before
/// and after.
fn trained(config: &AdapterConfig, device: &Device) -> (CausalLm, f32, f32) {
    let mut model = CausalLm { decoder: PeftModel::new(tiny_on(false, device), config).unwrap() };
    let mut optim = burn::optim::AdamWConfig::new().init();
    let first = values(model.loss(&support::tiny_lm_batch(), device))[0];
    for _ in 0..5 {
        let grads = burn::optim::GradientsParams::from_grads(model.loss(&support::tiny_lm_batch(), device).backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let last = values(model.loss(&support::tiny_lm_batch(), device))[0];
    (model, first, last)
}

#[test]
fn adapters_on_every_projection_start_at_the_base_model_and_merge_exactly() {
    let wide = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"];
    for method in [Method::Lora, Method::Dora, Method::Replora] {
        let base =
            values(CausalLm { decoder: PeftModel::from_parts(tiny(false), replora::adapters::AdapterSet::empty()) }.target_logprobs(
                &support::tiny_lm_batch(),
                false,
                &device(),
            ));
        let lm = CausalLm { decoder: PeftModel::new(tiny(false), &adapter(method, &wide)).unwrap() };
        let start = values(lm.target_logprobs(&support::tiny_lm_batch(), false, &device()));
        assert!(max_diff(&base, &start) < 1e-5, "{method}: zero-init adapter differs from the base");

        // Train a few steps so B != 0, then merging must not change the output.
        let device = device().autodiff();
        let (model, first, last) = trained(&adapter(method, &wide), &device);
        assert!(last < first, "{method}: answer loss did not fall ({first} -> {last})");
        let model = model.valid();
        let unmerged = values(model.target_logprobs(&support::tiny_lm_batch(), false, &device.clone().inner()));
        let merged = CausalLm { decoder: model.decoder.merge().unwrap() };
        let after = values(merged.target_logprobs(&support::tiny_lm_batch(), false, &device.inner()));
        let diff = max_diff(&unmerged, &after);
        assert!(diff < 1e-4, "{method}: merged vs unmerged {diff}");
        assert!(max_diff(&unmerged, &base) > 1e-4, "{method}: training changed nothing");
    }
}

#[test]
fn bottleneck_adapters_after_o_proj_and_down_proj_start_at_the_base_and_learn() {
    let sites = Llama::ADAPTER_SITES;
    let base = values(CausalLm { decoder: PeftModel::from_parts(tiny(false), replora::adapters::AdapterSet::empty()) }.target_logprobs(
        &support::tiny_lm_batch(),
        false,
        &device(),
    ));
    let lm = CausalLm { decoder: PeftModel::new(tiny(false), &adapter(Method::Houlsby, sites)).unwrap() };
    assert_eq!(
        lm.decoder.adapters.target_paths(),
        [
            "model.layers.0.self_attn.o_proj",
            "model.layers.0.mlp.down_proj",
            "model.layers.1.self_attn.o_proj",
            "model.layers.1.mlp.down_proj"
        ]
    );
    assert!(
        max_diff(&base, &values(lm.target_logprobs(&support::tiny_lm_batch(), false, &device()))) < 1e-5,
        "a bottleneck adapter at init differs from the base"
    );
    let (_, first, last) = trained(&adapter(Method::Houlsby, sites), &device().autodiff());
    assert!(last < first, "answer loss did not fall ({first} -> {last})");
}

#[test]
fn hugging_face_directory_round_trip_is_bit_exact() {
    for tied in [true, false] {
        let model = tiny(tied);
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let loaded = Llama::load(dir.path(), &device()).unwrap();
        assert_eq!(model.tensors(), loaded.tensors());
        assert_eq!(loaded.config.tie_word_embeddings, tied);
        let a = values(model.forward(ids(&[&TOKENS]), None, None, &Deltas::none()));
        let b = values(loaded.forward(ids(&[&TOKENS]), None, None, &Deltas::none()));
        assert_eq!(a, b);
    }
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let c = config(false);
    let mut missing = checkpoint(&c);
    missing.remove("model.layers.1.mlp.up_proj.weight");
    let err = Llama::from_tensors(c.clone(), &mut missing, Path::new("ckpt"), &device()).unwrap_err().to_string();
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");

    let mut wrong = checkpoint(&c);
    wrong.insert("model.layers.0.self_attn.k_proj.weight".into(), HostTensor { shape: vec![16, 16], data: vec![0.0; 256] });
    let err = Llama::from_tensors(c.clone(), &mut wrong, Path::new("ckpt"), &device()).unwrap_err().to_string();
    assert!(err.contains("k_proj"), "{err}");

    let mut fewer = c.clone();
    fewer.num_hidden_layers = 1;
    let err = Llama::from_tensors(fewer, &mut checkpoint(&c), Path::new("ckpt"), &device()).unwrap_err().to_string();
    assert!(err.contains("model.layers.1"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"vocab_size": 10, "hidden_size": 12, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 5}"#,
    )
    .unwrap();
    let err = Llama::load(dir.path(), &device()).unwrap_err().to_string();
    assert!(err.contains("not a multiple"), "{err}");
    let err = Llama::load(&dir.path().join("nothing"), &device()).unwrap_err().to_string();
    assert!(err.contains("nothing"), "{err}");
}
