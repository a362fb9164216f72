//! Labelled image datasets for image classification: opening a source, the VTAB-1k-style
//! train/validation/test protocol, decoding and resizing, and normalized (augmented) batches.
//!
//! - `sources`: what a spec names: `cifar10` (BIG-bench's CIFAR-10 test images, base64 PNGs),
//!   `fashion-mnist` (its Debian package's IDX files, `idx`), a folder of class subfolders
//!   (optionally split into `train/`, `test/`, `val/`), or a `.jsonl` file of
//!   `{"image": path, "label": class}` lines.
//! - `protocol`: which images each split takes ([`Protocol`]; a fixed test set, seeded
//!   stratified train and validation draws).
//! - `decode`: PNG/JPEG to RGB at `size` x `size` (shorter side resized with a bilinear filter,
//!   centre crop; [`load_image`]).
//! - `batch`: [`ImageBatch`]es of ImageNet-normalized pixels, shuffled per (seed, epoch), with
//!   optional random crop and flip ([`Augment`]).
//!
//! Only the images the protocol selects are decoded (in parallel), and only their resized copies
//! are kept.
//!
//! ```no_run
//! use replora::data::images::{self, Protocol};
//! # fn main() -> replora::Result<()> {
//! let splits = images::open("cifar10", 224, &Protocol::default())?;
//! for batch in splits.train.batches(32, Some(0), 0, None) {
//!     let _pixels = batch.to_tensor(&burn::prelude::Device::flex()); // [32, 3, 224, 224]
//! }
//! # Ok(()) }
//! ```

mod batch;
mod decode;
mod idx;
mod protocol;
mod sources;
#[cfg(test)]
mod tests;

use image::RgbImage;
use rayon::prelude::*;

use crate::data::unknown_label_message;
use crate::{Error, Result};

pub use batch::{Augment, IMAGENET_MEAN, IMAGENET_STD, ImageBatch};
pub use decode::{fit, load_image};
pub use protocol::Protocol;

use sources::Pool;

/// Decoded images, each RGB and already `size` x `size`, with class ids into `labels`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    pub labels: Vec<String>,
    pub size: u32,
    pub images: Vec<RgbImage>,
    pub targets: Vec<usize>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// How many images each class has, by class id.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.len()];
        for &t in &self.targets {
            counts[t] += 1;
        }
        counts
    }

    /// Decodes `pool`'s images at `indices`; `relabel` maps the pool's class ids to `labels`'.
    fn decode(labels: &[String], pool: &Pool, indices: &[usize], size: u32, relabel: Option<&[usize]>) -> Result<ImageSet> {
        let images = indices.par_iter().map(|&i| pool.items[i].decode(size)).collect::<Result<Vec<_>>>()?;
        let targets = indices.iter().map(|&i| relabel.map_or(pool.targets[i], |r| r[pool.targets[i]])).collect();
        Ok(ImageSet { labels: labels.to_vec(), size, images, targets })
    }
}

/// A dataset's train, validation and test sets under a [`Protocol`], with its classes.
#[derive(Clone, Debug)]
pub struct ImageSplits {
    pub labels: Vec<String>,
    pub train: ImageSet,
    pub validation: ImageSet,
    pub test: ImageSet,
}

/// Opens an image dataset by spec (`cifar10`, `fashion-mnist`, a folder, a `.jsonl` file; see
/// the module docs) and splits it by `protocol`; `size` is the images' side in pixels.
pub fn open(spec: &str, size: u32, protocol: &Protocol) -> Result<ImageSplits> {
    check_size(size)?;
    let source = sources::open(spec)?;
    let [train, validation, test] = protocol::plan(&source, protocol)?;
    let labels = source.labels.clone();
    let decode = |s: &protocol::Selection| ImageSet::decode(&labels, s.pool, &s.indices, size, None);
    Ok(ImageSplits { train: decode(&train)?, validation: decode(&validation)?, test: decode(&test)?, labels: labels.clone() })
}

/// Opens a labelled image source whole as a test set, with a run's `labels` (class ids are
/// positions in `labels`; an image of another class is an error naming it and the known ones).
/// A source that comes split (`fashion-mnist`, a folder with `train/` and `test/`) gives its
/// test pool; any other gives all its images.
pub fn open_test(spec: &str, size: u32, labels: &[String]) -> Result<ImageSet> {
    check_size(size)?;
    let source = sources::open(spec)?;
    let pool = source.test.as_ref().unwrap_or(&source.train);
    let mut relabel = vec![usize::MAX; source.labels.len()];
    // Only the classes the images have must be known (a split folder's test pool may lack some).
    for &t in &pool.targets {
        if relabel[t] == usize::MAX {
            let name = &source.labels[t];
            relabel[t] = labels
                .iter()
                .position(|k| k == name)
                .ok_or_else(|| Error::Config(format!("{}: {}", source.name, unknown_label_message(name, labels))))?;
        }
    }
    let indices: Vec<usize> = (0..pool.len()).collect();
    ImageSet::decode(labels, pool, &indices, size, Some(&relabel))
}

/// The largest image side replora reads, pixels.
pub const MAX_IMAGE_SIZE: usize = 4096;

fn check_size(size: u32) -> Result<()> {
    if !(1..=MAX_IMAGE_SIZE).contains(&(size as usize)) {
        return Err(Error::Config(format!("image size must be 1..={MAX_IMAGE_SIZE} pixels; got {size}")));
    }
    Ok(())
}
