//! The pixel statistics a vision family's image processor normalizes with, and the exact map to
//! them from replora's image batches, which are normalized with ImageNet's (DINOv2's).

use std::path::Path;

use burn::prelude::*;

use super::vit_config::Variant;
use crate::data::images::{IMAGENET_MEAN, IMAGENET_STD};
use crate::error::{Error, Result};

/// The processor's file beside a Hugging Face vision model.
const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// Per-channel (RGB) mean and standard deviation, applied after scaling to [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelStatistics {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl PixelStatistics {
    pub const IMAGENET: Self = Self { mean: IMAGENET_MEAN, std: IMAGENET_STD };
    /// transformers' `ViTImageProcessor` default (`IMAGENET_STANDARD_MEAN` / `_STD`).
    pub const HALF: Self = Self { mean: [0.5; 3], std: [0.5; 3] };
    /// transformers' `CLIPImageProcessor` default (`OPENAI_CLIP_MEAN` / `_STD`).
    pub const CLIP: Self = Self { mean: [0.481_454_66, 0.457_827_5, 0.408_210_73], std: [0.268_629_54, 0.261_302_6, 0.275_777_1] };

    /// The family's default, as its transformers image processor has it.
    pub fn of(variant: Variant) -> Self {
        match variant {
            Variant::Dinov2 => Self::IMAGENET,
            Variant::Vit => Self::HALF,
            Variant::Clip => Self::CLIP,
        }
    }

    /// `image_mean` and `image_std` of the `preprocessor_config.json` in `dir`, if it has one.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(PREPROCESSOR_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let json: serde_json::Value = crate::files::read_json(&path)?;
        let channels = |key: &str| -> Result<Option<[f32; 3]>> {
            let Some(value) = json.get(key) else { return Ok(None) };
            let values: Vec<f64> = serde_json::from_value(value.clone())
                .map_err(|_| Error::format(&path, format!("{key} is not a list of numbers: {value}")))?;
            match values[..] {
                [r, g, b] if values.iter().all(|v| v.is_finite()) && (key != "image_std" || values.iter().all(|&v| v > 0.0)) => {
                    Ok(Some([r as f32, g as f32, b as f32]))
                }
                _ => Err(Error::format(&path, format!("{key} must hold 3 finite numbers (standard deviations above 0): {value}"))),
            }
        };
        match (channels("image_mean")?, channels("image_std")?) {
            (Some(mean), Some(std)) => Ok(Some(Self { mean, std })),
            _ => Ok(None),
        }
    }

    /// Writes the `preprocessor_config.json` that prepares images as replora does, into `dir`:
    /// the shorter side resized to `size` (bilinear), the centre `size` x `size` crop, values
    /// scaled to [0, 1] and normalized with these statistics. So transformers'
    /// `AutoImageProcessor.from_pretrained(dir)` feeds a merged model what it was trained on.
    pub fn write_processor(&self, dir: &Path, variant: Variant, size: usize) -> Result<()> {
        let processor = match variant {
            Variant::Clip => "CLIPImageProcessor",
            Variant::Dinov2 | Variant::Vit => "BitImageProcessor",
        };
        let config = serde_json::json!({
            "image_processor_type": processor,
            "do_convert_rgb": true,
            "do_resize": true,
            "size": {"shortest_edge": size},
            "resample": 2,
            "do_center_crop": true,
            "crop_size": {"height": size, "width": size},
            "do_rescale": true,
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": self.mean,
            "image_std": self.std,
        });
        crate::files::write_json(&dir.join(PREPROCESSOR_FILE), &config)
    }

    /// `pixels` (`[batch, 3, h, w]`, normalized with ImageNet's statistics) normalized with these
    /// instead: a per-channel affine map, exact, and nothing for ImageNet's own.
    pub fn from_imagenet(&self, pixels: Tensor<4>) -> Tensor<4> {
        if *self == Self::IMAGENET {
            return pixels;
        }
        let device = pixels.device();
        let scale: [f32; 3] = std::array::from_fn(|c| IMAGENET_STD[c] / self.std[c]);
        let shift: [f32; 3] = std::array::from_fn(|c| (IMAGENET_MEAN[c] - self.mean[c]) / self.std[c]);
        let per_channel = |v: [f32; 3]| Tensor::<1>::from_floats(v, &device).reshape([1, 3, 1, 1]);
        pixels * per_channel(scale) + per_channel(shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_pixels_become_the_familys() {
        let device = Device::flex();
        // One pixel per channel value: raw 0.2, 0.6, 0.9 (in [0, 1]).
        let raw = [0.2f32, 0.6, 0.9];
        let imagenet: Vec<f32> = (0..3).map(|c| (raw[c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c]).collect();
        let pixels = Tensor::<1>::from_floats(imagenet.as_slice(), &device).reshape([1, 3, 1, 1]);
        for stats in [PixelStatistics::HALF, PixelStatistics::CLIP, PixelStatistics::IMAGENET] {
            let got: Vec<f32> = stats.from_imagenet(pixels.clone()).into_data().try_into_vec_as().unwrap();
            for c in 0..3 {
                let want = (raw[c] - stats.mean[c]) / stats.std[c];
                assert!((got[c] - want).abs() < 1e-6, "{stats:?} channel {c}: {} vs {want}", got[c]);
            }
        }
    }

    #[test]
    fn a_preprocessor_config_is_read_and_a_bad_one_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(PixelStatistics::read(dir.path()).unwrap(), None);
        let file = dir.path().join(PREPROCESSOR_FILE);
        std::fs::write(&file, r#"{"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.5]}"#).unwrap();
        let read = PixelStatistics::read(dir.path()).unwrap().unwrap();
        assert_eq!(read, PixelStatistics { mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.5] });
        std::fs::write(&file, r#"{"image_mean": [0.5, 0.4], "image_std": [0.2, 0.25, 0.5]}"#).unwrap();
        let e = PixelStatistics::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("image_mean must hold 3") && e.contains(PREPROCESSOR_FILE), "{e}");
        std::fs::write(&file, r#"{"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.0, 0.5]}"#).unwrap();
        assert!(PixelStatistics::read(dir.path()).unwrap_err().to_string().contains("image_std"));
    }
}
