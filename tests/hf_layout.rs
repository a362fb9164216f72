//! What `merge` and `export` write for each pooling (issue 11: nothing may claim to be a
//! `BertForSequenceClassification` that predicts differently), the default pooling, and an
//! independent reader (numpy) of the merged directory computing the classifier's logits.

mod support;

use std::path::Path;
use std::process::Command;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use replora::adapters::{AdapterConfig, Method, PeftModel, TargetModules};
use replora::formats::peft;
use replora::models::bert::{Bert, Pooling};
use replora::tasks::classification::{ClassificationSpec as RunSpec, export_peft};
use replora::tasks::heads::{ClassifierModel, SequenceClassifier};
use replora::tasks::hf_layout::HfLayout;
use replora::weights::tensors;
use support::{Batch, max_abs_diff, python, tiny_bert};

const LABELS: [&str; 3] = ["a", "b", "c"];

fn batch() -> Batch {
    Batch::new(&[
        (vec![2, 7, 11, 40, 3], vec![0, 0, 0, 1, 1]),
        (vec![2, 9, 3], vec![0, 0, 0]),
        (vec![2, 30, 31, 32, 33, 34, 3], vec![0; 7]),
    ])
}

/// A tiny classifier whose adapter (on query, value and every `dense`, the pooler's included)
/// and head have moved off their init.
fn trained(model_dir: &Path, pooling: Pooling, method: Method, device: &Device) -> SequenceClassifier {
    let bert = Bert::load(model_dir, "bert.", device).unwrap();
    let targets = TargetModules::Names(vec!["query".into(), "value".into(), "dense".into()]);
    let config = AdapterConfig { method: method.defaults(), r: 2, target_modules: targets, ..Default::default() };
    let mut model = SequenceClassifier::new(
        PeftModel::new(replora::models::encoder::Encoder::Bert(bert), &config).unwrap(),
        LABELS.len(),
        pooling,
        0.0,
        3,
    );
    let mut optim = AdamWConfig::new().init();
    let input = batch().input(device);
    for _ in 0..3 {
        let loss = model.logits(&input, true).square().mean();
        model = optim.step(5e-2, model.clone(), GradientsParams::from_grads(loss.backward(), &model));
    }
    model
}

fn logits(model: &SequenceClassifier, device: &Device) -> Vec<f32> {
    model.logits(&batch().input(device), false).into_data().try_into_vec_as::<f32>().unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn labels() -> Vec<String> {
    LABELS.map(String::from).to_vec()
}

#[test]
fn merge_writes_a_sequence_classifier_only_for_the_cls_pooler_and_numpy_reads_every_layout() {
    let device = Device::flex().autodiff();
    let tmp = tempfile::tempdir().unwrap();
    let batches = tmp.path().join("batches.json");
    std::fs::write(&batches, serde_json::to_string(&serde_json::json!({ "batches": [batch()] })).unwrap()).unwrap();
    let cases = [
        (Pooling::Mean, true, HfLayout::SentenceTransformers),
        (Pooling::Cls, true, HfLayout::SequenceClassification),
        (Pooling::Cls, false, HfLayout::SentenceTransformers),
        (Pooling::Mean, false, HfLayout::SentenceTransformers),
    ];
    for (pooling, pooler, expected) in cases {
        let name = format!("{pooling}-{}", if pooler { "pooler" } else { "no-pooler" });
        let base = tmp.path().join(format!("base-{name}"));
        tiny_bert(&base, "", false, pooler);
        let model = trained(&base, pooling, Method::Dora, &device);
        let merged = tmp.path().join(format!("merged-{name}"));
        assert_eq!(model.save_merged(&merged, &labels(), 16).unwrap(), expected, "{name}");

        let config = json(&merged.join("config.json"));
        let (weights, _) = tensors::read(&merged.join("model.safetensors")).unwrap();
        match expected {
            HfLayout::SequenceClassification => {
                assert_eq!(config["architectures"], serde_json::json!(["BertForSequenceClassification"]), "{name}");
                assert_eq!(config["num_labels"], 3);
                assert!(weights.contains_key("classifier.weight") && weights.contains_key("bert.pooler.dense.weight"));
                assert!(!merged.join("modules.json").exists());
            }
            HfLayout::SentenceTransformers => {
                assert_eq!(config["architectures"], serde_json::json!(["BertModel"]), "{name}: must not claim a task head");
                assert!(config.get("num_labels").is_none() && config.get("id2label").is_none(), "{name}: {config}");
                assert!(weights.keys().all(|k| !k.starts_with("bert.") && !k.starts_with("classifier.")), "{name}: {:?}", weights.keys());
                let pooling_config = json(&merged.join("1_Pooling/config.json"));
                assert_eq!(pooling_config["pooling_mode_mean_tokens"], pooling == Pooling::Mean, "{name}");
                assert_eq!(pooling_config["pooling_mode_cls_token"], pooling == Pooling::Cls, "{name}");
                assert_eq!(json(&merged.join("2_Dense/config.json"))["activation_function"], "torch.nn.modules.linear.Identity");
                assert_eq!(json(&merged.join("labels.json")), serde_json::json!(LABELS));
                assert_eq!(json(&merged.join("sentence_bert_config.json"))["max_seq_length"], 16);
            }
        }

        let out = tmp.path().join(format!("numpy-{name}.safetensors"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/check_merged_classifier.py");
        let result = Command::new(python()).arg(script).arg(&merged).arg(&batches).arg(&out).output().unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
        assert!(result.status.success(), "{name}: numpy reader failed:\n{report}");
        let (numpy, _) = tensors::read(&out).unwrap();
        let err = max_abs_diff(&numpy["logits.0"].data, &logits(&model, &device));
        eprintln!("{name}: {report}max abs diff {err:.2e}");
        assert!(err < 1e-4, "{name}: the merged directory read as Hugging Face does gives other logits (max abs diff {err:.2e})");
    }
}

#[test]
fn export_of_a_mean_pooled_run_adapts_the_bare_encoder_and_reproduces_the_run() {
    let device = Device::flex().autodiff();
    let tmp = tempfile::tempdir().unwrap();
    for (pooling, pooler, task_type) in
        [(Pooling::Mean, true, "FEATURE_EXTRACTION"), (Pooling::Cls, false, "FEATURE_EXTRACTION"), (Pooling::Cls, true, "SEQ_CLS")]
    {
        let name = format!("{pooling}-{pooler}");
        let base = tmp.path().join(format!("base-{name}"));
        tiny_bert(&base, "", false, pooler);
        let model = trained(&base, pooling, Method::Lora, &device);
        let expected = logits(&model, &device);
        let export = tmp.path().join(format!("export-{name}"));
        export_peft(&model, &labels(), base.to_str().unwrap(), 16, &export).unwrap();
        let config = json(&export.join("adapter_config.json"));
        assert_eq!(config["task_type"], task_type, "{name}");
        let (weights, _) = tensors::read(&export.join("adapter_model.safetensors")).unwrap();
        let reimported = if task_type == "SEQ_CLS" {
            assert!(weights.keys().all(|k| k.starts_with("base_model.model.bert.") || k.starts_with("base_model.model.classifier.")));
            let (encoder, modules) =
                peft::import_with_modules(replora::models::encoder::Encoder::Bert(Bert::load(&base, "bert.", &device).unwrap()), &export)
                    .unwrap();
            SequenceClassifier::new(encoder, 3, pooling, 0.0, 0).with_head(modules, &export).unwrap()
        } else {
            assert!(
                weights.keys().all(|k| k.starts_with("base_model.model.encoder.") || k.starts_with("base_model.model.pooler.")),
                "{name}: {:?}",
                weights.keys()
            );
            let readme = std::fs::read_to_string(export.join("README.md")).unwrap();
            let pool_line = if pooling == Pooling::Mean { "mask.sum(1)" } else { "hidden[:, 0]" };
            assert!(readme.contains("```python") && readme.contains("max_length=16") && readme.contains(pool_line), "{name}: {readme}");
            // Read as a PEFT classifier it would lack its head: a clear refusal, not a model.
            let source = replora::interop::Source::Peft { adapter: &export, model: base.to_str().unwrap() };
            let err =
                replora::interop::write_logits(&source, &["hi".into()], &tmp.path().join("l.safetensors"), &burn::prelude::Device::flex())
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("FEATURE_EXTRACTION") && err.contains("not SEQ_CLS"), "{name}: {err}");
            let encoder = peft::import(replora::models::encoder::Encoder::Bert(Bert::load(&base, "", &device).unwrap()), &export).unwrap();
            SequenceClassifier::new(encoder, 3, pooling, 0.0, 0).load_head(&export.join("head.safetensors")).unwrap()
        };
        let err = max_abs_diff(&logits(&reimported, &device), &expected);
        assert!(err < 1e-5, "{name}: export -> import changed the logits by {err:.2e}");
    }
}

#[test]
fn the_default_pooling_is_the_cls_pooler_that_transformers_classifies() {
    assert_eq!(RunSpec::default().pooling, Pooling::Cls);
    #[cfg(feature = "cli")]
    {
        use clap::Parser;
        let cli = replora::apps::cli::Cli::try_parse_from(["replora", "train"]).unwrap();
        let replora::apps::cli::Command::Train { run, .. } = cli.command else { panic!("parsed as another command") };
        assert_eq!(run.to_classification().unwrap().pooling, Pooling::Cls);
    }
}
