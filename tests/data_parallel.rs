//! Data parallel training (`--device cpu,cpu`): two replicas, each computing a share of every
//! step's micro-batches, train the same model as one device with the same batches, dropout
//! included, with and without activation checkpointing; and a device list the run cannot use is
//! refused before anything is written.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::Device;
use replora::run::{self, Start};
use replora::tasks::Classification;
use replora::tasks::classification::ClassificationSpec;
use replora::training::TrainConfig;
use replora::weights::HostTensor;

fn spec(dir: &Path, grad_accum: usize, checkpoint_activations: bool) -> ClassificationSpec {
    ClassificationSpec {
        model: dir.join("bert").to_str().unwrap().into(),
        data: dir.join("data.jsonl").to_str().unwrap().into(),
        max_len: 16,
        // Dropout on (the head's 0.1 and LoRA's): each micro-batch must draw the same mask on
        // whichever replica computes it.
        train: TrainConfig { epochs: 2, batch_size: 4, grad_accum, log_every: 1, checkpoint_activations, ..TrainConfig::default() },
        ..ClassificationSpec::default()
    }
}

fn trained(run: &Path) -> BTreeMap<String, HostTensor> {
    let mut tensors = replora::weights::tensors::read(&run.join("adapter/adapter_model.safetensors")).unwrap().0;
    tensors.extend(replora::weights::tensors::read(&run.join("head.safetensors")).unwrap().0);
    tensors
}

fn losses(run: &Path) -> Vec<f64> {
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64()).collect()
}

#[test]
fn two_replicas_train_what_one_device_trains_with_the_same_batches() {
    for checkpoint_activations in [false, true] {
        two_replicas_train_what_one_device_trains(checkpoint_activations);
    }
}

fn two_replicas_train_what_one_device_trains(checkpoint_activations: bool) {
    let dir = tempfile::tempdir().unwrap();
    support::tiny_bert_model(&dir.path().join("bert"));
    support::word_dataset(&dir.path().join("data.jsonl"), 3, 12);
    let spec = spec(dir.path(), 2, checkpoint_activations);
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    let flex = Device::flex();
    let single = run::train::<Classification>(&spec, &one, Start::New, std::slice::from_ref(&flex)).unwrap();
    let parallel = run::train::<Classification>(&spec, &two, Start::New, &[flex.clone(), flex]).unwrap();

    let (a, b) = (losses(&one), losses(&two));
    assert!(a.len() >= 4 && a.len() == b.len(), "{a:?} {b:?}");
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "checkpointing {checkpoint_activations}: training losses differ: {a:?} vs {b:?}");
    }
    let (a, b) = (trained(&one), trained(&two));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, x) in &a {
        let scale = x.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = support::max_abs_diff(&x.data, &b[name].data);
        assert!(
            diff <= 1e-5 * scale,
            "checkpointing {checkpoint_activations}, {name}: the two-replica run ends {diff} away (largest magnitude {scale})"
        );
    }
    assert_eq!(single.test.accuracy, parallel.test.accuracy);
}

#[test]
fn more_devices_than_micro_batches_per_step_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    support::tiny_bert_model(&dir.path().join("bert"));
    support::word_dataset(&dir.path().join("data.jsonl"), 3, 4);
    let out = dir.path().join("run");
    let flex = Device::flex();
    let e = run::train::<Classification>(&spec(dir.path(), 1, false), &out, Start::New, &[flex.clone(), flex]).unwrap_err().to_string();
    assert!(e.contains("--device lists 2 devices") && e.contains("--grad-accum 1"), "{e}");
    let e = run::train::<Classification>(&spec(dir.path(), 1, false), &out, Start::New, &[]).unwrap_err().to_string();
    assert!(e.contains("no device"), "{e}");
    assert!(!out.exists(), "nothing is written for a refused device list");
}
