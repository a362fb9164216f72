//! The fused CPU kernels engage in real models: a forward and backward pass of a tiny BERT and a
//! tiny LLaMA with a LoRA adapter, in f32 on flex, runs each kernel the model uses. A kernel that
//! silently fell back to burn's ops would still give right values, so only these counts show it.

mod support;

use burn::prelude::*;
use replora::adapters::{AdapterConfig, Method, PeftModel, TargetModules};
use replora::data::tokenize::EncoderInput;
use replora::kernels::{Kernel, fused_calls};
use replora::models::bert::Bert;
use replora::models::llama::Llama;

/// The kernels that ran (with their counts) while `f` ran on this thread.
fn engaged(f: impl FnOnce()) -> Vec<(Kernel, usize)> {
    let all = [Kernel::Linear, Kernel::Attention, Kernel::Norm, Kernel::Rope, Kernel::Gelu, Kernel::Silu, Kernel::SwiGlu, Kernel::Softmax];
    let before = all.map(fused_calls);
    f();
    all.iter().zip(before).map(|(&k, b)| (k, fused_calls(k) - b)).filter(|(_, n)| *n > 0).collect()
}

fn kernels(counts: &[(Kernel, usize)]) -> Vec<Kernel> {
    counts.iter().map(|(k, _)| *k).collect()
}

#[test]
fn a_bert_forward_and_backward_run_the_fused_kernels() {
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
    let counts = engaged(|| {
        let _ = peft.model.forward(&input, &peft.training_deltas()).sin().sum().backward();
    });
    eprintln!("BERT: {counts:?}");
    assert_eq!(kernels(&counts), [Kernel::Linear, Kernel::Attention, Kernel::Norm, Kernel::Gelu], "{counts:?}");
    // 2 layers x 6 linears (q, k, v, attention output, intermediate, output), 2 attentions, 1 + 2 x 2 norms.
    let count = |k: Kernel| counts.iter().find(|(c, _)| *c == k).map_or(0, |(_, n)| *n);
    assert!(count(Kernel::Linear) >= 12 && count(Kernel::Attention) == 2 && count(Kernel::Norm) == 5, "{counts:?}");
}

#[test]
fn a_llama_forward_and_backward_run_the_fused_kernels() {
    let dir = tempfile::tempdir().unwrap();
    support::tiny_llama_model(dir.path());
    let device = Device::flex().autodiff();
    let llama = Llama::load(dir.path(), &device).unwrap();
    let targets = TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]);
    let peft =
        PeftModel::new(llama, &AdapterConfig { method: Method::Lora.defaults(), target_modules: targets, ..Default::default() }).unwrap();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 5, 7, 9, 1, 6, 8, 10], [2, 4]), &device);
    let counts = engaged(|| {
        let hidden = peft.model.forward(ids.clone(), None, None, &peft.training_deltas());
        let _ = peft.model.logits(hidden).sin().sum().backward();
    });
    eprintln!("LLaMA: {counts:?}");
    assert_eq!(kernels(&counts), [Kernel::Linear, Kernel::Attention, Kernel::Norm, Kernel::Rope, Kernel::SwiGlu], "{counts:?}");
}
