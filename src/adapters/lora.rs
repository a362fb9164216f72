//! LoRA's trainable factors for one linear.

use burn::module::Param;
use burn::prelude::*;

use super::config::LoraInit;
use super::init::Init;

/// `A` (`[d_in, r]`) and `B` (`[r, d_out]`), burn's layout of PEFT's `lora_A`/`lora_B`.
#[derive(Module, Debug)]
pub struct LoraFactors {
    pub a: Param<Tensor<2>>,
    pub b: Param<Tensor<2>>,
}

impl LoraFactors {
    /// `A` as configured, `B = 0`: the adapted layer starts equal to the base layer.
    pub fn init(d_in: usize, d_out: usize, rank: usize, kind: LoraInit, init: &mut Init) -> Self {
        let a = match kind {
            LoraInit::Kaiming => init.kaiming([d_in, rank], d_in),
            LoraInit::Gaussian => init.normal([d_in, rank], 1.0 / rank as f64),
        };
        Self { a, b: init.constant([rank, d_out], 0.0) }
    }
}
