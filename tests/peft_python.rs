//! An independent reader (Python: numpy + safetensors) checks the PEFT export.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use common::{TinyModel, input};
use replora::adapters::{Adaptable, AdapterConfig, Method, PeftModel, TargetModules};
use replora::formats::{HostTensor, peft, tensors};

/// The interpreter with numpy and safetensors: `REPLORA_PYTHON`, else the project's `.venv`.
pub fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("REPLORA_PYTHON").map(PathBuf::from).unwrap_or(root.join(".venv/bin/python"));
    let ok = Command::new(&python).args(["-c", "import numpy, safetensors"]).status().is_ok_and(|s| s.success());
    assert!(ok, "{} lacks numpy/safetensors: run scripts/test (it installs them into .venv) or set REPLORA_PYTHON", python.display());
    python
}

#[test]
fn python_reads_the_peft_export_and_reproduces_the_merge() {
    let device = Device::flex().autodiff();
    let dir = tempfile::tempdir().unwrap();
    let targets = TargetModules::Names(vec!["q_proj".into(), "v_proj".into(), "down_proj".into()]);
    for (name, method, rslora) in [("lora", Method::Lora, false), ("rslora", Method::Lora, true), ("dora", Method::Dora, false), ("replora", Method::Replora, false)] {
        let config = AdapterConfig { method, r: 3, lora_alpha: 5.0, use_rslora: rslora, target_modules: targets.clone(), ..Default::default() };
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
            reference.insert(format!("base.{}", l.path), HostTensor::from_tensor(&l.weight.val()).transpose());
        }
        let merged = peft.merge().unwrap();
        for l in merged.model.linears().into_iter().filter(|l| adapted.contains(&l.path)) {
            reference.insert(format!("merged.{}", l.path), HostTensor::from_tensor(&l.weight.val()).transpose());
        }
        let reference_file = out.join("reference.safetensors");
        tensors::write(&reference_file, &reference, None).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/check_peft_export.py");
        let result = Command::new(python()).arg(script).arg(&out).arg(&reference_file).output().unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
        assert!(result.status.success(), "{name}: python check failed:\n{report}");
        eprintln!("{name}: {report}");
    }
}
