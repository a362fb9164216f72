//! Batches of images as model input: ImageNet-normalized `[batch, 3, size, size]` pixels, in a
//! seeded per-epoch order, with optional training augmentation (random crop and flip).

use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::ImageSet;
use crate::data::split::shuffle;

/// ImageNet's per-channel mean and standard deviation (RGB), applied after scaling to [0, 1].
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A host-side batch: `pixels` is `[batch, 3, size, size]`, row-major, normalized with
/// [`IMAGENET_MEAN`] and [`IMAGENET_STD`]; `labels` are class ids.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageBatch {
    pub pixels: Vec<f32>,
    pub size: usize,
    pub labels: Vec<usize>,
}

impl ImageBatch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels as a `[batch, 3, size, size]` tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> Tensor<4> {
        Tensor::from_data(TensorData::new(self.pixels.clone(), [self.len(), 3, self.size, self.size]), device)
    }

    /// The class ids as a `[batch]` tensor.
    pub fn labels_tensor(&self, device: &Device) -> Tensor<1, Int> {
        let labels: Vec<i64> = self.labels.iter().map(|&l| l as i64).collect();
        Tensor::from_data(TensorData::new(labels, [self.len()]), device)
    }
}

/// Training augmentation: a random crop (the image padded by `crop_pad` pixels on each side by
/// reflection, then a `size` x `size` window at a random offset) and, with `flip`, a horizontal
/// flip with probability 1/2. Each image's draw depends only on (`seed`, epoch, its index in
/// the set), so a resumed run sees the same batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    pub crop_pad: u32,
    pub flip: bool,
    pub seed: u64,
}

/// One image's augmentation: the window's offset in the padded image, and whether to flip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct View {
    dx: i64,
    dy: i64,
    flip: bool,
}

impl View {
    const IDENTITY: View = View { dx: 0, dy: 0, flip: false };

    fn draw(augment: &Augment, epoch: u64, index: usize) -> View {
        let mut rng = StdRng::seed_from_u64(mix(&[augment.seed, epoch, index as u64]));
        let pad = i64::from(augment.crop_pad);
        let dx = rng.random_range(0..=2 * pad as u64) as i64 - pad;
        let dy = rng.random_range(0..=2 * pad as u64) as i64 - pad;
        let flip = augment.flip && rng.random_bool(0.5);
        View { dx, dy, flip }
    }
}

/// One well-mixed seed from several (splitmix64 steps), so that nearby (seed, epoch, index)
/// triples give unrelated streams.
fn mix(parts: &[u64]) -> u64 {
    let mut h = 0x1d8e_4e27_c47d_124f_u64;
    for &p in parts {
        h = (h ^ p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
    }
    h
}

/// Reflects coordinate `p` into `0..n` (mirror without repeating the edge, like numpy's
/// `reflect`), for any offset.
fn reflect(p: i64, n: i64) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let q = p.rem_euclid(period);
    (if q < n { q } else { period - q }) as usize
}

impl ImageSet {
    /// The image indices of one epoch, in batch order: as stored (`shuffle_seed` `None`) or a
    /// permutation that depends only on (seed, epoch), as the text batches'.
    pub fn order(&self, shuffle_seed: Option<u64>, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        if let Some(seed) = shuffle_seed {
            let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            shuffle(&mut order, &mut rng);
        }
        order
    }

    /// The batches of epoch `epoch` (the last one may be smaller), in order or shuffled by
    /// (`shuffle_seed`, epoch), augmented only when `augment` is given.
    pub fn batches(&self, batch_size: usize, shuffle_seed: Option<u64>, epoch: u64, augment: Option<&Augment>) -> Vec<ImageBatch> {
        let batch_size = batch_size.max(1);
        self.order(shuffle_seed, epoch).chunks(batch_size).map(|chunk| self.batch(chunk, epoch, augment)).collect()
    }

    /// The images at `indices` as one batch (augmented per (seed, `epoch`, index) if asked).
    pub fn batch(&self, indices: &[usize], epoch: u64, augment: Option<&Augment>) -> ImageBatch {
        let s = self.size as usize;
        // Normalization of each 8-bit value, per channel.
        let table: Vec<[f32; 256]> =
            (0..3).map(|c| std::array::from_fn(|v| (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])).collect();
        let mut pixels = vec![0.0f32; indices.len() * 3 * s * s];
        for (b, &i) in indices.iter().enumerate() {
            let image = &self.images[i];
            assert_eq!(image.dimensions(), (self.size, self.size), "image {i} of the set is not size x size");
            let view = augment.map_or(View::IDENTITY, |a| View::draw(a, epoch, i));
            let out = &mut pixels[b * 3 * s * s..(b + 1) * 3 * s * s];
            for y in 0..s {
                let sy = reflect(y as i64 + view.dy, s as i64);
                for x in 0..s {
                    let x_in = if view.flip { s - 1 - x } else { x };
                    let sx = reflect(x_in as i64 + view.dx, s as i64);
                    let p = image.get_pixel(sx as u32, sy as u32).0;
                    for c in 0..3 {
                        out[(c * s + y) * s + x] = table[c][usize::from(p[c])];
                    }
                }
            }
        }
        ImageBatch { pixels, size: s, labels: indices.iter().map(|&i| self.targets[i]).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb, RgbImage};

    /// `n` distinct 4x4 images (pixel values encode image, x, y) in 2 classes.
    fn set(n: usize) -> ImageSet {
        let images: Vec<RgbImage> =
            (0..n).map(|i| ImageBuffer::from_fn(4, 4, |x, y| Rgb([i as u8, (x * 10) as u8, (y * 10) as u8]))).collect();
        ImageSet { labels: vec!["a".into(), "b".into()], size: 4, targets: (0..n).map(|i| i % 2).collect(), images }
    }

    fn value(batch: &ImageBatch, b: usize, c: usize, y: usize, x: usize) -> f32 {
        let s = batch.size;
        batch.pixels[((b * 3 + c) * s + y) * s + x]
    }

    fn raw(v: f32, c: usize) -> u8 {
        ((v * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255.0).round() as u8
    }

    #[test]
    fn normalization_is_imagenet() {
        let image = ImageBuffer::from_fn(1, 1, |_, _| Rgb([0u8, 128, 255]));
        let set = ImageSet { labels: vec!["x".into()], size: 1, images: vec![image], targets: vec![0] };
        let batch = &set.batches(8, None, 0, None)[0];
        let expected = [(0.0 - 0.485) / 0.229, (128.0 / 255.0 - 0.456) / 0.224, (1.0 - 0.406) / 0.225];
        for (got, want) in batch.pixels.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert_eq!(batch.size, 1);
        let device = Device::flex();
        assert_eq!(batch.to_tensor(&device).dims(), [1, 3, 1, 1]);
        assert_eq!(batch.labels_tensor(&device).into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), [0]);
    }

    #[test]
    fn layout_is_batch_channel_row_column() {
        let set = set(3);
        let batches = set.batches(2, None, 0, None);
        assert_eq!(batches.iter().map(ImageBatch::len).collect::<Vec<_>>(), [2, 1]);
        let b = &batches[0];
        assert_eq!(b.pixels.len(), 2 * 3 * 16);
        assert_eq!(b.labels, [0, 1]);
        assert_eq!((raw(value(b, 1, 0, 2, 3), 0), raw(value(b, 1, 1, 2, 3), 1), raw(value(b, 1, 2, 2, 3), 2)), (1, 30, 20));
    }

    #[test]
    fn shuffles_are_deterministic_per_seed_and_epoch() {
        let set = set(20);
        let labels = |batches: Vec<ImageBatch>| -> Vec<u8> {
            batches.iter().flat_map(|b| (0..b.len()).map(|i| raw(value(b, i, 0, 0, 0), 0)).collect::<Vec<_>>()).collect()
        };
        let e0 = labels(set.batches(6, Some(7), 0, None));
        assert_eq!(e0, labels(set.batches(6, Some(7), 0, None)), "same (seed, epoch): same batches");
        assert_ne!(e0, labels(set.batches(6, Some(7), 1, None)), "another epoch: another order");
        assert_ne!(e0, labels(set.batches(6, Some(8), 0, None)), "another seed: another order");
        assert_eq!(labels(set.batches(6, None, 3, None)), (0..20).collect::<Vec<u8>>(), "no seed: stored order");
        let mut sorted = e0.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<u8>>(), "a permutation");
        // Labels follow their images.
        for b in set.batches(6, Some(7), 2, None) {
            for i in 0..b.len() {
                assert_eq!(b.labels[i], usize::from(raw(value(&b, i, 0, 0, 0), 0)) % 2);
            }
        }
    }

    #[test]
    fn augmentation_keeps_shape_is_deterministic_and_varies() {
        let set = set(16);
        let augment = Augment { crop_pad: 2, flip: true, seed: 5 };
        let plain = set.batches(16, None, 0, None);
        let a = set.batches(16, None, 0, Some(&augment));
        assert_eq!(a[0].pixels.len(), plain[0].pixels.len());
        assert_eq!(a[0].labels, plain[0].labels);
        assert_eq!(a, set.batches(16, None, 0, Some(&augment)), "deterministic per (seed, epoch)");
        assert_ne!(a, plain, "augmentation changes some images");
        assert_ne!(a, set.batches(16, None, 1, Some(&augment)), "and differently each epoch");
        // An image's view does not depend on the batch it lands in.
        let shuffled = set.batches(4, Some(1), 0, Some(&augment));
        let order = set.order(Some(1), 0);
        let per_image = |b: &ImageBatch, i: usize| b.pixels[i * 48..(i + 1) * 48].to_vec();
        assert_eq!(per_image(&shuffled[0], 0), per_image(&a[0], order[0]));
        // Each augmented image is its original, shifted (reflected at the borders) and maybe
        // flipped: the image id channel is untouched.
        for b in 0..16 {
            for y in 0..4 {
                for x in 0..4 {
                    assert_eq!(raw(value(&a[0], b, 0, y, x), 0), b as u8);
                }
            }
        }
        // No padding, no flip: the identity.
        let none = Augment { crop_pad: 0, flip: false, seed: 5 };
        assert_eq!(set.batches(16, None, 0, Some(&none)), plain);
    }

    #[test]
    fn flips_and_crops_move_pixels() {
        let set = set(1);
        // Find epochs where the draw is a pure flip, and a pure shift.
        let flip_only = Augment { crop_pad: 0, flip: true, seed: 0 };
        let flipped = (0..20).map(|e| set.batches(1, None, e, Some(&flip_only))).find(|b| b != &set.batches(1, None, 0, None)).unwrap();
        for x in 0..4 {
            assert_eq!(raw(value(&flipped[0], 0, 1, 0, x), 1), (30 - 10 * x) as u8);
        }
        assert_eq!(reflect(-1, 4), 1);
        assert_eq!(reflect(4, 4), 2);
        assert_eq!(reflect(-7, 4), 1);
        assert_eq!(reflect(9, 4), 3);
        assert_eq!(reflect(5, 1), 0);
        let v = View::draw(&Augment { crop_pad: 3, flip: false, seed: 1 }, 0, 0);
        assert!((-3..=3).contains(&v.dx) && (-3..=3).contains(&v.dy) && !v.flip);
    }
}
