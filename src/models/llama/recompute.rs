//! A decoder's training pass with activation checkpointing (`--checkpoint-activations`): the
//! forward pass keeps only each layer's input, and the backward pass runs each layer's forward
//! again, last layer first, to take its gradients.
//!
//! A training pass otherwise keeps every layer's activations for its backward pass: about 120 MB
//! per sequence of 128 tokens for SmolLM2-135M (30 layers), several times its 4-bit weights.
//! Here the passes are separate graphs, which burn's autodiff allows (a fresh forward may reuse
//! parameter leaves after an earlier backward): one graph-free forward through every layer,
//! then one small graph per layer, in reverse, each differentiated at once with the gradient
//! of its output as the seed, so at most one layer's activations are alive at a time. The cost
//! is one more forward pass per step.
//!
//! LoRA dropout draws its masks from the device's generator, so both passes of a layer seed it
//! alike (per micro-batch and layer): the recomputed layer drops what the first pass dropped.
//! The masks are not those of a pass without checkpointing, which draws them in one sequence.

use burn::prelude::*;
use burn::tensor::{Distribution, Gradients};

use super::Llama;
use crate::adapters::Deltas;

/// What a checkpointed pass takes from its task besides the model.
pub struct CheckpointedPass<'a> {
    /// The input embeddings `[batch, t, hidden]` (tracked when the embedding table trains).
    pub embed: &'a dyn Fn() -> Tensor<3>,
    /// `[batch, t]`, 1 for real tokens.
    pub attention_mask: Option<Tensor<2>>,
    /// The adapters' deltas, tracked: made afresh for each layer's graph.
    pub deltas: &'a dyn Fn() -> Deltas,
    /// The loss of the final-norm hidden states.
    pub loss: &'a dyn Fn(Tensor<3>) -> Tensor<1>,
    /// The gradients are those of `scale` times the loss.
    pub scale: f64,
}

impl Llama {
    /// The loss of `pass` (detached), its gradients handed to `collect` one graph at a time
    /// (the head's, each layer's from the last, the embeddings'): their sum is the gradient of a
    /// pass without checkpointing.
    pub fn checkpointed_backward(&self, pass: CheckpointedPass<'_>, mut collect: impl FnMut(Gradients)) -> Tensor<1> {
        let embeddings = (pass.embed)();
        let embeddings_train = embeddings.is_tracked();
        let device = embeddings.device();
        let [b, t, _] = embeddings.dims();
        // The micro-batch's draw (its seed is set by the trainer) seeds each layer's dropout.
        let draw = Tensor::<1>::random([1], Distribution::Uniform(0.0, 1.0), &device).into_scalar::<f32>() as f64;
        let seed = (draw * (1u64 << 52) as f64) as u64;
        let seed_layer = |i: usize| device.seed(seed.wrapping_add(i as u64));

        // The first pass records nothing: the model, deltas and input without autodiff.
        let plain = self.valid();
        let frozen = (pass.deltas)().without_autodiff();
        let prefix = frozen.prefix_len();
        let mask = pass.attention_mask.clone().map(Tensor::inner);
        let kinds = plain.positions(b, t, prefix, prefix, mask, &device.clone().inner());
        let ctx = plain.context(&frozen);
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = embeddings.inner();
        for (i, layer) in plain.layers.iter().enumerate() {
            seed_layer(i);
            inputs.push(x.clone());
            x = layer.forward(x, &ctx, plain.positions_of(&kinds, i), None);
        }
        drop((plain, frozen));

        // The head's graph: the final norm and the loss.
        let leaf = Tensor::from_inner(x.clone()).require_grad();
        let loss = (pass.loss)(self.norm.forward(leaf.clone()));
        let mut grads = loss.clone().mul_scalar(pass.scale).backward();
        let mut seed_grad = leaf.grad_remove(&mut grads).expect("the loss depends on the hidden states");
        collect(grads);

        // Each layer's graph, last first; `x` is the output its first pass gave. The positions
        // again on the autodiff device, as the fused kernels take all their inputs on one.
        let kinds = self.positions(b, t, prefix, prefix, pass.attention_mask, &device);
        for (i, layer) in self.layers.iter().enumerate().rev() {
            seed_layer(i);
            let deltas = (pass.deltas)();
            let leaf = Tensor::from_inner(inputs.pop().expect("one input per layer")).require_grad();
            let out = layer.forward(leaf.clone(), &self.context(&deltas), self.positions_of(&kinds, i), None);
            if cfg!(debug_assertions) {
                check_recomputed(&out, &x, i);
            }
            let mut grads = (out * Tensor::from_inner(seed_grad)).sum().backward();
            seed_grad = leaf.grad_remove(&mut grads).expect("a layer's output depends on its input");
            x = leaf.inner();
            collect(grads);
        }

        // The embeddings' graph, where the table trains (full fine-tuning).
        if embeddings_train {
            collect(((pass.embed)() * Tensor::from_inner(seed_grad)).sum().backward());
        }
        loss.detach()
    }
}

/// Debug builds: the recomputed output of layer `i` is the one its first pass gave (a dropout
/// mask drawn differently, or a layer reading state that changed, would break the gradients).
fn check_recomputed(out: &Tensor<3>, first: &Tensor<3>, i: usize) {
    let diff = (out.clone().inner() - first.clone()).abs().max().into_scalar::<f32>() as f64;
    let scale = (first.clone().abs().max().into_scalar::<f32>() as f64).max(1.0);
    assert!(diff <= 1e-4 * scale, "layer {i}: the recomputed output differs from the first pass by {diff}");
}
