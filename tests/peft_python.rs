//! An independent reader (Python: numpy + safetensors) checks the PEFT export.

mod common;
mod support;

use std::collections::BTreeMap;
use std::process::Command;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use common::{TinyModel, input};
use replora::adapters::{Adaptable, AdapterConfig, Method, PeftModel, TargetModules};
use replora::formats::peft;
use replora::weights::{HostTensor, tensors};
use support::python;

#[test]
fn python_reads_the_peft_export_and_reproduces_the_merge() {
    let device = Device::flex().autodiff();
    let dir = tempfile::tempdir().unwrap();
    let targets = TargetModules::Names(vec!["q_proj".into(), "v_proj".into(), "down_proj".into()]);
    for (name, method, rslora) in
        [("lora", Method::Lora, false), ("rslora", Method::Lora, true), ("dora", Method::Dora, false), ("replora", Method::Replora, false)]
    {
        let config = AdapterConfig {
            method: method.defaults(),
            r: 3,
            lora_alpha: 5.0,
            use_rslora: rslora,
            target_modules: targets.clone(),
            ..Default::default()
        };
        let mut peft = PeftModel::new(TinyModel::new(2, 4, 2, 4, 1, &device), &config).unwrap();
        let mut optim = AdamWConfig::new().init();
        for step in 0..3 {
            let x = input(&peft.model, 2, 4, step, &device);
            let loss = peft.model.forward(x, &peft.training_deltas()).square().mean();
            peft = optim.step(1e-2, peft.clone(), GradientsParams::from_grads(loss.backward(), &peft));
        }
        let out = dir.path().join(name);
        peft::export(&peft.adapters, &peft::PeftInfo { base_model_name_or_path: "tiny".into(), ..Default::default() }, &out).unwrap();
        let adapted: Vec<String> = peft.adapters.target_paths().into_iter().map(String::from).collect();
        let mut reference = BTreeMap::new();
        for l in peft.model.linears().into_iter().filter(|l| adapted.contains(&l.path)) {
            reference.insert(format!("base.{}", l.path), HostTensor::from_tensor(&l.weight.dense()).transpose());
        }
        let merged = peft.merge().unwrap();
        for l in merged.model.linears().into_iter().filter(|l| adapted.contains(&l.path)) {
            reference.insert(format!("merged.{}", l.path), HostTensor::from_tensor(&l.weight.dense()).transpose());
        }
        let reference_file = out.join("reference.safetensors");
        tensors::write(&reference_file, &reference, None).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/check_peft_export.py");
        let result = Command::new(python()).arg(script).arg(&out).arg(&reference_file).output().unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
        assert!(result.status.success(), "{name}: python check failed:\n{report}");
        // The script compared every adapted module, not none.
        let expected = format!("ok: {} modules", adapted.len());
        assert!(!adapted.is_empty() && report.contains(&expected), "{name}: expected {expected:?} in:\n{report}");
        eprintln!("{name}: {report}");
    }
}
