//! The base weight of a linear: f32 (trainable in full fine-tuning), or block-quantized or
//! 16-bit as a GGUF file stores it or `--quantize` asks (always frozen), which adapters then
//! train on as QLoRA does.

use burn::module::Param;
use burn::prelude::*;

use super::FrozenBlocks;
use crate::kernels;
use crate::quantization::{BlockFormat, QuantizedMatrix};

crate::choice_enum! {
    /// How a model's frozen base weights are held (`--quantize`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Quantize: "quantization" {
        /// As the file stores them: GGUF blocks and 16-bit matrices stay so, other weights are f32.
        Stored => "stored",
        /// Every weight widened to f32.
        None => "none",
        /// llama.cpp's Q8_0: 8-bit codes in blocks of 32, a scale per block.
        Q8_0 => "q8_0",
        /// llama.cpp's Q4_0: 4-bit codes in blocks of 32, a scale per block.
        Q4_0 => "q4_0",
        /// llama.cpp's Q4_1: 4-bit codes in blocks of 32, a scale and minimum per block.
        Q4_1 => "q4_1",
        /// bfloat16, 16 bits a weight (f32's range, 8 bits of mantissa); products sum in f32.
        Bf16 => "bf16",
        /// IEEE half precision, 16 bits a weight (11 bits of mantissa, values up to 65504).
        F16 => "f16",
    }
}

// Not derived: `choice_enum!` takes only doc comments on variants, not `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for Quantize {
    fn default() -> Self {
        Quantize::Stored
    }
}

impl Quantize {
    /// Whether weights stay as the file stores them (the default).
    pub fn is_stored(&self) -> bool {
        *self == Quantize::Stored
    }

    /// What [`BaseWeight::converted`] is asked for: `None` leaves weights as stored,
    /// `Some(None)` widens them to f32, `Some(Some(f))` puts them in blocks of `f`.
    pub fn target(self) -> Option<Option<BlockFormat>> {
        match self {
            Quantize::Stored => None,
            Quantize::None => Some(None),
            Quantize::Q8_0 => Some(Some(BlockFormat::Q8_0)),
            Quantize::Q4_0 => Some(Some(BlockFormat::Q4_0)),
            Quantize::Q4_1 => Some(Some(BlockFormat::Q4_1)),
            Quantize::Bf16 => Some(Some(BlockFormat::Bf16)),
            Quantize::F16 => Some(Some(BlockFormat::F16)),
        }
    }

    /// How a safetensors checkpoint's matrices are read for this choice: each linear is
    /// converted as it is read, so an f32 file never exists whole in f32 beside its conversion.
    pub fn matrices(self) -> crate::weights::Matrices {
        use crate::weights::Matrices;
        match self.target() {
            None => Matrices::Stored,
            Some(None) => Matrices::Widened,
            Some(Some(format)) => Matrices::Converted(format),
        }
    }
}

/// A linear's base weight.
#[derive(Module, Debug)]
pub enum BaseWeight {
    /// f32 in burn's `[d_in, d_out]` layout.
    Dense(Param<Tensor<2>>),
    /// Blocks as stored, `[d_out, d_in]`.
    Quantized(FrozenBlocks),
}

impl BaseWeight {
    pub fn d_in(&self) -> usize {
        match self {
            BaseWeight::Dense(w) => w.shape()[0],
            BaseWeight::Quantized(q) => q.matrix.cols,
        }
    }

    pub fn d_out(&self) -> usize {
        match self {
            BaseWeight::Dense(w) => w.shape()[1],
            BaseWeight::Quantized(q) => q.matrix.rows,
        }
    }

    /// The weight as an f32 `[d_in, d_out]` tensor: the parameter itself, or the blocks
    /// widened (a copy made for this call, for merging, exporting and DoRA's norms).
    pub fn dense(&self) -> Tensor<2> {
        match self {
            BaseWeight::Dense(w) => w.val(),
            BaseWeight::Quantized(q) => q.widened(),
        }
    }

    pub fn device(&self) -> Device {
        match self {
            BaseWeight::Dense(w) => w.device(),
            BaseWeight::Quantized(q) => q.device(),
        }
    }

    /// Whether it is trained (a quantized weight never is).
    pub fn is_require_grad(&self) -> bool {
        matches!(self, BaseWeight::Dense(w) if w.is_require_grad())
    }

    /// An f32 weight `w` (`[d_in, d_out]`) in its place, trainable only if this one was: a
    /// merged weight, which is f32 even where the base was quantized (as PEFT merges).
    pub fn replaced(self, w: Tensor<2>) -> Self {
        match self {
            BaseWeight::Dense(old) => BaseWeight::Dense(old.map(|old| w.set_require_grad(old.is_require_grad()))),
            BaseWeight::Quantized(_) => BaseWeight::Dense(Param::from_tensor(w.set_require_grad(false))),
        }
    }

    /// A quantized weight widened to a trainable f32 parameter (a dense one unchanged).
    pub fn widened(self) -> Self {
        match self {
            BaseWeight::Quantized(q) => BaseWeight::Dense(Param::from_tensor(q.widened())),
            dense => dense,
        }
    }

    /// The block format, if quantized.
    pub fn format(&self) -> Option<BlockFormat> {
        match self {
            BaseWeight::Dense(_) => None,
            BaseWeight::Quantized(q) => Some(q.matrix.format),
        }
    }

    /// `x W + b`, over the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, bias: Option<Tensor<1>>) -> Tensor<D> {
        match self {
            BaseWeight::Dense(w) => kernels::linear(x, w.val(), bias),
            BaseWeight::Quantized(q) => {
                let y = q.product(x);
                match bias {
                    Some(b) => y + b.unsqueeze::<D>(),
                    None => y,
                }
            }
        }
    }

    /// The weight stored as `format` (quantized from its f32 values, frozen), or as f32 for
    /// `None`; `what` names it in errors.
    pub fn converted(self, format: Option<BlockFormat>, what: &str) -> crate::Result<Self> {
        match (format, &self) {
            (None, _) => Ok(self.widened()),
            (Some(f), BaseWeight::Quantized(q)) if q.matrix.format == f => Ok(self),
            (Some(f), _) => {
                let device = self.device();
                let (d_in, d_out) = (self.d_in(), self.d_out());
                let values = self.dense().transpose().into_data().try_into_vec_as::<f32>().expect("float tensors convert to f32");
                Ok(BaseWeight::Quantized(FrozenBlocks::new(QuantizedMatrix::quantize(f, d_out, d_in, &values, what)?, &device)))
            }
        }
    }

    /// Bytes a product reads from this weight.
    pub fn stored_bytes(&self) -> usize {
        match self {
            BaseWeight::Dense(w) => w.shape().num_elements() * 4,
            BaseWeight::Quantized(q) => q.matrix.size_bytes(),
        }
    }
}
