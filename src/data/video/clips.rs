//! `fashion-mnist-clips`: a synthetic video dataset built deterministically from Fashion-MNIST
//! images (no video data set is reachable from the package registries), written as real H.264
//! `.mp4` files that are read back through the same decoder as a user's videos.
//!
//! Each clip shows one garment on a black 32 x 32 canvas for 16 frames, doing one of ten
//! motions. The motions come in reversed pairs (moves left / right, up / down, zooms in / out,
//! rotates clockwise / anticlockwise, appears / disappears): a clip of one class is the other's
//! frames in reverse order, so a single frame, the set of frames or their average cannot tell
//! the two apart; only the frames' order does. Each clip also has a random start position and
//! size (its seed fixed), and each split draws its own garments: training and validation from
//! Fashion-MNIST's training images (disjoint), test from its test images.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::h264::write_mp4;
use crate::data::images::{self, Protocol};
use crate::{Error, Result};

/// The dataset's name in `--data` and `replora fetch`.
pub const DATASET: &str = "fashion-mnist-clips";
/// One line for `replora fetch`'s list.
pub const DESCRIPTION: &str = "synthetic clips built from Fashion-MNIST (10 motions: moves left/right/up/down, zooms in/out, rotates, appears/disappears; 600 + 200 + 200 H.264 .mp4 clips of 16 frames, 32x32), built locally";
/// The cache folder; the version changes whenever the clips would.
const CACHE_DIR: &str = "datasets/fashion-mnist-clips-v1";
/// Written last: a folder with it is complete.
const COMPLETE: &str = ".complete";
/// Canvas side in pixels, and frames per clip.
pub const SIZE: u32 = 32;
pub const FRAMES: usize = 16;
/// Clips per split (train, validation, test), balanced over the ten motions.
pub const CLIPS: [usize; 3] = [600, 200, 200];

/// The motions, by class id: pairs of a motion and its reverse.
pub const MOTIONS: [&str; 10] = [
    "moves-left",
    "moves-right",
    "moves-up",
    "moves-down",
    "zooms-in",
    "zooms-out",
    "rotates-clockwise",
    "rotates-anticlockwise",
    "appears",
    "disappears",
];

/// The garment's placement in one frame: shift from the centre (pixels), scale (1: the
/// 28-pixel image at 28 pixels), rotation (radians, clockwise on screen) and brightness.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pose {
    dx: f64,
    dy: f64,
    scale: f64,
    angle: f64,
    brightness: f64,
}

/// The pose in frame `t` of `FRAMES` of motion `class`, around a clip's own start (`base`).
/// The second of each pair runs the first backwards: its frame t is the first's frame
/// `FRAMES - 1 - t`, exactly (the same arithmetic on the same numbers).
fn pose(class: usize, t: usize, base: Pose) -> Pose {
    let step = if class.is_multiple_of(2) { t } else { FRAMES - 1 - t };
    let forward = step as f64 / (FRAMES - 1) as f64;
    let travel = 14.0 * forward - 7.0;
    let mut pose = base;
    match class / 2 {
        0 => pose.dx -= travel,
        1 => pose.dy -= travel,
        2 => pose.scale *= 0.45 + 0.65 * forward,
        3 => pose.angle += (forward - 0.5) * std::f64::consts::PI * 2.0 / 3.0,
        _ => pose.brightness *= forward,
    }
    pose
}

/// Draws the grey `garment` at `pose` on a black `SIZE` x `SIZE` canvas (bilinear sampling of
/// the inverse transform; outside the garment is black).
fn render(garment: &RgbImage, pose: Pose) -> RgbImage {
    let (gw, gh) = garment.dimensions();
    let value = |x: i64, y: i64| -> f64 {
        if x < 0 || y < 0 || x >= i64::from(gw) || y >= i64::from(gh) { 0.0 } else { f64::from(garment.get_pixel(x as u32, y as u32).0[0]) }
    };
    let centre = f64::from(SIZE) / 2.0;
    let (sin, cos) = pose.angle.sin_cos();
    RgbImage::from_fn(SIZE, SIZE, |x, y| {
        let u = f64::from(x) + 0.5 - centre - pose.dx;
        let v = f64::from(y) + 0.5 - centre - pose.dy;
        // Undo the rotation and scale: the canvas point's place in the garment image.
        let (su, sv) = ((cos * u + sin * v) / pose.scale, (-sin * u + cos * v) / pose.scale);
        let (gx, gy) = (su + f64::from(gw) / 2.0 - 0.5, sv + f64::from(gh) / 2.0 - 0.5);
        let (x0, y0) = (gx.floor(), gy.floor());
        let (fx, fy) = (gx - x0, gy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let sample = value(x0, y0) * (1.0 - fx) * (1.0 - fy)
            + value(x0 + 1, y0) * fx * (1.0 - fy)
            + value(x0, y0 + 1) * (1.0 - fx) * fy
            + value(x0 + 1, y0 + 1) * fx * fy;
        let level = (sample * pose.brightness).round().clamp(0.0, 255.0) as u8;
        Rgb([level; 3])
    })
}

/// The frames of clip `index` of a split: motion `index % 10` of `garment`, its start drawn
/// from (`split_seed`, index).
pub fn clip_frames(garment: &RgbImage, class: usize, split_seed: u64, index: usize) -> Vec<RgbImage> {
    let mut rng = StdRng::seed_from_u64(split_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64);
    let base = Pose {
        dx: rng.random_range(-2.0..=2.0),
        dy: rng.random_range(-2.0..=2.0),
        scale: rng.random_range(0.7..=0.85),
        angle: rng.random_range(-0.2..=0.2),
        brightness: rng.random_range(0.8..=1.0),
    };
    (0..FRAMES).map(|t| render(garment, pose(class, t, base))).collect()
}

/// Writes the dataset into `dir` as `train/`, `val/`, `test/`, each with one folder of `.mp4`
/// clips per motion.
pub fn build(dir: &Path) -> Result<()> {
    let protocol = Protocol { train: CLIPS[0], validation: CLIPS[1], test: CLIPS[2], seed: 0x4649_4c4d };
    let splits = images::open("fashion-mnist", 28, &protocol)?;
    for (s, (name, set)) in [("train", &splits.train), ("val", &splits.validation), ("test", &splits.test)].into_iter().enumerate() {
        for motion in MOTIONS {
            let folder = dir.join(name).join(motion);
            std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        }
        (0..set.images.len()).into_par_iter().try_for_each(|i| {
            let class = i % MOTIONS.len();
            let frames = clip_frames(&set.images[i], class, s as u64 + 1, i);
            write_mp4(&dir.join(name).join(MOTIONS[class]).join(format!("{i:04}.mp4")), &frames)
        })?;
    }
    Ok(())
}

/// The dataset's folder, built into the cache (`REPLORA_CACHE`) on first use from
/// Fashion-MNIST (fetched if needed). Built in a private folder and moved into place in one
/// rename, so a half-written dataset is never seen; two processes building at once both
/// finish and one copy is kept.
pub fn ensure() -> Result<PathBuf> {
    let dest = crate::assets::cache_dir().join(CACHE_DIR);
    if dest.join(COMPLETE).is_file() {
        return Ok(dest);
    }
    let parent = dest.parent().expect("the cache folder has a parent");
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let work = parent.join(format!(".{DATASET}-{}-{nanos}", std::process::id()));
    let start = std::time::Instant::now();
    eprintln!(
        "replora: building {DATASET} ({} + {} + {} clips of {FRAMES} frames, {SIZE}x{SIZE}) into {}",
        CLIPS[0],
        CLIPS[1],
        CLIPS[2],
        dest.display()
    );
    let built = build(&work).and_then(|()| {
        let marker = work.join(COMPLETE);
        std::fs::write(&marker, format!("{DATASET}: built by replora {}\n", env!("CARGO_PKG_VERSION"))).map_err(|e| Error::io(&marker, e))
    });
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    if std::fs::rename(&work, &dest).is_err() {
        // Another process put its copy there first (or a stale incomplete folder is in the way).
        let _ = std::fs::remove_dir_all(&work);
        if !dest.join(COMPLETE).is_file() {
            return Err(Error::data(&dest, None, "exists but is no complete dataset; remove it to build it again"));
        }
    }
    eprintln!("replora: {DATASET} ready in {:.1} s: {}", start.elapsed().as_secs_f64(), dest.display());
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn garment() -> RgbImage {
        RgbImage::from_fn(28, 28, |x, y| Rgb([((x * 9 + y * 5) % 256) as u8; 3]))
    }

    /// A motion's reverse has the same frames backwards: the frame set cannot tell them apart.
    #[test]
    fn pairs_are_each_other_reversed() {
        for pair in 0..5 {
            let a = clip_frames(&garment(), 2 * pair, 3, 7);
            let mut b = clip_frames(&garment(), 2 * pair + 1, 3, 7);
            b.reverse();
            assert_eq!(a, b, "{} vs {}", MOTIONS[2 * pair], MOTIONS[2 * pair + 1]);
            assert_ne!(a.first(), a.last(), "{} moves", MOTIONS[2 * pair]);
        }
    }

    #[test]
    fn moving_right_moves_the_mass_right() {
        let frames = clip_frames(&garment(), 1, 1, 0);
        let centre_x = |f: &RgbImage| {
            let (mut sum, mut mass) = (0.0, 0.0);
            for (x, _, p) in f.enumerate_pixels() {
                sum += f64::from(x) * f64::from(p.0[0]);
                mass += f64::from(p.0[0]);
            }
            sum / mass
        };
        assert!(centre_x(&frames[FRAMES - 1]) > centre_x(&frames[0]) + 8.0);
    }
}
