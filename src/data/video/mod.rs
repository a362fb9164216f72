//! Labelled video clips for video classification: decoding (`.mp4` H.264 files and folders of
//! frames), the sources a spec names, the train/validation/test split, frame sampling and
//! normalized batches.
//!
//! - `h264`: MP4 files read and written with OpenH264 (compiled from source by the `openh264`
//!   crate, so no system package is needed).
//! - `sources`: `fashion-mnist-clips`, a folder of class subfolders (optionally split into
//!   `train/`, `test/`, `val/`), or a `.jsonl` of `{"video": path, "label": class}` lines.
//! - `clips`: the synthetic `fashion-mnist-clips` dataset, written as real `.mp4` files.
//!
//! Every frame of a selected clip is decoded once (in parallel) at the model's size and kept;
//! a batch samples `frames` of them per clip: uniformly spaced, at the centre of each of
//! `frames` equal segments for evaluation, and at one seeded random offset within the segments
//! per (seed, epoch, clip) in training.

pub mod clips;
mod h264;
mod sources;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use image::RgbImage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::images::{IMAGENET_MEAN, IMAGENET_STD};
use crate::data::split::shuffle;
use crate::{Error, Result};

pub use h264::{read_mp4, write_mp4};
pub use sources::load_clip;

/// Decoded clips: each a list of RGB frames, `size` x `size`, at least `frames` long.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoSet {
    pub labels: Vec<String>,
    pub size: u32,
    /// Frames sampled per clip.
    pub frames: usize,
    pub clips: Vec<Vec<RgbImage>>,
    pub targets: Vec<usize>,
}

/// A dataset's train, validation and test clips, with its classes.
#[derive(Clone, Debug)]
pub struct VideoSplits {
    pub labels: Vec<String>,
    pub train: VideoSet,
    pub validation: VideoSet,
    pub test: VideoSet,
}

/// How an unsplit source is divided: shares of each class held out for validation and test
/// (a source with `test/` keeps it, one with `val/` keeps that), drawn with `seed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoProtocol {
    pub validation_share: f64,
    pub test_share: f64,
    pub seed: u64,
}

impl Default for VideoProtocol {
    fn default() -> Self {
        VideoProtocol { validation_share: 0.15, test_share: 0.15, seed: 0 }
    }
}

/// A host-side batch: `pixels` is `[batch, frames, 3, size, size]`, ImageNet-normalized.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoBatch {
    pub pixels: Vec<f32>,
    pub frames: usize,
    pub size: usize,
    pub labels: Vec<usize>,
}

impl VideoBatch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels as a `[batch, frames, 3, size, size]` tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> Tensor<5> {
        Tensor::from_data(TensorData::new(self.pixels.clone(), [self.len(), self.frames, 3, self.size, self.size]), device)
    }

    pub fn labels_tensor(&self, device: &Device) -> Tensor<1, Int> {
        let labels: Vec<i64> = self.labels.iter().map(|&l| l as i64).collect();
        Tensor::from_data(TensorData::new(labels, [self.len()]), device)
    }
}

/// Which `frames` of a `len`-frame clip are sampled: frame `floor((k + offset) * len / frames)`
/// for k = 0..frames, `offset` in [0, 1) (0.5: each segment's centre).
pub fn frame_indices(len: usize, frames: usize, offset: f64) -> Vec<usize> {
    (0..frames).map(|k| (((k as f64 + offset) * len as f64 / frames as f64).floor() as usize).min(len - 1)).collect()
}

/// One well-mixed seed from several (splitmix64 steps).
fn mix(parts: &[u64]) -> u64 {
    let mut h = 0x7f4a_7c15_9e37_79b9_u64;
    for &p in parts {
        h = (h ^ p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
    }
    h
}

impl VideoSet {
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    /// The set's clips in batch order: as stored, or shuffled by (seed, epoch).
    pub fn order(&self, shuffle_seed: Option<u64>, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        if let Some(seed) = shuffle_seed {
            shuffle(&mut order, &mut StdRng::seed_from_u64(mix(&[seed, epoch, 1])));
        }
        order
    }

    /// The batches of epoch `epoch`; with `shuffle_seed` (training) shuffled and each clip's
    /// frames at a random offset drawn from (seed, epoch, clip), else in order at the centres.
    /// With `frame_order_seed` (the frame-shuffled control) each clip's sampled frames come in
    /// a random order drawn from (that seed, epoch, clip).
    pub fn batches(&self, batch_size: usize, shuffle_seed: Option<u64>, epoch: u64, frame_order_seed: Option<u64>) -> Vec<VideoBatch> {
        let order = self.order(shuffle_seed, epoch);
        let random = shuffle_seed.map(|s| (s, epoch));
        order.chunks(batch_size.max(1)).map(|chunk| self.batch(chunk, random, frame_order_seed.map(|s| (s, epoch)))).collect()
    }

    /// The clips at `indices` as one batch; `random` = (seed, epoch) draws each clip's offset,
    /// `shuffled` = (seed, epoch) the order of its frames.
    pub fn batch(&self, indices: &[usize], random: Option<(u64, u64)>, shuffled: Option<(u64, u64)>) -> VideoBatch {
        let s = self.size as usize;
        let table: Vec<[f32; 256]> =
            (0..3).map(|c| std::array::from_fn(|v| (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])).collect();
        let frame_len = 3 * s * s;
        let mut pixels = vec![0.0f32; indices.len() * self.frames * frame_len];
        for (b, &i) in indices.iter().enumerate() {
            let clip = &self.clips[i];
            let offset = random.map_or(0.5, |(seed, epoch)| StdRng::seed_from_u64(mix(&[seed, epoch, i as u64])).random::<f64>());
            let mut picked = frame_indices(clip.len(), self.frames, offset);
            if let Some((seed, epoch)) = shuffled {
                shuffle(&mut picked, &mut StdRng::seed_from_u64(mix(&[seed, epoch, i as u64, 2])));
            }
            for (k, &f) in picked.iter().enumerate() {
                let out = &mut pixels[(b * self.frames + k) * frame_len..][..frame_len];
                for (p, px) in clip[f].pixels().enumerate() {
                    for c in 0..3 {
                        out[c * s * s + p] = table[c][usize::from(px.0[c])];
                    }
                }
            }
        }
        VideoBatch { pixels, frames: self.frames, size: s, labels: indices.iter().map(|&i| self.targets[i]).collect() }
    }

    /// Decodes the clips at `paths` (in parallel); each must have at least `frames` frames.
    pub fn decode(labels: &[String], paths: &[&Path], targets: Vec<usize>, size: u32, frames: usize) -> Result<VideoSet> {
        let clips = paths.par_iter().map(|p| decode_clip(p, size, frames)).collect::<Result<Vec<_>>>()?;
        Ok(VideoSet { labels: labels.to_vec(), size, frames, clips, targets })
    }
}

impl VideoSet {
    /// `fraction` of each class (rounded, at least one), drawn with `seed`.
    pub fn stratified_sample(self, fraction: f64, seed: u64) -> VideoSet {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5a4d_91e0_f7ac_7105);
        let mut keep = vec![false; self.len()];
        for class in 0..self.labels.len() {
            let mut members: Vec<usize> = (0..self.len()).filter(|&i| self.targets[i] == class).collect();
            shuffle(&mut members, &mut rng);
            let n = members.len();
            let k = ((fraction * n as f64).round() as usize).clamp(n.min(1), n);
            members[..k].iter().for_each(|&i| keep[i] = true);
        }
        let VideoSet { labels, size, frames, clips, targets } = self;
        let (clips, targets) = clips.into_iter().zip(targets).zip(&keep).filter(|(_, k)| **k).map(|(pair, _)| pair).unzip();
        VideoSet { labels, size, frames, clips, targets }
    }
}

/// One clip's frames at `size`, refused (naming the file) if it is shorter than `frames`.
pub fn decode_clip(path: &Path, size: u32, frames: usize) -> Result<Vec<RgbImage>> {
    let clip = load_clip(path, size)?;
    if clip.len() < frames {
        return Err(Error::data(
            path,
            None,
            format!("the clip has {} frames, fewer than the {frames} sampled per clip (--frames)", clip.len()),
        ));
    }
    Ok(clip)
}

/// Indices of a stratified draw of `share` of each class of `targets` among `candidates`
/// (rounded, at least one where the class has two or more), by a seeded shuffle.
fn stratified(targets: &[usize], candidates: &[usize], share: f64, classes: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut out = Vec::new();
    for class in 0..classes {
        let mut members: Vec<usize> = candidates.iter().copied().filter(|&i| targets[i] == class).collect();
        shuffle(&mut members, rng);
        let n = members.len();
        let k = if share > 0.0 && n >= 2 { ((share * n as f64).round() as usize).clamp(1, n - 1) } else { 0 };
        out.extend_from_slice(&members[..k]);
    }
    out.sort_unstable();
    out
}

/// Opens a video dataset by spec and splits it by `protocol`; clips are decoded at `size` and
/// must have at least `frames` frames each.
pub fn open(spec: &str, size: u32, frames: usize, protocol: &VideoProtocol) -> Result<VideoSplits> {
    check_sizes(size, frames)?;
    let source = sources::open(spec)?;
    let classes = source.labels.len();
    let mut rng = StdRng::seed_from_u64(mix(&[protocol.seed, 0x5649_4445_4f00]));
    let pool = &source.train;
    let all: Vec<usize> = (0..pool.clips.len()).collect();
    let test_ids = match source.test {
        Some(_) => vec![],
        None => stratified(&pool.targets, &all, protocol.test_share, classes, &mut StdRng::seed_from_u64(0x5445_5354)),
    };
    let rest: Vec<usize> = all.iter().copied().filter(|i| test_ids.binary_search(i).is_err()).collect();
    let val_ids = match source.validation {
        Some(_) => vec![],
        None => stratified(&pool.targets, &rest, protocol.validation_share, classes, &mut rng),
    };
    let train_ids: Vec<usize> = rest.into_iter().filter(|i| val_ids.binary_search(i).is_err()).collect();
    let pick = |p: &sources::Pool, ids: &[usize]| -> Result<VideoSet> {
        let paths: Vec<&Path> = ids.iter().map(|&i| p.clips[i].as_path()).collect();
        VideoSet::decode(&source.labels, &paths, ids.iter().map(|&i| p.targets[i]).collect(), size, frames)
    };
    let whole = |p: &sources::Pool| pick(p, &(0..p.clips.len()).collect::<Vec<_>>());
    let train = pick(pool, &train_ids)?;
    if train.is_empty() {
        return Err(Error::Config(format!("{}: no training clips are left after the validation and test draws", source.name)));
    }
    let validation = match &source.validation {
        Some(v) => whole(v)?,
        None => pick(pool, &val_ids)?,
    };
    let test = match &source.test {
        Some(t) => whole(t)?,
        None => pick(pool, &test_ids)?,
    };
    Ok(VideoSplits { labels: source.labels.clone(), train, validation, test })
}

/// Opens a labelled video source whole as a test set with a run's `labels` (a split source
/// gives its test pool); a clip of an unknown class is an error naming it.
pub fn open_test(spec: &str, size: u32, frames: usize, labels: &[String]) -> Result<VideoSet> {
    check_sizes(size, frames)?;
    let source = sources::open(spec)?;
    let pool = source.test.as_ref().unwrap_or(&source.train);
    let mut targets = Vec::with_capacity(pool.targets.len());
    for &t in &pool.targets {
        let name = &source.labels[t];
        let id = labels
            .iter()
            .position(|k| k == name)
            .ok_or_else(|| Error::Config(format!("{}: {}", source.name, crate::data::unknown_label_message(name, labels))))?;
        targets.push(id);
    }
    let paths: Vec<&Path> = pool.clips.iter().map(PathBuf::as_path).collect();
    VideoSet::decode(labels, &paths, targets, size, frames)
}

/// The most frames replora samples per clip.
pub const MAX_FRAMES: usize = 256;

fn check_sizes(size: u32, frames: usize) -> Result<()> {
    let max = crate::data::images::MAX_IMAGE_SIZE;
    if !(1..=max).contains(&(size as usize)) {
        return Err(Error::Config(format!("image size must be 1..={max} pixels; got {size}")));
    }
    if !(1..=MAX_FRAMES).contains(&frames) {
        return Err(Error::Config(format!("frames per clip must be 1..={MAX_FRAMES}; got {frames}")));
    }
    Ok(())
}
