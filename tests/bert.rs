//! The BERT encoder: published behaviour on real weights, save/load, adapters, load errors.

mod common;
mod support;

use std::path::Path;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use common::host;
use replora::Error;
use replora::adapters::{Adaptable, AdapterConfig, Deltas, Method, PeftModel, TargetModules};
use replora::models::Architecture;
use replora::models::bert::{Bert, BertConfig, Pooling, pool};
use replora::weights::tensors;
use support::{Batch, edit_config, max_abs_diff, minilm_dir, tiny_bert, tokenize};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

#[test]
fn minilm_embeds_related_sentences_closer_than_unrelated() {
    let device = Device::flex();
    let dir = minilm_dir();
    let model = Bert::load(&dir, "", &device).unwrap();
    let sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "A man is riding a horse.",
        "The new movie is awesome.",
        "A monkey is playing drums.",
    ];
    let input = tokenize(&dir, &sentences).input(&device);
    let hidden = model.forward(&input, &Deltas::none());
    let embeddings = pool(hidden, input.attention_mask.clone(), Pooling::Mean);
    let rows: Vec<Vec<f32>> = (0..sentences.len()).map(|i| host(&embeddings.clone().narrow(0, i, 1))).collect();
    let cos = |i: usize, j: usize| {
        let c = cosine(&rows[i], &rows[j]);
        eprintln!("cos({:?}, {:?}) = {c:.4}", sentences[i], sentences[j]);
        c
    };
    let related = cos(0, 1);
    let same_subject = cos(0, 2);
    let unrelated = [cos(0, 3), cos(1, 4), cos(2, 3)];
    assert!(related > 0.6, "related pair: {related}");
    assert!(related > same_subject, "{related} <= {same_subject}");
    for u in unrelated {
        assert!(u < 0.2 && related - u > 0.5, "unrelated pair {u} vs related {related}");
    }
    // Padding must not change an embedding: the short sentence alone gives the same vector.
    let alone = tokenize(&dir, &sentences[..1]).input(&device);
    let single = pool(model.forward(&alone, &Deltas::none()), alone.attention_mask.clone(), Pooling::Mean);
    let err = max_abs_diff(&host(&single), &rows[0]);
    eprintln!("padded vs unpadded embedding: max abs diff {err:.3e}");
    assert!(err < 1e-5);
}

#[test]
fn save_then_load_is_bit_exact() {
    let device = Device::flex();
    let dir = minilm_dir();
    let model = Bert::load(&dir, "", &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    model.save(out.path()).unwrap();
    let reloaded = Bert::load(out.path(), "", &device).unwrap();
    assert_eq!(reloaded.config, model.config);
    assert_eq!(reloaded.tensors(), model.tensors());

    // The written file holds the original checkpoint's tensors, bit for bit (minus the
    // `position_ids` buffer), with PyTorch's metadata.
    let (original, _) = tensors::read(&dir.join("model.safetensors")).unwrap();
    let (written, meta) = tensors::read(&out.path().join("model.safetensors")).unwrap();
    let original: Vec<_> = original.into_iter().filter(|(k, _)| k != "embeddings.position_ids").collect();
    assert_eq!(written.into_iter().collect::<Vec<_>>(), original);
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));

    let input = Batch::new(&[(vec![101, 7592, 2088, 102], vec![0; 4]), (vec![101, 102], vec![0; 2])]).input(&device);
    let a = host(&model.forward(&input, &Deltas::none()));
    let b = host(&reloaded.forward(&input, &Deltas::none()));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

fn query_value(method: Method) -> AdapterConfig {
    AdapterConfig {
        method: method.defaults(),
        r: 4,
        target_modules: TargetModules::Names(vec!["query".into(), "value".into()]),
        ..Default::default()
    }
}

#[test]
fn adapters_inject_into_bert_and_merge_into_a_plain_checkpoint() {
    let device = Device::flex().autodiff();
    let batch = Batch::new(&[(vec![101, 1037, 2158, 2003, 5983, 2833, 1012, 102], vec![0; 8]), (vec![101, 7592, 102], vec![0; 3])]);
    let input = batch.input(&device);
    let base = Bert::load(&minilm_dir(), "bert.", &device).unwrap();
    let base_out = host(&base.forward(&input, &Deltas::none()));

    for method in [Method::Lora, Method::Replora] {
        let peft = PeftModel::new(base.clone(), &query_value(method)).unwrap();
        let paths = peft.adapters.target_paths();
        assert_eq!(paths.len(), 12, "{paths:?}");
        assert!(paths.contains(&"bert.encoder.layer.0.attention.self.query"), "{paths:?}");
        assert!(paths.contains(&"bert.encoder.layer.5.attention.self.value"), "{paths:?}");
        let err = max_abs_diff(&host(&peft.model.forward(&input, &peft.deltas())), &base_out);
        eprintln!("{method:?} zero-init vs base: max abs diff {err:.3e}");
        assert!(err < 1e-5, "{method:?}: {err}");
    }
    // Houlsby bottlenecks go after the attention output and the feed-forward output.
    let sites = TargetModules::Names(Bert::ADAPTER_SITES.iter().map(|s| s.to_string()).collect());
    let peft =
        PeftModel::new(base.clone(), &AdapterConfig { method: Method::Houlsby.defaults(), target_modules: sites, ..Default::default() })
            .unwrap();
    let paths = peft.adapters.target_paths();
    assert_eq!(paths.len(), 12, "{paths:?}");
    assert!(
        paths.contains(&"bert.encoder.layer.0.attention.output.dense") && paths.contains(&"bert.encoder.layer.5.output.dense"),
        "{paths:?}"
    );
    let err = max_abs_diff(&host(&peft.model.forward(&input, &peft.deltas())), &base_out);
    assert!(err < 1e-5, "bottleneck adapter at init vs base: {err}");

    // A prefix at every layer's key: padding keys stay hidden, the prefix is seen by all.
    let keys = TargetModules::Names(Bert::KEY_PROJECTIONS.iter().map(|s| s.to_string()).collect());
    let peft =
        PeftModel::new(base.clone(), &AdapterConfig { method: Method::Prefix.defaults(), target_modules: keys, ..Default::default() })
            .unwrap();
    let batched = host(&peft.model.forward(&input, &peft.deltas()));
    let alone = Batch::new(&[(vec![101, 7592, 102], vec![0; 3])]);
    let alone = host(&peft.model.forward(&alone.input(&device), &peft.deltas()));
    let width = alone.len() / 3;
    let short_row = &batched[8 * width..8 * width + 3 * width];
    assert!(max_abs_diff(short_row, &alone) < 1e-5, "padding changed a prefixed sequence");
    assert!(max_abs_diff(&batched, &base_out) > 1e-3, "the prefix changed nothing");

    // One training step moves the output; merging and saving gives a plain checkpoint that
    // reproduces the adapted model.
    let mut peft = PeftModel::new(base, &query_value(Method::Lora)).unwrap();
    let mut optim = AdamWConfig::new().init();
    let loss = peft.model.forward(&input, &peft.training_deltas()).narrow(1, 0, 1).sum();
    peft = optim.step(1e-2, peft.clone(), GradientsParams::from_grads(loss.backward(), &peft));
    let adapted = host(&peft.model.forward(&input, &peft.deltas()));
    let moved = max_abs_diff(&adapted, &base_out);
    assert!(moved > 1e-3, "training did not change the output ({moved})");

    let out = tempfile::tempdir().unwrap();
    peft.merge().unwrap().model.save(out.path()).unwrap();
    let (written, _) = tensors::read(&out.path().join("model.safetensors")).unwrap();
    assert!(written.contains_key("bert.encoder.layer.0.attention.self.query.weight"));
    let merged = Bert::load(out.path(), "", &Device::flex()).unwrap();
    let err = max_abs_diff(&host(&merged.forward(&batch.input(&Device::flex()), &Deltas::none())), &adapted);
    eprintln!("LoRA after one step moved the output by {moved:.3e}; merged checkpoint vs adapted: {err:.3e}");
    assert!(err < 1e-4, "{err}");
}

#[test]
fn prefixed_and_gamma_beta_checkpoints_load_alike() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let (plain, task) = (tmp.path().join("plain"), tmp.path().join("task"));
    tiny_bert(&plain, "", false, true);
    tiny_bert(&task, "bert.", true, false);

    let a = Bert::load(&plain, "", &device).unwrap();
    let b = Bert::load(&task, "bert.", &device).unwrap();
    let c = Bert::load(&task, "", &device).unwrap();
    assert_eq!(a.config.extra["some_future_key"], serde_json::json!({"nested": [1, 2, 3]}));
    let paths = |m: &Bert| m.linears().iter().map(|l| l.path.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&a).len(), 13);
    assert_eq!(paths(&a)[0], "encoder.layer.0.attention.self.query");
    assert_eq!(paths(&a)[12], "pooler.dense");
    assert_eq!(paths(&b)[5], "bert.encoder.layer.0.output.dense");
    assert_eq!(paths(&b).len(), 12, "no pooler in the task checkpoint");
    assert_eq!(paths(&c)[1], "encoder.layer.0.attention.self.key");

    let input = Batch::new(&[(vec![1, 5, 9, 2], vec![0, 0, 1, 1]), (vec![1, 7], vec![0, 0])]).input(&device);
    let out = |m: &Bert| host(&m.forward(&input, &Deltas::none()));
    assert_eq!(out(&a), out(&b));
    assert_eq!(out(&b), out(&c));
    assert_eq!(a.forward(&input, &Deltas::none()).dims(), [2, 4, 8]);

    // A saved task-prefixed model keeps its names and loads back.
    let saved = tmp.path().join("saved");
    b.save(&saved).unwrap();
    let (written, _) = tensors::read(&saved.join("model.safetensors")).unwrap();
    assert!(written.contains_key("bert.embeddings.LayerNorm.weight"));
    assert_eq!(out(&Bert::load(&saved, "bert.", &device).unwrap()), out(&b));
}

fn load_err(dir: &Path) -> Error {
    Bert::load(dir, "", &Device::flex()).expect_err("load must fail")
}

#[test]
fn load_errors_are_typed_and_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        tiny_bert(&dir, "", false, true);
        dir
    };
    let show = |e: Error| {
        eprintln!("{e}");
        e
    };

    let e = show(load_err(&tmp.path().join("nowhere")));
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("nowhere"), "{e}");

    let dir = fresh("no_weights");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let e = show(load_err(&dir));
    assert!(matches!(&e, Error::Io { file, .. } if file.ends_with("model.safetensors")), "{e}");

    let dir = fresh("corrupt");
    std::fs::write(dir.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let e = show(load_err(&dir));
    assert!(matches!(&e, Error::Format { file, .. } if file.ends_with("model.safetensors")), "{e}");

    let dir = fresh("no_config");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = show(load_err(&dir));
    assert!(matches!(&e, Error::Io { file, .. } if file.ends_with("config.json")), "{e}");

    let dir = fresh("wrong_type");
    edit_config(&dir, "hidden_size", "8".into());
    let e = show(load_err(&dir));
    assert!(matches!(&e, Error::Format { file, .. } if file.ends_with("config.json")), "{e}");
    assert!(e.to_string().contains("invalid type"), "{e}");

    let dir = fresh("activation");
    edit_config(&dir, "hidden_act", "swish".into());
    let e = show(load_err(&dir));
    assert!(matches!(&e, Error::Format { .. }) && e.to_string().contains("swish"), "{e}");

    let dir = fresh("heads");
    edit_config(&dir, "num_attention_heads", 3.into());
    let e = show(load_err(&dir));
    assert!(matches!(&e, Error::Format { .. }) && e.to_string().contains("num_attention_heads"), "{e}");

    let dir = fresh("width");
    edit_config(&dir, "intermediate_size", 32.into());
    let e = show(load_err(&dir));
    let Error::Shape { name, expected, found } = e else { panic!("expected a shape error, got {e}") };
    assert_eq!((name.as_str(), expected, found), ("encoder.layer.0.intermediate.dense.weight", vec![32, 8], vec![16, 8]));

    let dir = fresh("deeper");
    edit_config(&dir, "num_hidden_layers", 3.into());
    let e = show(load_err(&dir));
    assert!(matches!(&e, Error::MissingTensor { name, .. } if name == "encoder.layer.2.attention.self.query.weight"), "{e}");

    let dir = fresh("shallower");
    edit_config(&dir, "num_hidden_layers", 1.into());
    let e = show(load_err(&dir));
    assert!(matches!(&e, Error::Format { .. }) && e.to_string().contains("encoder.layer.1."), "{e}");

    let dir = fresh("missing");
    let file = dir.join("model.safetensors");
    let (mut all, _) = tensors::read(&file).unwrap();
    all.remove("encoder.layer.1.attention.output.LayerNorm.bias");
    tensors::write(&file, &all, None).unwrap();
    let e = show(load_err(&dir));
    assert!(matches!(&e, Error::MissingTensor { name, .. } if name == "encoder.layer.1.attention.output.LayerNorm.bias"), "{e}");
}

#[test]
fn config_parses_hf_json_and_pooling_parses_names() {
    let config: BertConfig = serde_json::from_str(
        r#"{"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 8, "id2label": {"0": "no"}, "torch_dtype": "float32"}"#,
    )
    .unwrap();
    assert_eq!((config.max_position_embeddings, config.type_vocab_size, config.layer_norm_eps), (512, 2, 1e-12));
    assert_eq!(config.pad_token_id, None);
    assert!(config.extra.contains_key("id2label"));
    assert_eq!("MEAN".parse::<Pooling>().unwrap(), Pooling::Mean);
    assert_eq!("cls".parse::<Pooling>().unwrap().to_string(), "cls");
    assert!(matches!("max".parse::<Pooling>(), Err(Error::Config(_))));
    assert_eq!(serde_json::to_string(&Pooling::Mean).unwrap(), "\"mean\"");
}
