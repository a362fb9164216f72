//! all-MiniLM-L6-v2's forward pass against an independent numpy reference
//! (tests/python/bert_reference.py, float64).

mod support;

use std::process::Command;

use burn::prelude::*;
use replora::adapters::Deltas;
use replora::models::bert::{Bert, Pooling, pool};
use replora::weights::{HostTensor, tensors};
use support::{Batch, max_abs_diff, minilm_dir, python};

/// Three batches: padding of different lengths, a sentence pair with token types 1, and one
/// longer unpadded sequence of pseudo-random ids.
fn batches() -> Vec<Batch> {
    let zeros = |n: usize| vec![0; n];
    let a = vec![101, 1037, 2158, 2003, 5983, 2833, 1012, 102];
    let b = vec![101, 1037, 2611, 102];
    let pair = |x: &[i64], y: &[i64]| {
        let ids: Vec<i64> = [&[101], x, &[102], y, &[102]].concat();
        let types = (0..ids.len()).map(|i| (i > x.len() + 1) as i64).collect();
        (ids, types)
    };
    let mut state = 7u64;
    let long: Vec<i64> = (0..64)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            1000 + (state >> 33) as i64 % 29000
        })
        .collect();
    vec![
        Batch::new(&[(a.clone(), zeros(a.len())), (b.clone(), zeros(b.len()))]),
        Batch::new(&[
            pair(&[2054, 2003, 1996, 3007], &[1996, 3007, 2003, 3000, 1012]),
            pair(&[7592], &[2088]),
            (a.clone(), zeros(a.len())),
        ]),
        Batch::new(&[(long.clone(), (0..64).map(|i| (i >= 32) as i64).collect())]),
    ]
}

#[test]
fn minilm_forward_matches_numpy_reference() {
    let device = Device::flex();
    let dir = minilm_dir();
    let model = Bert::load(&dir, "", &device).unwrap();
    let batches = batches();

    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("batches.json");
    std::fs::write(&json, serde_json::to_string(&serde_json::json!({ "batches": batches })).unwrap()).unwrap();
    let out = tmp.path().join("reference.safetensors");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/bert_reference.py");
    let result = Command::new(python()).arg(script).arg(&dir).arg(&json).arg(&out).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
    assert!(result.status.success(), "python reference failed:\n{report}");
    let (reference, _) = tensors::read(&out).unwrap();

    let mut worst = 0.0f32;
    for (i, batch) in batches.iter().enumerate() {
        let input = batch.input(&device);
        let hidden = model.forward(&input, &Deltas::none());
        let mean = pool(hidden.clone(), input.attention_mask.clone(), Pooling::Mean);
        let pooler = model.pooler_output(hidden.clone(), &Deltas::none()).expect("MiniLM has a pooler");
        let ours = [
            ("hidden", HostTensor::from_tensor(&hidden)),
            ("mean", HostTensor::from_tensor(&mean)),
            ("pooler", HostTensor::from_tensor(&pooler)),
        ];
        for (name, ours) in ours {
            let theirs = &reference[&format!("{name}.{i}")];
            assert_eq!(ours.shape, theirs.shape, "batch {i} {name}");
            let err = max_abs_diff(&ours.data, &theirs.data);
            eprintln!("batch {i} {name} {:?}: max abs error {err:.3e}", theirs.shape);
            worst = worst.max(err);
        }
    }
    eprintln!("worst max abs error vs numpy float64: {worst:.3e}");
    assert!(worst < 1e-4, "max abs error {worst:.3e} exceeds 1e-4");
}
