//! The vision side of a vision-language model, in VL-BART's pattern: a frozen pre-trained ViT
//! whose features are computed once per image ([`ImageFeatures`]), pooled into a few visual
//! tokens, and a trainable [`Projector`] that maps them into a decoder's embedding space, where
//! they are prepended to the text's token embeddings
//! ([`Llama::forward_embeddings`](super::llama::Llama::forward_embeddings)).
//!
//! Visual tokens of one image: the ViT's CLS token, then its patch tokens average-pooled onto a
//! `grid` x `grid` grid (as PyTorch's `adaptive_avg_pool2d`), row by row: `1 + grid^2` vectors
//! of the ViT's width.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use image::RgbImage;

use super::dinov2::Dinov2;
use crate::adapters::init::Init;
use crate::adapters::{AdaptedLinear, Deltas};
use crate::data::images::ImageSet;
use crate::error::{Error, Result};
use crate::kernels;
use crate::weights::{HostTensor, tensors};

/// The projector's module path and tensor-name prefix (`projector.0.weight`, ...).
pub const PROJECTOR: &str = "projector";

/// Visual tokens of a set of images, computed once: `[images, tokens, width]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageFeatures {
    pub tokens: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl ImageFeatures {
    pub fn len(&self) -> usize {
        self.values.len() / (self.tokens * self.width).max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Image `i`'s visual tokens, `tokens * width` values.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.tokens * self.width;
        &self.values[i * n..(i + 1) * n]
    }

    /// The visual tokens of `images` (indices) as one `[batch, tokens, width]` tensor.
    pub fn batch(&self, images: &[usize], device: &Device) -> Tensor<3> {
        let values: Vec<f32> = images.iter().flat_map(|&i| self.image(i).iter().copied()).collect();
        Tensor::from_data(TensorData::new(values, [images.len(), self.tokens, self.width]), device)
    }

    /// The root mean square of every value (the projector's initialization reads it).
    pub fn rms(&self) -> f64 {
        let sum: f64 = self.values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        (sum / self.values.len().max(1) as f64).sqrt()
    }
}

/// Visual tokens per image for a pooling `grid`.
pub fn visual_tokens(grid: usize) -> usize {
    1 + grid * grid
}

/// Checks that `grid` fits `vit`'s patch grid (at most one pooled token per patch).
pub fn check_grid(vit: &Dinov2, grid: usize) -> Result<()> {
    let patches = vit.config.image_size / vit.config.patch_size;
    if grid == 0 || grid > patches {
        return Err(Error::Config(format!(
            "--visual-grid {grid} does not fit the ViT's {patches} x {patches} patches at {} px: give 1 to {patches}",
            vit.config.image_size
        )));
    }
    Ok(())
}

/// The frozen ViT's visual tokens of `images` (each `vit`'s image size), computed in batches of
/// `batch_size` without gradients on `device`'s inner (non-autodiff) backend.
pub fn image_features(vit: &Dinov2, images: &[RgbImage], grid: usize, batch_size: usize, device: &Device) -> ImageFeatures {
    let size = vit.config.image_size as u32;
    let (n, width) = (vit.config.image_size / vit.config.patch_size, vit.config.hidden_size);
    let tokens = visual_tokens(grid);
    let mut values = Vec::with_capacity(images.len() * tokens * width);
    let deltas = Deltas::none();
    for chunk in images.chunks(batch_size.max(1)) {
        let set = ImageSet { labels: vec![], size, images: chunk.to_vec(), targets: vec![0; chunk.len()] };
        let indices: Vec<usize> = (0..chunk.len()).collect();
        let pixels = set.batch(&indices, 0, None).to_tensor(device);
        let hidden = vit.forward(vit.pixels.from_imagenet(pixels), &deltas);
        let hidden: Vec<f32> = hidden.into_data().try_into_vec_as().expect("float tensor");
        for image in hidden.chunks(width * (1 + n * n)) {
            values.extend_from_slice(&image[..width]);
            pool_patches(&image[width..], n, grid, width, &mut values);
        }
    }
    ImageFeatures { tokens, width, values }
}

/// Averages an `n` x `n` grid of patch vectors onto `grid` x `grid` cells (cell `i` spans rows
/// `floor(i n / grid)` to `ceil((i + 1) n / grid)`, as `adaptive_avg_pool2d`), appending each.
fn pool_patches(patches: &[f32], n: usize, grid: usize, width: usize, out: &mut Vec<f32>) {
    let span = |i: usize| (i * n / grid, ((i + 1) * n).div_ceil(grid));
    for gy in 0..grid {
        for gx in 0..grid {
            let ((y0, y1), (x0, x1)) = (span(gy), span(gx));
            let mut cell = vec![0f32; width];
            for y in y0..y1 {
                for x in x0..x1 {
                    let p = &patches[(y * n + x) * width..(y * n + x + 1) * width];
                    cell.iter_mut().zip(p).for_each(|(c, v)| *c += v);
                }
            }
            let count = ((y1 - y0) * (x1 - x0)) as f32;
            out.extend(cell.into_iter().map(|c| c / count));
        }
    }
}

crate::choice_enum! {
    /// The projector from the ViT's width to the decoder's.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum ProjectorKind: "projector" {
        /// One linear map (with bias).
        Linear => "linear",
        /// Two linear maps with a GELU between them, the hidden layer the decoder's width
        /// (LLaVA-1.5's projector).
        Mlp => "mlp",
    }
}

/// A trainable map from visual tokens to decoder embeddings: `projector.0` (and, for
/// [`ProjectorKind::Mlp`], GELU then `projector.1`).
#[derive(Module, Debug)]
pub struct Projector {
    pub layers: Vec<AdaptedLinear>,
}

impl Projector {
    /// A fresh projector from `d_in` to `d_out`. Its outputs start at about `target_rms` per
    /// value (the decoder's embedding scale) for inputs of about `input_rms`: Gaussian weights
    /// of that scale, zero biases, drawn from `seed`.
    pub fn new(kind: ProjectorKind, d_in: usize, d_out: usize, input_rms: f64, target_rms: f64, seed: u64, device: &Device) -> Self {
        let mut init = Init::new(seed, device);
        let mut layer = |i: usize, d_in: usize, d_out: usize, std: f64| {
            let w: Tensor<2> = init.normal([d_in, d_out], std).val().detach();
            AdaptedLinear::new(format!("{PROJECTOR}.{i}"), w, Some(Tensor::zeros([d_out], device)))
        };
        let input_rms = input_rms.max(1e-6);
        let layers = match kind {
            ProjectorKind::Linear => vec![layer(0, d_in, d_out, target_rms / (input_rms * (d_in as f64).sqrt()))],
            ProjectorKind::Mlp => vec![
                layer(0, d_in, d_out, 1.0 / (input_rms * (d_in as f64).sqrt())),
                layer(1, d_out, d_out, target_rms / (0.5 * (d_out as f64).sqrt())),
            ],
        };
        Self { layers }
    }

    pub fn kind(&self) -> ProjectorKind {
        if self.layers.len() == 1 { ProjectorKind::Linear } else { ProjectorKind::Mlp }
    }

    /// `[.., d_in]` visual tokens to `[.., d_out]` embeddings.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let last = self.layers.len() - 1;
        self.layers.iter().enumerate().fold(x, |x, (i, layer)| {
            let y = layer.forward(x, &Deltas::none());
            if i < last { kernels::gelu(y) } else { y }
        })
    }

    /// Every weight under its name, linears in PyTorch's `[out, in]` layout.
    pub fn tensors(&self) -> BTreeMap<String, HostTensor> {
        let mut out = BTreeMap::new();
        self.layers.iter().for_each(|l| l.put(&mut out));
        out
    }

    pub fn save(&self, file: &Path) -> Result<()> {
        let kind = self.kind().to_string();
        let metadata = std::collections::HashMap::from([("projector".to_string(), kind)]);
        tensors::write(file, &self.tensors(), Some(metadata))
    }

    /// This projector's shape with the weights saved in `file`, trainable as `self` is.
    pub fn load(&self, file: &Path) -> Result<Self> {
        let (mut t, _) = tensors::read(file)?;
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let (d_in, d_out) = (l.d_in(), l.d_out());
                let w = tensors::take(&mut t, file, &format!("{}.weight", l.path), &[d_out, d_in])?.transpose();
                let b = tensors::take(&mut t, file, &format!("{}.bias", l.path), &[d_out])?;
                let device = l.weight.device();
                let read = AdaptedLinear::new(l.path.clone(), w.to_tensor(&device), Some(b.to_tensor(&device)));
                Ok(if l.weight.is_require_grad() { read } else { read.no_grad() })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(extra) = t.keys().next() {
            return Err(Error::format(file, format!("unexpected tensor {extra}: not a {} projector", self.kind())));
        }
        Ok(Self { layers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_averages_each_cell_of_the_patch_grid() {
        // A 3 x 3 grid of one-wide patches valued 0..9, pooled onto 2 x 2 (overlapping cells).
        let patches: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut out = vec![];
        pool_patches(&patches, 3, 2, 1, &mut out);
        // Cells span rows/columns 0..2 and 1..3.
        assert_eq!(out, [(0. + 1. + 3. + 4.) / 4., (1. + 2. + 4. + 5.) / 4., (3. + 4. + 6. + 7.) / 4., (4. + 5. + 7. + 8.) / 4.]);
        let mut one = vec![];
        pool_patches(&patches, 3, 1, 1, &mut one);
        assert_eq!(one, [4.0]);
    }
}
