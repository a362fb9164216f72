//! A decoder's training pass with activation checkpointing (`--checkpoint-activations`), as
//! [`crate::models::recompute`] runs it: the decoder layers are the stack, the final norm
//! leads the task's loss.

use burn::prelude::*;
use burn::tensor::Gradients;

use super::Llama;
use crate::adapters::Deltas;
use crate::models::recompute::{LayerPasses, checkpointed_backward};

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
    /// The loss of `pass` (detached), its gradients handed to `collect` one graph at a time:
    /// their sum is the gradient of a pass without checkpointing.
    pub fn checkpointed_backward(&self, pass: CheckpointedPass<'_>, collect: impl FnMut(Gradients)) -> Tensor<1> {
        let embeddings = (pass.embed)();
        let [b, t, _] = embeddings.dims();
        let device = embeddings.device();
        let plain = self.valid();
        let frozen = (pass.deltas)().without_autodiff();
        let prefix = frozen.prefix_len();
        let mask = pass.attention_mask.clone().map(Tensor::inner);
        let plain_kinds = plain.positions(b, t, prefix, prefix, mask, &device.clone().inner());
        let plain_ctx = plain.context(&frozen);
        // The positions again on the autodiff device, as the fused kernels take all their inputs on one.
        let kinds = self.positions(b, t, prefix, prefix, pass.attention_mask, &device);
        let passes = LayerPasses {
            embeddings,
            embed_again: pass.embed,
            layers: self.layers.len(),
            plain_layer: &|i, x| plain.layers[i].forward(x, &plain_ctx, plain.positions_of(&plain_kinds, i), None),
            tracked_layer: &|i, x| {
                let deltas = (pass.deltas)();
                self.layers[i].forward(x, &self.context(&deltas), self.positions_of(&kinds, i), None)
            },
            loss: &|hidden| (pass.loss)(self.norm.forward(hidden)),
            scale: pass.scale,
        };
        checkpointed_backward(passes, collect)
    }
}
