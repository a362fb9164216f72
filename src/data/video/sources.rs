//! Video sources: what a spec names (`fashion-mnist-clips`, a folder, a `.jsonl` file) as lists
//! of labelled clips, not yet decoded, and the decoding of one clip.
//!
//! A clip is an `.mp4` file or a folder of frames (`clip/000.png`, `clip/001.png`, ... in name
//! order). A folder source has one subfolder per class holding clips, or `train/`, `test/` and
//! optionally `val/` of those. A `.jsonl` source has `{"video": path, "label": class}` lines,
//! paths relative to the file.

use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};

use super::h264::read_mp4;
use crate::data::images::{fit, load_image};
use crate::data::{files_with, has_extension};
use crate::{Error, Result};

/// The file extensions read as video files, and as frames inside a clip folder.
const VIDEO_EXTENSIONS: [&str; 1] = ["mp4"];
const FRAME_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Labelled clips: `targets[i]` is the class id of `clips[i]` (a path).
#[derive(Clone, Debug, Default)]
pub(super) struct Pool {
    pub clips: Vec<PathBuf>,
    pub targets: Vec<usize>,
}

/// An opened source: its classes and its pools (`validation` and `test` where it comes split).
#[derive(Clone, Debug)]
pub(super) struct Source {
    pub name: String,
    pub labels: Vec<String>,
    pub train: Pool,
    pub validation: Option<Pool>,
    pub test: Option<Pool>,
}

/// Decodes one clip (an `.mp4` file or a folder of frames) into every frame, each RGB and
/// `size` x `size` (shorter side resized, centre crop, as images are).
pub fn load_clip(path: &Path, size: u32) -> Result<Vec<RgbImage>> {
    if path.is_dir() {
        let frames = files_with(path, &FRAME_EXTENSIONS)?;
        if frames.is_empty() {
            return Err(Error::data(path, None, "a clip folder with no frames (PNG or JPEG files, e.g. 000.png)"));
        }
        return frames.iter().map(|f| load_image(f, size)).collect();
    }
    if !path.exists() {
        return Err(Error::data(path, None, "no such video file or clip folder"));
    }
    if !has_extension(path, &VIDEO_EXTENSIONS) {
        return Err(Error::data(path, None, "not a video: expected an .mp4 file (H.264) or a folder of PNG/JPEG frames"));
    }
    Ok(read_mp4(path)?.into_iter().map(|f| fit(DynamicImage::ImageRgb8(f), size)).collect())
}

/// The non-hidden entries of `dir`, sorted by name.
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Opens the source a spec names.
pub(super) fn open(spec: &str) -> Result<Source> {
    if spec == super::clips::DATASET {
        return folder(&super::clips::ensure()?, spec);
    }
    let path = Path::new(spec);
    if path.is_dir() {
        folder(path, spec)
    } else if has_extension(path, &["jsonl", "ndjson"]) {
        if !path.is_file() {
            return Err(Error::data(path, None, "no such file"));
        }
        jsonl_file(path)
    } else {
        Err(Error::Config(format!(
            "unknown video dataset {spec:?}: expected {}, a folder with one subfolder of clips (.mp4 files or folders of \
             frames) per class, or a .jsonl file of {{\"video\": path, \"label\": class}} lines{}",
            super::clips::DATASET,
            if path.exists() { "" } else { " (no such file or folder)" }
        )))
    }
}

/// The clips of each class subfolder of `dir`, with the class names (sorted).
fn class_folders(dir: &Path, labels: Option<&[String]>) -> Result<(Vec<String>, Pool)> {
    let classes: Vec<PathBuf> = entries(dir)?.into_iter().filter(|p| p.is_dir()).collect();
    let names: Vec<String> = classes.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    let labels = labels.map_or_else(|| names.clone(), <[String]>::to_vec);
    let mut pool = Pool::default();
    for (class, name) in classes.iter().zip(&names) {
        let target = labels
            .iter()
            .position(|l| l == name)
            .ok_or_else(|| Error::data(class, None, format!("class {name:?} is not among the training classes {}", labels.join(", "))))?;
        for clip in entries(class)? {
            if clip.is_dir() || has_extension(&clip, &VIDEO_EXTENSIONS) {
                pool.clips.push(clip);
                pool.targets.push(target);
            }
        }
    }
    if pool.clips.is_empty() {
        return Err(Error::data(dir, None, "no clips: expected class subfolders holding .mp4 files or folders of frames"));
    }
    Ok((labels, pool))
}

fn folder(root: &Path, name: &str) -> Result<Source> {
    let sub = |n: &str| Some(root.join(n)).filter(|p| p.is_dir());
    let (train, test) = (sub("train"), sub("test"));
    let name = name.to_string();
    match (train, test) {
        (Some(train), Some(test)) => {
            let (labels, train) = class_folders(&train, None)?;
            let (_, test) = class_folders(&test, Some(&labels))?;
            let validation = match sub("val").or_else(|| sub("validation")) {
                Some(dir) => Some(class_folders(&dir, Some(&labels))?.1),
                None => None,
            };
            Ok(Source { name, labels, train, validation, test: Some(test) })
        }
        _ => {
            let (labels, train) = class_folders(root, None)?;
            Ok(Source { name, labels, train, validation: None, test: None })
        }
    }
}

fn jsonl_file(path: &Path) -> Result<Source> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let (mut clips, mut names) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let err = |m: &str| Error::data(path, Some(n + 1), m);
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| err(&format!("not JSON: {e}")))?;
        let video = value.get("video").and_then(|v| v.as_str()).ok_or_else(|| err("no string field \"video\" (a clip path)"))?;
        let label = match value.get("label") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v @ serde_json::Value::Number(_)) => v.to_string(),
            _ => return Err(err("no field \"label\" (a string or number)")),
        };
        clips.push(base.join(video));
        names.push(label);
    }
    if clips.is_empty() {
        return Err(Error::data(path, None, "no clips: expected {\"video\": path, \"label\": class} lines"));
    }
    let mut labels = names.clone();
    labels.sort();
    labels.dedup();
    let targets = names.iter().map(|l| labels.binary_search(l).expect("collected above")).collect();
    Ok(Source { name: path.display().to_string(), labels, train: Pool { clips, targets }, validation: None, test: None })
}
