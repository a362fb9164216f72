//! Decoding one image (PNG or JPEG) and fitting it to the model's square input.
//!
//! The fit is torchvision's `Resize(size)` + `CenterCrop(size)`: the shorter side is resized to
//! `size` (the longer to `floor(long * size / short)`), then the centre `size` x `size` square is
//! cut out (offset `(long' - size) / 2`, rounded down). The resize filter is the `image` crate's
//! `FilterType::Triangle`: a separable bilinear (triangle) filter whose support is scaled by the
//! reduction factor when downscaling, i.e. the same filter as Pillow's
//! `Image.resize(..., Image.BILINEAR)` (antialiased; `reducing_gap=None`), which the tests
//! check within one intensity level.

use std::io::Cursor;
use std::path::Path;

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageReader, RgbImage};

use crate::{Error, Result};

/// Decodes one image file (PNG or JPEG) into the model's input: 8-bit RGB, `size` x `size`. The
/// shorter side is resized to `size` with a bilinear (triangle) filter, antialiased when
/// downscaling as Pillow's `Image.BILINEAR`, and the centre square is cut out.
pub fn load_image(path: &Path, size: u32) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let image = decode(&bytes).map_err(|m| Error::data(path, None, m))?;
    Ok(fit(image, size))
}

/// Decodes PNG or JPEG bytes (the format is told by their first bytes, not by a file name).
/// Any pixel mode the decoders produce (grey, grey + alpha, RGBA, 16-bit, CMYK JPEG) is
/// accepted; [`fit`] converts it to 8-bit RGB. The error is a message without the source's name.
pub(super) fn decode(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| format!("cannot read the image: {e}"))?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        Some(other) => return Err(format!("unsupported image format {other:?}: PNG and JPEG are supported")),
        None => return Err("not a PNG or JPEG image (unrecognized file header)".into()),
    }
    let format = reader.format().map(|f| format!("{f:?}").to_uppercase()).unwrap_or_default();
    reader.decode().map_err(|e| format!("cannot decode the {format} image (truncated or corrupt?): {e}"))
}

/// Converts to 8-bit RGB (alpha is dropped, 16-bit is scaled to 8 bits), resizes the shorter
/// side to `size` and crops the centre square.
pub fn fit(image: DynamicImage, size: u32) -> RgbImage {
    let rgb = match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    };
    let (w, h) = rgb.dimensions();
    if (w, h) == (size, size) {
        return rgb;
    }
    let (nw, nh) = fitted_dims(w, h, size);
    let resized = imageops::resize(&rgb, nw, nh, FilterType::Triangle);
    if (nw, nh) == (size, size) {
        return resized;
    }
    imageops::crop_imm(&resized, (nw - size) / 2, (nh - size) / 2, size, size).to_image()
}

/// The size an image of `w` x `h` is resized to before the centre crop: its shorter side `size`.
fn fitted_dims(w: u32, h: u32, size: u32) -> (u32, u32) {
    let scale = |long: u32, short: u32| ((u64::from(long) * u64::from(size)) / u64::from(short.max(1))).max(u64::from(size)) as u32;
    if w <= h { (size, scale(h, w)) } else { (scale(w, h), size) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::jpeg::JpegEncoder;
    use image::{ImageBuffer, Luma, Rgb, Rgba};
    use std::path::PathBuf;
    use std::process::Command;

    /// The Python with Pillow: `REPLORA_PYTHON`, else the project's `.venv` (as the other
    /// Python-checked tests). Missing Pillow fails the test.
    fn python() -> PathBuf {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("REPLORA_PYTHON").map(PathBuf::from).unwrap_or(root.join(".venv/bin/python"));
        let ok = Command::new(&python).args(["-c", "import PIL"]).status().is_ok_and(|s| s.success());
        assert!(ok, "{} lacks Pillow: run scripts/test (it installs it into .venv) or set REPLORA_PYTHON", python.display());
        python
    }

    /// Pillow's reference for one file: open, convert("RGB"), resize the shorter side with
    /// BILINEAR (reducing_gap=None), centre crop; the raw RGB bytes.
    fn pillow_fit(path: &Path, size: u32) -> Vec<u8> {
        let script = r#"
import sys
from PIL import Image
path, size = sys.argv[1], int(sys.argv[2])
im = Image.open(path).convert("RGB")
w, h = im.size
nw, nh = (size, h * size // w) if w <= h else (w * size // h, size)
im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
left, top = (nw - size) // 2, (nh - size) // 2
im = im.crop((left, top, left + size, top + size))
sys.stdout.buffer.write(im.tobytes())
"#;
        let out = Command::new(python()).arg("-c").arg(script).arg(path).arg(size.to_string()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// A smooth but non-trivial test pattern (gradients and a sharp edge).
    fn pattern(w: u32, h: u32) -> RgbImage {
        ImageBuffer::from_fn(w, h, |x, y| {
            let edge = if x > w / 3 && y < h / 2 { 200 } else { 0 };
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x * 7 + y * 13) % 56) as u8 + edge / 4])
        })
    }

    fn max_diff(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
    }

    #[test]
    fn resize_matches_pillow_bilinear() {
        let dir = tempfile::tempdir().unwrap();
        // Downscale (non-square, both axes), upscale (CIFAR-like 32 -> 112), and odd sizes.
        for (i, (w, h, size)) in [(97, 61, 24), (32, 32, 112), (45, 80, 33), (200, 150, 64)].into_iter().enumerate() {
            let png = dir.path().join(format!("p{i}.png"));
            pattern(w, h).save(&png).unwrap();
            let ours = load_image(&png, size).unwrap();
            assert_eq!(ours.dimensions(), (size, size));
            let reference = pillow_fit(&png, size);
            let d = max_diff(ours.as_raw(), &reference);
            assert!(d <= 1, "{w}x{h} -> {size}: max difference {d} from Pillow");
        }
    }

    /// JPEG decoders may differ by a level or two (IDCT rounding), so the reference decodes
    /// with Pillow too and the tolerance covers that; the resize itself is checked above.
    #[test]
    fn jpeg_decodes_and_resizes_like_pillow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jpg");
        let mut bytes = Vec::new();
        JpegEncoder::new_with_quality(&mut bytes, 95).encode_image(&pattern(80, 56)).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let ours = load_image(&path, 40).unwrap();
        let reference = pillow_fit(&path, 40);
        let d = max_diff(ours.as_raw(), &reference);
        let mean: f64 = ours.as_raw().iter().zip(&reference).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / reference.len() as f64;
        assert!(d <= 4 && mean < 0.75, "JPEG: max difference {d}, mean {mean:.3} from Pillow");
    }

    #[test]
    fn fit_dims_and_centre_crop() {
        assert_eq!(fitted_dims(100, 50, 10), (20, 10));
        assert_eq!(fitted_dims(50, 101, 10), (10, 20));
        assert_eq!(fitted_dims(3, 3, 7), (7, 7));
        // The centre of a wide image is kept: a white middle third stays, black sides go.
        let wide = ImageBuffer::from_fn(30, 10, |x, _| if (10..20).contains(&x) { Rgb([255u8; 3]) } else { Rgb([0; 3]) });
        let fitted = fit(DynamicImage::ImageRgb8(wide), 10);
        assert_eq!(fitted.dimensions(), (10, 10));
        assert!(fitted.pixels().all(|p| p.0 == [255; 3]));
    }

    #[test]
    fn other_modes_become_rgb() {
        let grey = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(4, 4, Luma([77u8])));
        assert!(fit(grey, 4).pixels().all(|p| p.0 == [77; 3]));
        let deep = DynamicImage::ImageRgb16(ImageBuffer::from_pixel(4, 4, Rgb([65535u16, 0, 32896])));
        assert!(fit(deep, 2).pixels().all(|p| p.0 == [255, 0, 128]), "16-bit is scaled to 8 bits");
        let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(4, 4, Rgba([1u8, 2, 3, 0])));
        assert!(fit(rgba, 4).pixels().all(|p| p.0 == [1, 2, 3]), "alpha is dropped");
        // A 16-bit PNG file decodes through the same path.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep.png");
        ImageBuffer::<Rgb<u16>, _>::from_pixel(6, 6, Rgb([65535u16, 0, 0])).save(&path).unwrap();
        assert!(load_image(&path, 3).unwrap().pixels().all(|p| p.0 == [255, 0, 0]));
    }

    #[test]
    fn bad_files_name_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.png");
        pattern(16, 16).save(&good).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut.png");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_image(&cut, 8).unwrap_err().to_string();
        assert!(err.contains("cut.png") && err.contains("cannot decode the PNG image"), "{err}");

        let text = dir.path().join("notes.png");
        std::fs::write(&text, "hello").unwrap();
        let err = load_image(&text, 8).unwrap_err().to_string();
        assert!(err.contains("notes.png") && err.contains("not a PNG or JPEG"), "{err}");

        let gif = dir.path().join("a.gif");
        std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
        let err = load_image(&gif, 8).unwrap_err().to_string();
        assert!(err.contains("a.gif") && err.contains("unsupported image format Gif"), "{err}");

        let err = load_image(&dir.path().join("missing.png"), 8).unwrap_err().to_string();
        assert!(err.contains("missing.png"), "{err}");
    }
}
