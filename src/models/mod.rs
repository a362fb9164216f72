//! Model architectures, one self-contained file each (candle-transformers style).

pub mod bert;
pub mod causal_lm;
pub mod llama;
pub mod classifier;
pub mod hf_layout;

use burn::prelude::*;

/// A tokenized, padded batch for an encoder: `[batch, seq]` each.
#[derive(Clone, Debug)]
pub struct EncoderInput {
    pub input_ids: Tensor<2, Int>,
    pub token_type_ids: Tensor<2, Int>,
    /// 1.0 for real tokens, 0.0 for padding.
    pub attention_mask: Tensor<2>,
}
