//! The fused CPU kernels engage in real models, and their switch turns them off: a forward and
//! backward pass of a tiny BERT and a tiny LLaMA with a LoRA adapter, in f32 on flex, runs each
//! kernel the model uses; under `kernels::with_fallback` (what `REPLORA_FUSED_KERNELS=off` does
//! for a whole process) it runs none of them and gives the same output and gradients. A kernel
//! that silently fell back to burn's ops would still give right values, so only these counts
//! show it.

mod support;

use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use replora::adapters::{AdapterConfig, Method, PeftModel, TargetModules};
use replora::data::tokenize::EncoderInput;
use replora::kernels::{Kernel, fused_calls, with_fallback};
use replora::models::bert::Bert;
use replora::models::llama::Llama;

const ALL: [Kernel; 9] = [
    Kernel::Linear,
    Kernel::Attention,
    Kernel::Norm,
    Kernel::Rope,
    Kernel::Gelu,
    Kernel::Silu,
    Kernel::SwiGlu,
    Kernel::Softmax,
    Kernel::QuantizedLinear,
];

/// The kernels that ran (with their counts) while `f` ran on this thread, and `f`'s result.
fn engaged<R>(f: impl FnOnce() -> R) -> (Vec<(Kernel, usize)>, R) {
    let before = ALL.map(fused_calls);
    let out = f();
    (ALL.iter().zip(before).map(|(&k, b)| (k, fused_calls(k) - b)).filter(|(_, n)| *n > 0).collect(), out)
}

fn kernels(counts: &[(Kernel, usize)]) -> Vec<Kernel> {
    counts.iter().map(|(k, _)| *k).collect()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// A pass's output and the gradient of every trainable tensor, in module order.
struct Pass {
    output: Vec<f32>,
    grads: Vec<Vec<f32>>,
}

struct Grads<'a>(&'a GradientsParams, Vec<Vec<f32>>);

impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.0.get::<D>(param.id) {
            self.1.push(host(g));
        }
    }
}

/// Runs `output` (a forward pass) and the backward pass of `sin(output).sum()`.
fn pass<M: Module>(model: &M, output: impl FnOnce() -> Tensor<3>) -> Pass {
    let output = output();
    let grads = GradientsParams::from_grads(output.clone().sin().sum().backward(), model);
    let mut visitor = Grads(&grads, Vec::new());
    model.visit(&mut visitor);
    Pass { output: host(output), grads: visitor.1 }
}

/// Fused and fallback passes agree: each tensor within 1e-4 of its largest magnitude plus 1e-6
/// (the same sums, added in another order).
fn assert_same(fused: &Pass, fallback: &Pass, model: &str) {
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len(), "{model} {what}");
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-4 * scale + 1e-6, "{model} {what}: fused and fallback differ by {diff} (scale {scale})");
    };
    close(&fused.output, &fallback.output, "output");
    assert_eq!(fused.grads.len(), fallback.grads.len(), "{model}: trainable tensors with a gradient");
    assert!(!fused.grads.is_empty() && fused.grads.iter().any(|g| g.iter().any(|v| *v != 0.0)), "{model}: no gradient reached");
    for (i, (a, b)) in fused.grads.iter().zip(&fallback.grads).enumerate() {
        close(a, b, &format!("gradient {i}"));
    }
}

fn bert_pass() -> impl Fn() -> Pass {
    let dir = tempfile::tempdir().unwrap();
    support::tiny_bert(dir.path(), "", false, true);
    let device = Device::flex().autodiff();
    let bert = Bert::load(dir.path(), "", &device).unwrap();
    let peft = PeftModel::new(bert, &AdapterConfig { method: Method::Lora.defaults(), ..Default::default() }).unwrap();
    let input = EncoderInput {
        input_ids: Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 5, 7, 3, 2, 9, 3, 0], [2, 4]), &device),
        token_type_ids: Tensor::<2, Int>::zeros([2, 4], &device),
        attention_mask: Tensor::from_data(TensorData::new(vec![1f32, 1., 1., 1., 1., 1., 1., 0.], [2, 4]), &device),
    };
    move || pass(&peft, || peft.model.forward(&input, &peft.training_deltas()))
}

fn llama_pass() -> impl Fn() -> Pass {
    let dir = tempfile::tempdir().unwrap();
    support::tiny_llama_model(dir.path());
    let device = Device::flex().autodiff();
    let llama = Llama::load(dir.path(), &device).unwrap();
    let targets = TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]);
    let peft =
        PeftModel::new(llama, &AdapterConfig { method: Method::Lora.defaults(), target_modules: targets, ..Default::default() }).unwrap();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 5, 7, 9, 1, 6, 8, 10], [2, 4]), &device);
    move || pass(&peft, || peft.model.logits(peft.model.forward(ids.clone(), None, None, &peft.training_deltas())))
}

#[test]
fn a_bert_forward_and_backward_run_the_fused_kernels() {
    let (counts, _) = engaged(bert_pass());
    eprintln!("BERT: {counts:?}");
    assert_eq!(kernels(&counts), [Kernel::Linear, Kernel::Attention, Kernel::Norm, Kernel::Gelu], "{counts:?}");
    // 2 layers x 6 linears (q, k, v, attention output, intermediate, output), 2 attentions, 1 + 2 x 2 norms.
    let count = |k: Kernel| counts.iter().find(|(c, _)| *c == k).map_or(0, |(_, n)| *n);
    assert!(count(Kernel::Linear) >= 12 && count(Kernel::Attention) == 2 && count(Kernel::Norm) == 5, "{counts:?}");
}

#[test]
fn a_llama_forward_and_backward_run_the_fused_kernels() {
    let (counts, _) = engaged(llama_pass());
    eprintln!("LLaMA: {counts:?}");
    assert_eq!(kernels(&counts), [Kernel::Linear, Kernel::Attention, Kernel::Norm, Kernel::Rope, Kernel::SwiGlu], "{counts:?}");
}

#[test]
fn the_switch_runs_burns_ops_instead_to_the_same_values() {
    for (model, run) in [("BERT", Box::new(bert_pass()) as Box<dyn Fn() -> Pass>), ("LLaMA", Box::new(llama_pass()))] {
        let (fused_counts, fused) = engaged(&run);
        assert!(!fused_counts.is_empty(), "{model}: the fused kernels did not engage");
        let (fallback_counts, fallback) = engaged(|| with_fallback(&run));
        assert!(fallback_counts.is_empty(), "{model}: kernels took their fused path with the switch off: {fallback_counts:?}");
        assert_same(&fused, &fallback, model);
    }
}
