//! A frozen base matrix kept in blocks or 16 bits, as its file or `--quantize` holds it
//! ([`FrozenBlocks`]), and its products: the fused CPU kernels read it in place; another device
//! gets a copy once, which each product widens, and backward widens again rather than keeping
//! the f32 matrix.

use std::sync::{Arc, OnceLock};

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::{Backend, DispatchKindConversion, Flex};
use burn::module::{Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor};
use burn::prelude::*;
use burn::tensor::{DType, DispatchTensor, TensorCreationOptions, TensorData};

#[cfg(doc)]
use super::BaseWeight;
use crate::kernels;
#[cfg(doc)]
use crate::quantization::words::PackedWords;
use crate::quantization::{BlockFormat, QuantizedMatrix};

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

    /// The f32 `[d_in, d_out]` weight (for merging, exporting and DoRA's norms): widened on the
    /// host where the fused CPU kernels read the blocks, elsewhere from the copy on the device, so
    /// that a GPU step does not upload the widened matrix from the host.
    pub(super) fn widened(&self) -> Tensor<2> {
        if self.device.clone().inner() != Device::flex() || !kernels::fused_allowed() {
            return self.dense_on(&self.device);
        }
        let m = &self.matrix;
        Tensor::<2>::from_data(TensorData::new(m.dequantize(), [m.rows, m.cols]), &self.device).transpose()
    }

    /// `x Wᵀ` over the last dimension of `x` (`[.., d_in]` -> `[.., d_out]`).
    pub fn product<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if let Some(y) = kernels::quantized::linear(&x, &self.matrix) {
            return y;
        }
        if let Some(y) = rewidened_product(&x, self) {
            return y;
        }
        let w = self.dense_on(&x.device());
        crate::precision::linear(x, w, None)
    }

    /// The f32 `[d_in, d_out]` weight widened from the copy on the device, on `device` (this
    /// weight's device or its non-autodiff one).
    fn dense_on(&self, device: &Device) -> Tensor<2> {
        let w = self.widened_on_device().transpose();
        if *device == self.device.clone().inner() { w } else { Tensor::from_inner(w) }
    }

    /// The f32 `[d_out, d_in]` weight on this weight's non-autodiff device, widened from the
    /// copy there (made at the first call).
    fn widened_on_device(&self) -> Tensor<2> {
        let plain = self.device.clone().inner();
        self.resident.get_or_init(|| Resident::new(&self.matrix, &plain)).widened(&self.matrix)
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

/// `x Wᵀ` for an `x` on an autodiff device, recorded as one op whose backward widens `W` from
/// the device copy again (`dx = dy W`). Built from burn's ops, the product would keep the widened
/// f32 matrix alive until backward: 4 bytes a weight for every layer a training step runs
/// through, which is what holding the base packed is meant to save. `None` for a backend it does
/// not know.
fn rewidened_product<const D: usize>(x: &Tensor<D>, blocks: &FrozenBlocks) -> Option<Tensor<D>> {
    fn on<const D: usize, B: Backend, C: CheckpointStrategy>(x: &Tensor<D>, blocks: &FrozenBlocks) -> Option<Tensor<D>>
    where
        DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B, C>>,
    {
        let (x, node) = x.clone().try_into_primitive::<Autodiff<B, C>>().ok()?.into_parts();
        let x = Tensor::<D>::from_primitive::<B>(x);
        let y = crate::precision::linear(x, blocks.widened_on_device().transpose(), None);
        let y = y.try_into_primitive::<B>().expect("a product stays on its input's backend");
        let y = RewidenedProduct::<D>(blocks.clone()).prepare::<C>([node]).compute_bound().stateless(y);
        Some(Tensor::from_primitive::<Autodiff<B, C>>(y))
    }
    let on_flex = || on::<D, Flex, NoCheckpointing>(x, blocks).or_else(|| on::<D, Flex, BalancedCheckpointing>(x, blocks));
    #[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
    let on_gpu = || {
        use burn::backend::Cube;
        on::<D, Cube, NoCheckpointing>(x, blocks).or_else(|| on::<D, Cube, BalancedCheckpointing>(x, blocks))
    };
    #[cfg(not(any(feature = "wgpu", feature = "cuda", feature = "rocm")))]
    let on_gpu = || None;
    on_flex().or_else(on_gpu)
}

#[derive(Clone, Debug)]
struct RewidenedProduct<const D: usize>(FrozenBlocks);

impl<B: Backend, const D: usize> Backward<B, 1> for RewidenedProduct<D>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    type State = ();

    fn backward(self, ops: Ops<(), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<B, _>(ops.parents, ops.node, grads, |dy| {
            let dy = Tensor::<D>::from_primitive::<B>(dy);
            let dx = crate::precision::linear(dy, self.0.widened_on_device(), None);
            dx.try_into_primitive::<B>().expect("a gradient stays on its backend")
        });
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
