//! Mixed precision (`--precision f32|bf16|f16`): the linears' matrix products and attention run
//! in bf16 or f16 on a GPU, as PyTorch's autocast runs them (its `scaled_dot_product_attention`
//! included), while everything else stays f32: norms, the activations, the loss, the trainable
//! parameters, their gradients and AdamW's state. Each op casts its inputs to the precision,
//! computes (on tensor cores where the GPU has them) and casts the result back to f32; the casts'
//! backward passes bring the gradients back to f32.
//!
//! The setting is process-wide, like PyTorch's `torch.set_float32_matmul_precision`: a command
//! sets it once, after [`crate::device::check_precision`] has checked it against its devices, and
//! every linear off the fused CPU kernels reads it. The fused kernels multiply in f32, so the CPU
//! is refused anything else (`--quantize bf16` halves a base's memory there instead).

use std::sync::atomic::{AtomicU8, Ordering};

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::ops::AttentionModuleOptions;

crate::choice_enum! {
    /// The precision of the linears' matrix products and attention (`--precision`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Precision: "precision" {
        /// f32 products (the default).
        F32 => "f32",
        /// bfloat16 products with f32 sums (f32's range, 8 bits of mantissa): a GPU's tensor cores.
        Bf16 => "bf16",
        /// IEEE half-precision products (11 bits of mantissa, values up to 65504).
        F16 => "f16",
    }
}

impl Precision {
    /// The dtype the products run in.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}

static PRODUCTS: AtomicU8 = AtomicU8::new(0);

/// Sets the precision of every linear's product in this process from now on.
pub fn set(precision: Precision) {
    PRODUCTS.store(precision as u8, Ordering::Relaxed);
}

/// The precision set, f32 unless [`set`] was called.
pub fn current() -> Precision {
    match PRODUCTS.load(Ordering::Relaxed) {
        1 => Precision::Bf16,
        2 => Precision::F16,
        _ => Precision::F32,
    }
}

/// `x W + b` over the last dimension of `x` (`W` `[d_in, d_out]`) with burn's ops, the product in
/// the [`current`] precision and the result f32.
pub fn linear<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    let dtype = current().dtype();
    if dtype == DType::F32 {
        return burn::tensor::module::linear(x, weight, bias);
    }
    let y = burn::tensor::module::linear(x.cast(dtype), weight.cast(dtype), None).cast(DType::F32);
    match bias {
        Some(b) => y + b.unsqueeze::<D>(),
        None => y,
    }
}

/// burn's attention (`softmax(q kᵀ + bias) v`, scores unscaled: `q` comes scaled) in the
/// [`current`] precision, the result f32. A mask's `f32::MIN` rounds to a 16-bit `-inf`, which
/// burn's softmax takes: a row masked everywhere (a padding position's) gets zero weights instead
/// of NaNs.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
    let options = AttentionModuleOptions { scale: Some(1.0), softcap: None, is_causal: false };
    let dtype = current().dtype();
    if dtype == DType::F32 {
        return burn::tensor::module::attention(q, k, v, None, Some(bias), options);
    }
    let [q, k, v, bias] = [q, k, v, bias].map(|t| t.cast(dtype));
    burn::tensor::module::attention(q, k, v, None, Some(bias), options).cast(DType::F32)
}
