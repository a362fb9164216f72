//! Mixed precision (`--precision f32|bf16|f16`): the linears' matrix products run in bf16 or
//! f16 on a GPU, as PyTorch's autocast runs them, while everything else stays f32: norms,
//! softmax, attention, the loss, the trainable parameters, their gradients and AdamW's state.
//! Each product casts its input and weight to the precision, multiplies (on tensor cores where
//! the GPU has them) and casts the result back to f32; the casts' backward passes bring the
//! gradients back to f32.
//!
//! The setting is process-wide, like PyTorch's `torch.set_float32_matmul_precision`: a command
//! sets it once, after [`crate::device::check_precision`] has checked it against its devices, and
//! every linear off the fused CPU kernels reads it. The fused kernels multiply in f32, so the CPU
//! is refused anything else (`--quantize bf16` halves a base's memory there instead).

use std::sync::atomic::{AtomicU8, Ordering};

use burn::prelude::*;
use burn::tensor::DType;

crate::choice_enum! {
    /// The precision of the linears' matrix products (`--precision`).
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
