//! Activation checkpointing (`--checkpoint-activations`): a training pass that keeps only each
//! layer's input in the forward pass and runs each layer's forward again in the backward pass,
//! last layer first, to take its gradients. The models (decoders, encoders, ViTs) describe
//! their stack of layers as [`LayerPasses`]; [`checkpointed_backward`] runs it.
//!
//! A training pass otherwise keeps every layer's activations for its backward pass: for
//! SmolLM2-135M about 120 MB per sequence of 128 tokens (30 layers), several times its 4-bit
//! weights. Here the passes are separate graphs, which burn's autodiff allows (a fresh forward
//! may reuse parameter leaves after an earlier backward): one graph-free forward through every
//! layer, then one small graph per layer, in reverse, each differentiated at once with the
//! gradient of its output as the seed, so at most one layer's activations are alive at a time.
//! The cost is one more forward pass per step.
//!
//! Dropout draws its masks from the device's generator, so both passes of a layer seed it
//! alike (per micro-batch and layer): the recomputed layer drops what the first pass dropped.
//! The masks are not those of a pass without checkpointing, which draws them in one sequence.

use burn::prelude::*;
use burn::tensor::{Distribution, Gradients};

/// A model's forward pass as an embedding, a stack of layers that map hidden states to hidden
/// states of the same shape, and a loss of the last layer's output.
pub struct LayerPasses<'a> {
    /// The hidden states before the first layer (tracked where the embeddings train).
    pub embeddings: Tensor<3>,
    /// The same again, for their own graph at the end where they are tracked.
    pub embed_again: &'a dyn Fn() -> Tensor<3>,
    /// How many layers the stack has.
    pub layers: usize,
    /// Layer `i` on its input without autodiff: the model, deltas and input on the inner device.
    pub plain_layer: &'a dyn Fn(usize, Tensor<3>) -> Tensor<3>,
    /// Layer `i` on its (tracked) input, with the adapters' deltas made afresh for its graph.
    pub tracked_layer: &'a dyn Fn(usize, Tensor<3>) -> Tensor<3>,
    /// The loss of the last layer's output: the model's final norm, the task's head and loss.
    pub loss: &'a dyn Fn(Tensor<3>) -> Tensor<1>,
    /// The gradients are those of `scale` times the loss.
    pub scale: f64,
}

/// The loss of `passes` (detached), its gradients handed to `collect` one graph at a time (the
/// head's, each layer's from the last, the embeddings'): their sum is the gradient of a pass
/// without checkpointing.
pub fn checkpointed_backward(passes: LayerPasses<'_>, mut collect: impl FnMut(Gradients)) -> Tensor<1> {
    let embeddings = passes.embeddings;
    let embeddings_train = embeddings.is_tracked();
    let device = embeddings.device();
    // The micro-batch's draw (its seed is set by the trainer) seeds each layer's dropout.
    let draw = Tensor::<1>::random([1], Distribution::Uniform(0.0, 1.0), &device).into_scalar::<f32>() as f64;
    let seed = (draw * (1u64 << 52) as f64) as u64;
    let seed_layer = |i: usize| device.seed(seed.wrapping_add(i as u64));

    // The first pass records nothing.
    let mut inputs = Vec::with_capacity(passes.layers);
    let mut x = embeddings.inner();
    for i in 0..passes.layers {
        seed_layer(i);
        inputs.push(x.clone());
        x = (passes.plain_layer)(i, x);
    }

    // The head's graph.
    let leaf = Tensor::from_inner(x.clone()).require_grad();
    let loss = (passes.loss)(leaf.clone());
    let mut grads = loss.clone().mul_scalar(passes.scale).backward();
    let mut seed_grad = leaf.grad_remove(&mut grads).expect("the loss depends on the hidden states");
    collect(grads);

    // Each layer's graph, last first; `x` is the output its first pass gave.
    for i in (0..passes.layers).rev() {
        seed_layer(i);
        let leaf = Tensor::from_inner(inputs.pop().expect("one input per layer")).require_grad();
        let out = (passes.tracked_layer)(i, leaf.clone());
        if cfg!(debug_assertions) {
            check_recomputed(&out, &x, i);
        }
        let mut grads = (out * Tensor::from_inner(seed_grad)).sum().backward();
        seed_grad = leaf.grad_remove(&mut grads).expect("a layer's output depends on its input");
        x = leaf.inner();
        collect(grads);
    }

    // The embeddings' graph, where they train (full fine-tuning, a video model's time table).
    if embeddings_train {
        collect(((passes.embed_again)() * Tensor::from_inner(seed_grad)).sum().backward());
    }
    loss.detach()
}

/// Debug builds: the recomputed output of layer `i` is the one its first pass gave (a dropout
/// mask drawn differently, or a layer reading state that changed, would break the gradients).
fn check_recomputed(out: &Tensor<3>, first: &Tensor<3>, i: usize) {
    let diff = (out.clone().inner() - first.clone()).abs().max().into_scalar::<f32>() as f64;
    let scale = (first.clone().abs().max().into_scalar::<f32>() as f64).max(1.0);
    assert!(diff <= 1e-4 * scale, "layer {i}: the recomputed output differs from the first pass by {diff}");
}

/// What a model's checkpointed pass takes from its task: `loss` of what the model's forward
/// returns, with the adapters' `deltas`.
pub struct TaskLoss<'a, const D: usize> {
    /// The adapters' deltas, tracked: made afresh for each graph.
    pub deltas: &'a dyn Fn() -> crate::adapters::Deltas,
    /// The loss of the model's output (its forward's, from the same input and deltas).
    pub loss: &'a dyn Fn(Tensor<D>) -> Tensor<1>,
    /// The gradients are those of `scale` times the loss.
    pub scale: f64,
}

/// The loss a checkpointed `pass` of `model` returns, and the sum of the gradients it hands
/// over (one graph at a time) as `model`'s parameters' gradients.
pub fn summed_gradients<M: burn::module::Module>(
    model: &M,
    pass: impl FnOnce(&mut dyn FnMut(Gradients)) -> Tensor<1>,
) -> (Tensor<1>, burn::optim::GradientsParams) {
    let mut sum = burn::optim::GradientsAccumulator::<M>::new();
    let loss = pass(&mut |grads| sum.accumulate(model, burn::optim::GradientsParams::from_grads(grads, model)));
    (loss, sum.grads())
}
