//! The base weight of a linear: f32 (trainable in full fine-tuning), or block-quantized or
//! 16-bit as a GGUF file stores it or `--quantize` asks (always frozen), which adapters then
//! train on as QLoRA does.

use std::sync::{Arc, OnceLock};

use burn::module::{Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::{DType, TensorCreationOptions, TensorData};

use crate::kernels;
#[cfg(doc)]
use crate::quantization::words::PackedWords;
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

/// Quantized blocks held in host memory, as a module with no parameters to train: burn's
/// visitors and optimizers pass it by, and moving it to a device only records the device on
/// which [`BaseWeight::dense`] builds its f32 copy.
///
/// Off the fused CPU path (a GPU backend), a product needs the weight on the device. At its
/// first product the matrix goes there as held: a 16-bit matrix in its own dtype (widened to
/// f32 once where the backend lacks it), the other formats as codes packed into 32-bit words
/// with their scales ([`PackedWords`]). Each product widens that copy to f32 on the device, to
/// the values the host computes, so the base takes 2 bytes a weight (16-bit) or 5 to 10 bits
/// (blocks) of device memory instead of f32's 4 bytes.
#[derive(Clone, Debug)]
pub struct FrozenBlocks {
    pub matrix: Arc<QuantizedMatrix>,
    device: Device,
    /// The matrix on `device`'s non-autodiff device, once a product made it.
    resident: Arc<OnceLock<Resident>>,
}

impl FrozenBlocks {
    pub fn new(matrix: QuantizedMatrix, device: &Device) -> Self {
        Self { matrix: Arc::new(matrix), device: device.clone(), resident: Arc::default() }
    }

    /// The device its products run on.
    pub fn device(&self) -> Device {
        self.device.clone()
    }

    /// The f32 `[d_in, d_out]` weight, widened on the host.
    fn widened(&self) -> Tensor<2> {
        let m = &self.matrix;
        Tensor::<2>::from_data(TensorData::new(m.dequantize(), [m.rows, m.cols]), &self.device).transpose()
    }

    /// `x Wᵀ` over the last dimension of `x` (`[.., d_in]` -> `[.., d_out]`).
    pub fn product<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        kernels::quantized::linear(&x, &self.matrix).unwrap_or_else(|| {
            let device = x.device();
            crate::precision::linear(x, self.dense_on(&device), None)
        })
    }

    /// The f32 `[d_in, d_out]` weight on `device` (this weight's device, or its non-autodiff
    /// one), for a product off the fused path: widened from the copy on the device.
    fn dense_on(&self, device: &Device) -> Tensor<2> {
        let plain = self.device.clone().inner();
        let w = self.resident.get_or_init(|| Resident::new(&self.matrix, &plain)).widened(&self.matrix).transpose();
        if *device == plain { w } else { Tensor::from_inner(w) }
    }

    /// The dtype and bytes of the copy on the device, once a product off the fused path has put
    /// it there: the 16-bit values, or the packed codes (`I32`) with their scales.
    pub fn resident(&self) -> Option<(DType, usize)> {
        self.resident.get().map(Resident::dtype_and_bytes)
    }
}

/// A frozen matrix on a device, as [`FrozenBlocks`] holds it there.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per matrix, made once, behind an `Arc`
enum Resident {
    /// F16 or BF16 values, `[d_out, d_in]` (f32 on a backend without the dtype).
    Floats(Tensor<2>),
    /// Codes packed into words, `[d_out, d_in * bits / 32]`, and their groups' scales and
    /// offsets, `[d_out, d_in / group]`.
    Words { words: Tensor<2, Int>, scales: Tensor<2>, offsets: Option<Tensor<2>>, bits: u32, centre: i32, group: usize },
}

impl Resident {
    fn new(m: &QuantizedMatrix, device: &Device) -> Self {
        let Some(p) = m.packed_words() else {
            let dtype = if m.format == BlockFormat::F16 { DType::F16 } else { DType::BF16 };
            // A backend without the dtype (wgpu's WGSL has no bf16) holds the widened values.
            if !device.supports_dtype(dtype) {
                return Resident::Floats(Tensor::from_data(TensorData::new(m.dequantize(), [m.rows, m.cols]), device));
            }
            let data = TensorData::from_bytes_vec(m.codes().to_vec(), [m.rows, m.cols], dtype);
            return Resident::Floats(Tensor::from_data(data, TensorCreationOptions::new(device.clone()).with_dtype(dtype)));
        };
        let groups = [m.rows, m.cols / p.group];
        let floats = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, groups), device);
        let shape = [m.rows, m.cols / p.per_word()];
        let words = TensorData::new(p.words, shape);
        Resident::Words {
            words: Tensor::from_data(words, TensorCreationOptions::new(device.clone()).with_dtype(DType::I32)),
            scales: floats(p.scales),
            offsets: p.offsets.map(floats),
            bits: p.bits,
            centre: p.centre,
            group: p.group,
        }
    }

    /// The f32 `[d_out, d_in]` matrix: exactly the host's values (f16 and bf16 values are f32
    /// values; codes are unpacked and scaled as `Block::widen` does).
    fn widened(&self, m: &QuantizedMatrix) -> Tensor<2> {
        match self {
            Resident::Floats(values) => values.clone().cast(DType::F32),
            Resident::Words { words, scales, offsets, bits, centre, group } => {
                let mask = (1i32 << bits) - 1;
                let codes: Vec<Tensor<2, Int>> =
                    (0..32 / bits).map(|k| words.clone().bitwise_right_shift_scalar((bits * k) as i32).bitwise_and_scalar(mask)).collect();
                let codes = Tensor::stack::<3>(codes, 2).reshape([m.rows, m.cols / group, *group]);
                let mut values = (codes - *centre).float() * scales.clone().unsqueeze_dim::<3>(2);
                if let Some(offsets) = offsets {
                    values = values + offsets.clone().unsqueeze_dim::<3>(2);
                }
                values.reshape([m.rows, m.cols])
            }
        }
    }

    fn dtype_and_bytes(&self) -> (DType, usize) {
        let bytes = |dtype: DType, n: usize| dtype.size() * n;
        match self {
            Resident::Floats(values) => (values.dtype(), bytes(values.dtype(), values.shape().num_elements())),
            Resident::Words { words, scales, offsets, .. } => {
                let floats = scales.shape().num_elements() * if offsets.is_some() { 2 } else { 1 };
                (words.dtype(), bytes(words.dtype(), words.shape().num_elements()) + bytes(scales.dtype(), floats))
            }
        }
    }
}

impl Module for FrozenBlocks {
    fn visit<V: ModuleVisitor>(&self, _: &mut V) {}

    fn map<M: ModuleMapper>(self, _: &mut M) -> Self {
        self
    }

    fn to_device(self, device: &Device) -> Self {
        Self { device: device.clone(), resident: Arc::default(), ..self }
    }

    fn fork(self, device: &Device) -> Self {
        self.to_device(device)
    }

    fn collect_devices(&self, devices: Devices) -> Devices {
        devices
    }

    fn materialize(self) -> Self {
        self
    }

    fn valid(&self) -> Self {
        Self { device: self.device.clone().inner(), ..self.clone() }
    }

    fn train(self) -> Self {
        self
    }

    /// The weights it stands for, so that trainable shares count a quantized base in full.
    fn num_params(&self) -> usize {
        self.matrix.rows * self.matrix.cols
    }
}

impl ModuleDisplayDefault for FrozenBlocks {
    fn content(&self, content: Content) -> Option<Content> {
        content.add_single(&format!("{:?}", self.matrix)).optional()
    }
}

impl ModuleDisplay for FrozenBlocks {}
