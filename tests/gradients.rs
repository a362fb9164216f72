//! Autodiff gradients of every trainable adapter tensor against central finite differences,
//! in f64 (this test binary sets the device's default float type to f64).

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType, Gradients};
use common::TinyModel;
use replora::Result;
use replora::adapters::init::Init;
use replora::adapters::set::NamedParams;
use replora::adapters::{Activation, Adaptable, AdapterConfig, Method, OutputScale, PeftModel, SeedInit, SeedKind, TargetModules};

/// The RepLoRA settings of a RepLoRA config.
fn replora_of(config: &mut AdapterConfig) -> &mut replora::adapters::RepLoraConfig {
    config.method.settings_mut::<replora::adapters::RepLora>().expect("a RepLoRA config")
}

/// The bottleneck settings of a `--method adapter` config.
fn bottleneck_of(config: &mut AdapterConfig) -> &mut replora::adapters::BottleneckConfig {
    config.method.settings_mut::<replora::adapters::Houlsby>().expect("a bottleneck config")
}

fn device() -> Device {
    static CONFIGURED: OnceLock<()> = OnceLock::new();
    CONFIGURED.get_or_init(|| {
        Device::flex().configure(FloatDType::F64).expect("configure f64 before any tensor exists");
    });
    Device::flex().autodiff()
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    t.to_data().try_into_vec_as::<f64>().unwrap()
}

/// Replaces the named parameters with the given f64 values.
struct SetValues {
    values: BTreeMap<String, Vec<f64>>,
}

impl NamedParams for SetValues {
    fn param<const D: usize>(&mut self, name: &str, param: Param<Tensor<D>>) -> Result<Param<Tensor<D>>> {
        let Some(v) = self.values.get(name) else { return Ok(param) };
        let shape = param.shape();
        let value = Tensor::from_data(TensorData::new(v.clone(), shape), &param.device());
        Ok(param.map(|old| value.set_require_grad(old.is_require_grad())))
    }
}

/// Reads every parameter's values and (when given) its gradient.
struct Read<'a> {
    grads: Option<&'a Gradients>,
    values: BTreeMap<String, Vec<f64>>,
    grad: BTreeMap<String, Vec<f64>>,
}

impl NamedParams for Read<'_> {
    fn param<const D: usize>(&mut self, name: &str, param: Param<Tensor<D>>) -> Result<Param<Tensor<D>>> {
        let v = param.val();
        assert_eq!(v.dtype(), DType::F64, "{name} is not f64: the check would be meaningless");
        self.values.insert(name.into(), values(&v));
        if let Some(g) = self.grads {
            let grad = v.grad(g).map(|g| values(&g)).unwrap_or_else(|| vec![0.0; v.shape().num_elements()]);
            self.grad.insert(name.into(), grad);
        }
        Ok(param)
    }
}

fn read<'a>(peft: &PeftModel<TinyModel>, grads: Option<&'a Gradients>) -> Read<'a> {
    let mut r = Read { grads, values: BTreeMap::new(), grad: BTreeMap::new() };
    peft.adapters.clone().map_named(&mut r).unwrap();
    r
}

fn with_values(peft: &PeftModel<TinyModel>, values: BTreeMap<String, Vec<f64>>) -> PeftModel<TinyModel> {
    let adapters = peft.adapters.clone().map_named(&mut SetValues { values }).unwrap();
    PeftModel::from_parts(peft.model.clone(), adapters)
}

/// `sum(model(x) * R)` for fixed x and R.
fn loss(peft: &PeftModel<TinyModel>) -> Tensor<1> {
    let d = device();
    let x: Param<Tensor<3>> = Init::new(41, &d).uniform([2, 3, peft.model.hidden()], 1.0);
    let r: Param<Tensor<3>> = Init::new(42, &d).uniform([2, 3, peft.model.hidden()], 1.0);
    (peft.model.forward(x.val().detach(), &peft.deltas()) * r.val().detach()).sum()
}

/// DoRA treats `||W0 + s B A||` as a constant in backward (as PEFT and the DoRA paper do), so
/// its finite differences must hold that norm fixed: rescale `m` by `n(perturbed) / n(point)`.
fn freeze_dora_norms(point: &PeftModel<TinyModel>, perturbed: PeftModel<TinyModel>) -> PeftModel<TinyModel> {
    let Some(dora) = point.adapters.state_of::<replora::adapters::Dora>() else {
        return perturbed;
    };
    let norm = |p: &PeftModel<TinyModel>, path: &str| {
        let w = p.model.linears().into_iter().find(|l| l.path == path).unwrap().weight.dense();
        let d = p.deltas();
        (w + d.get(path).unwrap().dense()).square().sum_dim(0).sqrt().squeeze_dim::<1>(0)
    };
    let mut values = BTreeMap::new();
    for (t, state) in point.adapters.targets.iter().zip(&dora.targets) {
        let path = &t.path;
        let m = state.magnitude.val();
        values.insert(format!("{path}.magnitude"), self::values(&(m * norm(&perturbed, path) / norm(point, path))));
    }
    // Keep the perturbed magnitude entry itself when m is the perturbed tensor.
    let perturbed_m = read(&perturbed, None).values;
    let point_m = read(point, None).values;
    for (k, v) in values.iter_mut() {
        if perturbed_m[k] != point_m[k] {
            *v = perturbed_m[k].clone();
        }
    }
    with_values(&perturbed, values)
}

fn check(name: &str, config: AdapterConfig) {
    let d = device();
    let model = TinyModel::new(2, 2, 1, 3, 5, &d);
    let peft = PeftModel::new(model, &config).unwrap();
    // Move every adapter tensor off its init (B = 0 would make many gradients trivially zero).
    let mut init = Init::new(99, &d);
    let random = read(&peft, None)
        .values
        .into_iter()
        .map(|(k, v)| {
            let p: Param<Tensor<1>> = init.uniform([v.len()], 0.5);
            let noise = values(&p.val());
            let v = v.iter().zip(noise).map(|(a, n)| a + n).collect();
            (k, v)
        })
        .collect();
    let peft = with_values(&peft, random);
    let grads = loss(&peft).backward();
    let point = read(&peft, Some(&grads));
    let eps = 1e-6;
    let mut worst = 0.0f64;
    let mut checked = 0;
    for (key, v) in &point.values {
        let stride = (v.len() / 7).max(1);
        for i in (0..v.len()).step_by(stride) {
            let eval = |delta: f64| {
                let mut moved = v.clone();
                moved[i] += delta;
                let perturbed = with_values(&peft, BTreeMap::from([(key.clone(), moved)]));
                values(&loss(&freeze_dora_norms(&peft, perturbed)))[0]
            };
            let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
            let ad = point.grad[key][i];
            let err = (fd - ad).abs() / ad.abs().max(1.0);
            worst = worst.max(err);
            checked += 1;
            assert!(err < 1e-6, "{name}: d loss / d {key}[{i}]: autodiff {ad:e}, finite difference {fd:e}");
        }
    }
    // A check over no parameters, or one that skipped a tensor, would pass without checking.
    assert!(
        !point.values.is_empty() && checked >= point.values.len(),
        "{name}: {checked} entries of {} tensors checked",
        point.values.len()
    );
    eprintln!("{name}: {checked} entries of {} tensors, worst relative error {worst:.2e}", point.values.len());
}

fn base() -> AdapterConfig {
    AdapterConfig {
        r: 2,
        lora_alpha: 3.0,
        target_modules: TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]),
        ..Default::default()
    }
}

#[test]
fn lora_gradients_match_finite_differences() {
    check("lora", AdapterConfig { method: Method::Lora.defaults(), ..base() });
}

#[test]
fn dora_gradients_match_finite_differences() {
    check("dora", AdapterConfig { method: Method::Dora.defaults(), ..base() });
}

#[test]
fn replora_gradients_match_finite_differences() {
    for seed_kind in [SeedKind::Diagonal, SeedKind::Full] {
        for activation in [Activation::Tanh, Activation::Relu, Activation::Gelu, Activation::Identity] {
            let mut config = AdapterConfig { method: Method::Replora.defaults(), ..base() };
            replora_of(&mut config).seed_kind = seed_kind;
            replora_of(&mut config).activation = activation;
            replora_of(&mut config).hidden = 3;
            check(&format!("replora-{seed_kind}-{activation}"), config);
        }
    }
    let mut shared = AdapterConfig { method: Method::Replora.defaults(), ..base() };
    replora_of(&mut shared).shared_generators = true;
    check("replora-shared", shared);
    for scale in [OutputScale::One, OutputScale::InvH] {
        let mut config = AdapterConfig { method: Method::Replora.defaults(), ..base() };
        replora_of(&mut config).output_scale = scale;
        replora_of(&mut config).hidden = 3;
        check(&format!("replora-scale-{scale}"), config);
    }
    for (seed_kind, seed_init) in [(SeedKind::Diagonal, SeedInit::Random), (SeedKind::Full, SeedInit::Identity)] {
        let mut config = AdapterConfig { method: Method::Replora.defaults(), ..base() };
        replora_of(&mut config).seed_kind = seed_kind;
        replora_of(&mut config).seed_init = Some(seed_init);
        replora_of(&mut config).generator_bias = false;
        replora_of(&mut config).hidden = 3;
        check(&format!("replora-{seed_kind}-{seed_init}-no-bias"), config);
    }
    let mut learned = AdapterConfig { method: Method::Replora.defaults(), ..base() };
    replora_of(&mut learned).learn_output_scale = true;
    replora_of(&mut learned).hidden = 3;
    check("replora-learned-scale", learned);
}

#[test]
fn bottleneck_adapter_gradients_match_finite_differences() {
    for activation in [Activation::Tanh, Activation::Gelu] {
        let mut config = AdapterConfig {
            method: Method::Houlsby.defaults(),
            target_modules: TargetModules::Names(vec!["o_proj".into(), "down_proj".into()]),
            ..base()
        };
        bottleneck_of(&mut config).size = Some(2);
        bottleneck_of(&mut config).activation = activation;
        check(&format!("adapter-{activation}"), config);
    }
}

#[test]
fn prefix_gradients_match_finite_differences() {
    for reparameterize in [true, false] {
        let mut config =
            AdapterConfig { method: Method::Prefix.defaults(), target_modules: TargetModules::Names(vec!["k_proj".into()]), ..base() };
        config.method = replora::adapters::MethodConfig::Prefix(replora::adapters::PrefixConfig { length: 2, reparameterize, hidden: 3 });
        check(&format!("prefix-reparameterize-{reparameterize}"), config);
    }
}
