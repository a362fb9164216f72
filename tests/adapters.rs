//! Invariants of the adapter core on a small GQA transformer (see tests/common).

mod common;

use std::collections::BTreeMap;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use common::{TinyModel, host, input, rel_err};
use replora::adapters::{
    Activation, AdapterConfig, AdapterSet, Deltas, Method, PeftModel, SeedKind, TargetModules, closed_form, select_targets,
};
use replora::adapters::{Adaptable, MethodConfig, OutputScale, PrefixTuning, SeedInit};
use replora::formats::{native, peft};
use replora::weights::HostTensor;

/// The RepLoRA settings of a RepLoRA config.
fn replora_of(config: &mut AdapterConfig) -> &mut replora::adapters::RepLoraConfig {
    config.method.settings_mut::<replora::adapters::RepLora>().expect("a RepLoRA config")
}

/// The bottleneck settings of a `--method adapter` config.
fn bottleneck_of(config: &mut AdapterConfig) -> &mut replora::adapters::BottleneckConfig {
    config.method.settings_mut::<replora::adapters::Houlsby>().expect("a bottleneck config")
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn model() -> TinyModel {
    TinyModel::new(2, 4, 2, 4, 7, &device())
}

/// `config` with its RepLoRA settings replaced by `f` of them.
fn with_replora(
    mut config: AdapterConfig,
    f: impl FnOnce(replora::adapters::RepLoraConfig) -> replora::adapters::RepLoraConfig,
) -> AdapterConfig {
    let r = replora_of(&mut config);
    *r = f(r.clone());
    config
}

/// RepLoRA's state of an adapter.
fn replora_state(peft: &PeftModel<TinyModel>) -> &replora::adapters::replora::RepLoraState {
    peft.adapters.state_of::<replora::adapters::RepLora>().expect("a RepLoRA adapter")
}

/// Every method variant the invariants must hold for.
fn variants() -> Vec<(&'static str, AdapterConfig)> {
    let targets = |names: &[&str]| TargetModules::Names(names.iter().map(|s| s.to_string()).collect());
    let base = AdapterConfig { r: 2, lora_alpha: 4.0, target_modules: targets(&["q_proj", "v_proj"]), seed: 3, ..Default::default() };
    let replora = |seed_kind, activation, shared| {
        let mut c = AdapterConfig { method: Method::Replora.defaults(), ..base.clone() };
        replora_of(&mut c).seed_kind = seed_kind;
        replora_of(&mut c).activation = activation;
        replora_of(&mut c).shared_generators = shared;
        replora_of(&mut c).hidden = 5;
        c
    };
    vec![
        ("lora", AdapterConfig { method: Method::Lora.defaults(), ..base.clone() }),
        (
            "lora-rslora-gaussian",
            AdapterConfig {
                method: Method::Lora.defaults(),
                use_rslora: true,
                init_lora_weights: replora::adapters::LoraInit::Gaussian,
                ..base.clone()
            },
        ),
        ("dora", AdapterConfig { method: Method::Dora.defaults(), ..base.clone() }),
        ("replora-diag-tanh", replora(SeedKind::Diagonal, Activation::Tanh, false)),
        ("replora-full-gelu", replora(SeedKind::Full, Activation::Gelu, false)),
        ("replora-diag-identity-shared", replora(SeedKind::Diagonal, Activation::Identity, true)),
        (
            "replora-unscaled",
            with_replora(replora(SeedKind::Diagonal, Activation::Tanh, false), |r| replora::adapters::RepLoraConfig {
                output_scale: OutputScale::One,
                ..r
            }),
        ),
        (
            "replora-no-bias-random-seeds",
            with_replora(replora(SeedKind::Diagonal, Activation::Tanh, false), |r| replora::adapters::RepLoraConfig {
                generator_bias: false,
                seed_init: Some(SeedInit::Random),
                ..r
            }),
        ),
        (
            "replora-learned-scale",
            with_replora(replora(SeedKind::Diagonal, Activation::Tanh, false), |r| replora::adapters::RepLoraConfig {
                learn_output_scale: true,
                output_scale: OutputScale::InvH,
                ..r
            }),
        ),
        (
            "replora-full-identity-seeds",
            with_replora(replora(SeedKind::Full, Activation::Tanh, false), |r| replora::adapters::RepLoraConfig {
                seed_init: Some(SeedInit::Identity),
                ..r
            }),
        ),
        (
            "replora-wide-targets",
            AdapterConfig {
                target_modules: targets(&["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]),
                ..replora(SeedKind::Full, Activation::Relu, false)
            },
        ),
    ]
}

fn forward(peft: &PeftModel<TinyModel>, seed: u64) -> Vec<f32> {
    host(&peft.model.forward(input(&peft.model, 2, 5, seed, &device()), &peft.deltas()))
}

fn loss(peft: &PeftModel<TinyModel>, step: u64) -> Tensor<1> {
    let x = input(&peft.model, 2, 5, 100 + step, &device());
    let target = input(&peft.model, 2, 5, 500 + step, &device());
    (peft.model.forward(x, &peft.training_deltas()) - target).square().mean()
}

fn train(mut peft: PeftModel<TinyModel>, steps: u64) -> PeftModel<TinyModel> {
    let mut optim = AdamWConfig::new().init();
    for step in 0..steps {
        let grads = GradientsParams::from_grads(loss(&peft, step).backward(), &peft);
        peft = optim.step(1e-2, peft, grads);
    }
    peft
}

/// Every adapter tensor moved in training; an adapter with no tensors fails rather than passing.
fn assert_every_tensor_changed(name: &str, before: &BTreeMap<String, HostTensor>, after: &BTreeMap<String, HostTensor>) {
    assert!(!after.is_empty(), "{name}: the adapter has no tensors to check");
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "{name}: training changed the set of tensors");
    for (key, tensor) in after {
        assert_ne!(tensor.data, before[key].data, "{name}: adapter tensor {key} did not change");
    }
}

#[test]
fn zero_init_adapter_equals_base_model() {
    let base = forward(&PeftModel::new(model(), &variants()[0].1).unwrap().set_enabled(false), 1);
    for (name, config) in variants() {
        let peft = PeftModel::new(model(), &config).unwrap();
        assert_eq!(peft.deltas().len(), peft.adapters.targets.len(), "{name}");
        assert!(rel_err(&forward(&peft, 1), &base) < 1e-6, "{name}: adapted output differs from the base at init");
    }
}

#[test]
fn training_changes_every_adapter_tensor_and_no_base_weight() {
    for (name, config) in variants() {
        let peft = PeftModel::new(model(), &config).unwrap();
        let before_adapter = native::named_tensors(&peft.adapters);
        let before_base: Vec<Vec<f32>> = peft.model.linears().iter().map(|l| host(&l.weight.dense())).collect();
        let peft = train(peft, 3);
        assert_every_tensor_changed(name, &before_adapter, &native::named_tensors(&peft.adapters));
        for (linear, before) in peft.model.linears().iter().zip(&before_base) {
            assert_eq!(&host(&linear.weight.dense()), before, "{name}: base weight {} changed", linear.path);
        }
    }
}

#[test]
fn merge_matches_unmerged_output_and_unmerge_restores_the_base() {
    for (name, config) in variants() {
        let peft = train(PeftModel::new(model(), &config).unwrap(), 3);
        let w0: Vec<Vec<f32>> = peft.model.linears().iter().map(|l| host(&l.weight.dense())).collect();
        let unmerged = forward(&peft, 9);
        let merged = peft.merge().unwrap();
        assert!(merged.deltas().is_empty());
        let err = rel_err(&forward(&merged, 9), &unmerged);
        assert!(err < 1e-5, "{name}: merged vs unmerged relative error {err:e}");
        assert!(merged.clone().merge().is_err(), "{name}: merging twice must fail");
        let restored = merged.unmerge().unwrap();
        for (linear, w) in restored.model.linears().iter().zip(&w0) {
            let err = rel_err(&host(&linear.weight.dense()), w);
            assert!(err < 1e-6, "{name}: unmerge of {} off by {err:e}", linear.path);
        }
        assert!(rel_err(&forward(&restored, 9), &unmerged) < 1e-5);
    }
}

#[test]
fn disabled_adapter_gives_the_base_output() {
    let config = &variants()[3].1;
    let peft = train(PeftModel::new(model(), config).unwrap(), 2);
    let base = host(&peft.model.forward(input(&peft.model, 2, 5, 4, &device()), &Deltas::none()));
    let adapted = forward(&peft, 4);
    assert!(rel_err(&adapted, &base) > 1e-4, "training should have moved the output");
    let disabled = peft.set_enabled(false);
    assert_eq!(forward(&disabled, 4), base);
    assert_eq!(forward(&disabled.set_enabled(true), 4), adapted);
}

#[test]
fn replora_equals_its_materialized_lora_and_peft_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in variants() {
        let peft = train(PeftModel::new(model(), &config).unwrap(), 3);
        let out = forward(&peft, 11);
        let lora = PeftModel::from_parts(model(), peft.adapters.to_lora().unwrap());
        let err = rel_err(&forward(&lora, 11), &out);
        assert!(err < 1e-6, "{name}: materialized LoRA differs by {err:e}");

        let path = dir.path().join(name);
        let info = peft::PeftInfo { base_model_name_or_path: "tiny".into(), task_type: Some("CAUSAL_LM".into()), ..Default::default() };
        peft::export(&peft.adapters, &info, &path).unwrap();
        let imported = peft::import(model(), &path).unwrap();
        let err = rel_err(&forward(&imported, 11), &out);
        assert!(err < 1e-6, "{name}: PEFT export/import differs by {err:e}");
        let expected_method = if config.method.method() == Method::Dora { Method::Dora } else { Method::Lora };
        assert_eq!(imported.adapters.config.method.method(), expected_method);
    }
}

#[test]
fn native_round_trip_is_bit_exact_and_resumes_with_the_same_loss() {
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in variants() {
        let peft = train(PeftModel::new(model(), &config).unwrap(), 2);
        let path = dir.path().join(name);
        native::save(&peft.adapters, &path).unwrap();
        let loaded = native::load(model(), &path).unwrap();
        assert_eq!(native::named_tensors(&loaded.adapters), native::named_tensors(&peft.adapters), "{name}");
        assert_eq!(loaded.adapters.config, peft.adapters.config);
        let next = |p: &PeftModel<TinyModel>| host(&loss(p, 2))[0];
        assert_eq!(next(&loaded).to_bits(), next(&peft).to_bits(), "{name}: next loss differs after reload");
        // Training continues from the loaded adapter.
        let resumed = train(loaded, 1);
        assert!(host(&loss(&resumed, 2))[0].is_finite());
    }
}

#[test]
fn counted_parameters_equal_the_closed_form() {
    for (name, config) in variants() {
        let peft = PeftModel::new(model(), &config).unwrap();
        let shapes: Vec<_> = peft.model.linears().iter().map(|l| (l.path.clone(), l.d_in(), l.d_out())).collect();
        let targets = select_targets(&config, &shapes).unwrap();
        assert_eq!(peft.adapters.trainable_params(), closed_form(&config, &targets), "{name}");
        let report = peft.param_report();
        assert_eq!(report.total, peft.model.num_params() + report.trainable);
    }
    // Spot-check one number by hand: LoRA r=2 on q (16->16) and v (16->8), two layers.
    let peft = PeftModel::new(model(), &variants()[0].1).unwrap();
    assert_eq!(peft.adapters.trainable_params(), 2 * (2 * (16 + 16) + 2 * (16 + 8)));
}

/// The generator-bias and seed-init options change only what they name: without biases the
/// weights start as with them (so the two are a paired comparison), and the seeds start as the
/// identity or at random as asked.
#[test]
fn replora_bias_and_seed_init_options_change_only_their_own_tensors() {
    let with = variants()[3].1.clone();
    let mut without = with.clone();
    replora_of(&mut without).generator_bias = false;
    let (with, without) = (PeftModel::new(model(), &with).unwrap(), PeftModel::new(model(), &without).unwrap());
    let (a, b) = (native::named_tensors(&with.adapters), native::named_tensors(&without.adapters));
    assert!(b.keys().all(|k| !k.ends_with(".bias")) && a.keys().any(|k| k.ends_with("hidden.bias")));
    for (key, tensor) in &b {
        assert_eq!(tensor.data, a[key].data, "{key} differs without biases");
    }
    let seed = |p: &PeftModel<TinyModel>| host(&replora_state(p).blocks[0].seed_a.val());
    assert_eq!(seed(&with), vec![1.0; 2], "diagonal seeds start as the identity");
    let full_identity = PeftModel::new(model(), &variants()[9].1).unwrap();
    assert_eq!(replora_state(&full_identity).blocks[0].seed_a.dims(), [2, 16]);
    let expected: Vec<f32> = (0..32).map(|i| if i / 16 == i % 16 { 1.0 } else { 0.0 }).collect();
    assert_eq!(seed(&full_identity), expected, "full identity seeds are the identity's first rows");
    let random = PeftModel::new(model(), &variants()[7].1).unwrap();
    let values = seed(&random);
    assert!(values.iter().all(|v| v.is_finite()) && values[0] != values[1] && values != vec![1.0; 2], "random seeds: {values:?}");
}

/// A learned output scale starts at the fixed scale's factor: the same factors as the fixed
/// scale until training moves it, and one more trainable scalar per generator.
#[test]
fn a_learned_output_scale_starts_as_the_fixed_one() {
    let learned = variants()[8].1.clone();
    let fixed = with_replora(learned.clone(), |r| replora::adapters::RepLoraConfig { learn_output_scale: false, ..r });
    let (learned, fixed) = (PeftModel::new(model(), &learned).unwrap(), PeftModel::new(model(), &fixed).unwrap());
    let scale = replora_state(&learned).generators[0].a.scale.as_ref().expect("a learned scale");
    assert_eq!(host(&scale.val()), vec![1.0 / 5.0], "starts at 1/h for h = 5");
    let (dl, df) = (learned.deltas(), fixed.deltas());
    let a = |d: &Deltas| host(&d.get("model.layers.1.self_attn.v_proj").unwrap().a);
    assert_eq!(a(&dl), a(&df));
    assert_eq!(learned.adapters.trainable_params(), fixed.adapters.trainable_params() + 2 * replora_state(&learned).generators.len());
}

#[test]
fn replora_handles_grouped_query_shapes() {
    let peft = PeftModel::new(model(), &variants()[3].1).unwrap();
    let deltas = peft.deltas();
    let q = deltas.get("model.layers.0.self_attn.q_proj").unwrap();
    let v = deltas.get("model.layers.0.self_attn.v_proj").unwrap();
    assert_eq!((q.a.dims(), q.b.dims()), ([16, 2], [2, 16]));
    assert_eq!((v.a.dims(), v.b.dims()), ([16, 2], [2, 8]));
    assert_eq!(replora_state(&peft).blocks.len(), 2);
}

#[test]
fn merge_rejects_non_finite_weights_and_leaves_the_model_unchanged() {
    let mut peft = PeftModel::new(model(), &variants()[0].1).unwrap();
    let state = peft.adapters.state_of_mut::<replora::adapters::Lora>().expect("a LoRA adapter");
    let f = &mut state.targets[1].factors;
    f.b = f.b.clone().map(|b| b.add_scalar(f32::NAN));
    let before: Vec<Vec<f32>> = peft.model.linears().iter().map(|l| host(&l.weight.dense())).collect();
    let err = peft.clone().merge().unwrap_err().to_string();
    assert!(err.contains("NaN") && err.contains("v_proj"), "{err}");
    let after: Vec<Vec<f32>> = peft.model.linears().iter().map(|l| host(&l.weight.dense())).collect();
    assert_eq!(before, after);
}

#[test]
fn rejects_bad_configs_with_clear_errors() {
    let cases: Vec<(AdapterConfig, &str)> = vec![
        (AdapterConfig { r: 0, ..Default::default() }, "at least 1"),
        (
            AdapterConfig { r: 9, target_modules: TargetModules::Names(vec!["v_proj".into()]), ..Default::default() },
            "exceeds min(d_in, d_out)",
        ),
        (
            AdapterConfig { target_modules: TargetModules::Names(vec!["query".into()]), ..Default::default() },
            "available linear modules: model.layers.0.self_attn.q_proj",
        ),
        (AdapterConfig { target_modules: TargetModules::Regex("nothing.*".into()), ..Default::default() }, "matches no linear module"),
        (AdapterConfig { lora_dropout: 1.0, ..Default::default() }, "lora_dropout"),
    ];
    for (config, expected) in cases {
        let err = PeftModel::new(model(), &config).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
    let err = "swish".parse::<Activation>().unwrap_err().to_string();
    assert!(err.contains("unknown activation \"swish\"") && err.contains("tanh, relu, gelu, identity"), "{err}");
    let mut shared = variants()[6].1.clone();
    replora_of(&mut shared).shared_generators = true;
    shared.layers_to_transform = None;
    assert!(AdapterSet::new(&shared, &model().linears()).is_ok(), "uniform layers may share generators");
}

#[test]
fn rejects_bad_files_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter");
    let config = variants()[3].1.clone();
    let peft = PeftModel::new(model(), &config).unwrap();
    native::save(&peft.adapters, &path).unwrap();

    // A config with a wrong type.
    let cfg_file = path.join(native::CONFIG_FILE);
    let good = std::fs::read_to_string(&cfg_file).unwrap();
    std::fs::write(&cfg_file, good.replace("\"r\": 2", "\"r\": \"two\"")).unwrap();
    let err = native::load(model(), &path).unwrap_err().to_string();
    assert!(err.contains("adapter_config.json") && err.contains("invalid type"), "{err}");
    // An unknown activation in the file.
    std::fs::write(&cfg_file, good.replace("\"tanh\"", "\"swish\"")).unwrap();
    let err = native::load(model(), &path).unwrap_err().to_string();
    assert!(err.contains("unknown variant `swish`"), "{err}");
    std::fs::write(&cfg_file, &good).unwrap();

    // The adapter on a model whose shapes do not fit (wider heads).
    let other = TinyModel::new(2, 4, 2, 6, 7, &device());
    let err = native::load(other, &path).unwrap_err().to_string();
    assert!(err.contains("shape mismatch"), "{err}");

    // A truncated weights file.
    let weights = path.join(native::WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = native::load(model(), &path).unwrap_err().to_string();
    assert!(err.contains("adapter_model.safetensors") && err.contains("not a valid safetensors file"), "{err}");

    // A missing directory.
    let err = native::load(model(), &dir.path().join("nope")).unwrap_err().to_string();
    assert!(err.contains("nope/adapter_config.json"), "{err}");

    // A PEFT file with a shape that does not fit this model.
    let peft_dir = dir.path().join("peft");
    peft::export(&PeftModel::new(model(), &variants()[0].1).unwrap().adapters, &Default::default(), &peft_dir).unwrap();
    let err = peft::import(TinyModel::new(2, 4, 2, 6, 7, &device()), &peft_dir).unwrap_err().to_string();
    assert!(err.contains("shape mismatch for base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"), "{err}");
}

/// Houlsby bottlenecks after the attention and feed-forward outputs: none of LoRA's merge or
/// export invariants apply, the others do.
fn bottlenecks() -> Vec<(&'static str, AdapterConfig)> {
    let sites = TargetModules::Names(vec!["o_proj".into(), "down_proj".into()]);
    let base = AdapterConfig { method: Method::Houlsby.defaults(), target_modules: sites, seed: 5, ..Default::default() };
    let mut tanh_wide = base.clone();
    *bottleneck_of(&mut tanh_wide) = replora::adapters::BottleneckConfig { size: Some(6), activation: Activation::Tanh };
    vec![("adapter-relu-auto-width", base), ("adapter-tanh-width6", tanh_wide)]
}

#[test]
fn bottleneck_adapter_starts_as_the_base_trains_only_itself_and_round_trips() {
    let base = forward(&PeftModel::new(model(), &variants()[0].1).unwrap().set_enabled(false), 1);
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in bottlenecks() {
        let peft = PeftModel::new(model(), &config).unwrap();
        assert_eq!(peft.deltas().len(), 4, "{name}: two sites in each of two layers");
        assert!(rel_err(&forward(&peft, 1), &base) < 1e-6, "{name}: adapted output differs from the base at init");

        let before_adapter = native::named_tensors(&peft.adapters);
        let peft = train(peft, 3);
        assert_every_tensor_changed(name, &before_adapter, &native::named_tensors(&peft.adapters));
        let untouched = PeftModel::new(model(), &config).unwrap();
        for (linear, before) in peft.model.linears().iter().zip(untouched.model.linears()) {
            assert_eq!(host(&linear.weight.dense()), host(&before.weight.dense()), "{name}: base weight {} changed", linear.path);
        }
        assert!(rel_err(&forward(&peft, 1), &base) > 1e-4, "{name}: training should have moved the output");

        let path = dir.path().join(name);
        native::save(&peft.adapters, &path).unwrap();
        let loaded = native::load(model(), &path).unwrap();
        assert_eq!(native::named_tensors(&loaded.adapters), native::named_tensors(&peft.adapters), "{name}");
        assert_eq!(loaded.adapters.config, peft.adapters.config);
        assert_eq!(host(&loss(&loaded, 2))[0].to_bits(), host(&loss(&peft, 2))[0].to_bits(), "{name}: next loss differs after reload");
    }
}

#[test]
fn bottleneck_parameters_equal_the_closed_form() {
    for (name, config) in bottlenecks() {
        let peft = PeftModel::new(model(), &config).unwrap();
        let shapes: Vec<_> = peft.model.linears().iter().map(|l| (l.path.clone(), l.d_in(), l.d_out())).collect();
        assert_eq!(peft.adapters.trainable_params(), closed_form(&config, &select_targets(&config, &shapes).unwrap()), "{name}");
    }
    // By hand: both sites are 16 wide; width 16 / 16 = 1: 2 * 16 * 1 + 1 + 16 per site, four sites.
    let peft = PeftModel::new(model(), &bottlenecks()[0].1).unwrap();
    assert_eq!(peft.adapters.trainable_params(), 4 * (2 * 16 + 1 + 16));
}

#[test]
fn bottleneck_adapter_refuses_merge_and_lora_export_and_bad_widths() {
    let (_, config) = bottlenecks().remove(1);
    let peft = train(PeftModel::new(model(), &config).unwrap(), 1);
    let err = peft.clone().merge().unwrap_err().to_string();
    assert!(err.contains("cannot be merged") && err.contains("adds layers"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = peft::export(&peft.adapters, &Default::default(), &dir.path().join("peft")).unwrap_err().to_string();
    assert!(err.contains("cannot be written as LoRA"), "{err}");
    assert!(!dir.path().join("peft").exists(), "a refused export writes nothing");
    let mut zero = config.clone();
    bottleneck_of(&mut zero).size = Some(0);
    let err = PeftModel::new(model(), &zero).unwrap_err().to_string();
    assert!(err.contains("bottleneck width") && err.contains("at least 1"), "{err}");
}

/// Prefix tuning anchored at each layer's key projection, through the MLP and directly.
fn prefixes() -> Vec<(&'static str, AdapterConfig)> {
    let keys = TargetModules::Names(vec!["k_proj".into()]);
    let base = AdapterConfig { method: Method::Prefix.defaults(), target_modules: keys, seed: 7, ..Default::default() };
    let direct = AdapterConfig {
        method: MethodConfig::Prefix(replora::adapters::PrefixConfig { length: 3, reparameterize: false, hidden: 4 }),
        ..base.clone()
    };
    vec![("prefix-mlp", base), ("prefix-direct", direct)]
}

#[test]
fn prefix_trains_only_itself_counts_in_closed_form_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in prefixes() {
        let peft = PeftModel::new(model(), &config).unwrap();
        let deltas = peft.deltas();
        let kv = deltas.prefix("model.layers.1.self_attn.k_proj").unwrap();
        // Grouped-query shapes: the prefix has the key projection's width (2 kv heads x 4).
        assert_eq!((kv.key.dims(), kv.value.dims()), ([config.method.virtual_tokens(), 8], [config.method.virtual_tokens(), 8]), "{name}");
        let shapes: Vec<_> = peft.model.linears().iter().map(|l| (l.path.clone(), l.d_in(), l.d_out())).collect();
        assert_eq!(peft.adapters.trainable_params(), closed_form(&config, &select_targets(&config, &shapes).unwrap()), "{name}");

        let before = native::named_tensors(&peft.adapters);
        let trained = train(peft, 3);
        assert_every_tensor_changed(name, &before, &native::named_tensors(&trained.adapters));
        let untouched = model();
        for (linear, base) in trained.model.linears().iter().zip(untouched.linears()) {
            assert_eq!(host(&linear.weight.dense()), host(&base.weight.dense()), "{name}: base weight {} changed", linear.path);
        }
        let path = dir.path().join(name);
        native::save(&trained.adapters, &path).unwrap();
        let loaded = native::load(model(), &path).unwrap();
        assert_eq!(native::named_tensors(&loaded.adapters), native::named_tensors(&trained.adapters), "{name}");
        assert_eq!(host(&loss(&loaded, 2))[0].to_bits(), host(&loss(&trained, 2))[0].to_bits(), "{name}: next loss differs after reload");
    }
    // By hand, direct: 3 tokens x 2 layers x (keys 8 + values 8).
    assert_eq!(PeftModel::new(model(), &prefixes()[1].1).unwrap().adapters.trainable_params(), 3 * 2 * 16);
}

#[test]
fn the_reparameterized_prefix_materializes_to_the_same_model() {
    let (_, config) = prefixes().remove(0);
    let trained = train(PeftModel::new(model(), &config).unwrap(), 2);
    let mut direct = trained.adapters.clone();
    let state = direct.state_of_mut::<PrefixTuning>().unwrap();
    state.prefix = state.prefix.materialized();
    assert!(state.prefix.mlp.is_none());
    let materialized = PeftModel::from_parts(model(), direct);
    assert_eq!(forward(&materialized, 5), forward(&trained, 5));
}

#[test]
fn prefix_refuses_merge_partial_layers_and_empty_settings() {
    let (_, config) = prefixes().remove(0);
    let peft = PeftModel::new(model(), &config).unwrap();
    let err = peft.clone().merge().unwrap_err().to_string();
    assert!(err.contains("prefix tuning") && err.contains("cannot be merged"), "{err}");
    let err = peft::export(&peft.adapters, &Default::default(), &tempfile::tempdir().unwrap().path().join("p")).unwrap_err().to_string();
    assert!(err.contains("decoders only"), "{err}");
    let one_layer = AdapterConfig { layers_to_transform: Some(vec![1]), ..config.clone() };
    let err = PeftModel::new(model(), &one_layer).unwrap_err().to_string();
    assert!(err.contains("one key projection per layer"), "{err}");
    let two_per_layer = AdapterConfig { target_modules: TargetModules::Names(vec!["k_proj".into(), "v_proj".into()]), ..config.clone() };
    assert!(PeftModel::new(model(), &two_per_layer).is_err());
    let mut empty = config.clone();
    empty.method.settings_mut::<PrefixTuning>().unwrap().length = 0;
    let err = PeftModel::new(model(), &empty).unwrap_err().to_string();
    assert!(err.contains("prefix.length") && err.contains("at least 1"), "{err}");
}

/// Adapters written by replora before adapter methods were plug-ins (issue 28), one per
/// variant: `adapter_config.json` in that format, the tensors, and `expected.json` with the
/// model's output bits and the checkpoint names of the trainable tensors. They must load and
/// give the same output, and a checkpoint must name its tensors as then (so runs interrupted
/// before the change resume). The output is compared within 1e-5 of its largest magnitude, not
/// to the bit: the bits were written on an AMD CPU, and the matrix products round differently
/// on one with AVX-512 (up to 6 ulps here); a wrongly loaded tensor moves it by far more.
/// `REPLORA_BLESS=1` rewrites them from today's code.
#[test]
fn adapters_written_before_methods_were_plug_ins_load_to_the_same_output() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adapters-0.1");
    let all: Vec<(&str, AdapterConfig)> = [variants(), bottlenecks(), prefixes()].concat();
    let checkpoint_names = |peft: &PeftModel<TinyModel>| -> Vec<String> {
        replora::training::state::TrainableState::of(peft).tensors.into_keys().filter(|k| k.starts_with("adapters.")).collect()
    };
    if std::env::var_os("REPLORA_BLESS").is_some() {
        for (name, config) in &all {
            let peft = train(PeftModel::new(model(), config).unwrap(), 2);
            let dir = root.join(name);
            native::save(&peft.adapters, &dir).unwrap();
            let bits: Vec<u32> = forward(&peft, 9).iter().map(|x| x.to_bits()).collect();
            let expected = serde_json::json!({"output_bits": bits, "checkpoint_names": checkpoint_names(&peft)});
            std::fs::write(dir.join("expected.json"), serde_json::to_string(&expected).unwrap()).unwrap();
        }
    }
    let mut dirs: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    assert_eq!(dirs.len(), 15, "one fixture per variant");
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let loaded = native::load(model(), &dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let output = forward(&loaded, 9);
        let bits: Vec<u32> = serde_json::from_value(expected["output_bits"].clone()).unwrap();
        let written: Vec<f32> = bits.into_iter().map(f32::from_bits).collect();
        assert_eq!(output.len(), written.len(), "{name}");
        let scale = written.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = output.iter().zip(&written).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-5 * scale, "{name}: the output changed by {diff} (scale {scale})");
        assert_eq!(serde_json::json!(checkpoint_names(&loaded)), expected["checkpoint_names"], "{name}: checkpoint names changed");
        assert!(!expected["checkpoint_names"].as_array().unwrap().is_empty(), "{name}");
        // The config reads back as the variant that wrote it.
        let config = &all.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no variant {name}")).1;
        assert_eq!(&loaded.adapters.config, config, "{name}");
    }
}
