//! Image sources: what a spec names (`cifar10`, `fashion-mnist`, a folder, a `.jsonl` file) as
//! pools of labelled, not yet decoded images.
//!
//! Nothing is decoded here: an [`Item`] is a file path, a base64 string or a slice of a shared
//! pixel buffer, decoded by [`Item::decode`] only once the protocol has picked it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use image::{DynamicImage, GrayImage, RgbImage};

use super::decode::{decode, fit, load_image};
use super::idx;
use crate::data::{bigbench, unknown_label_message};
use crate::{Error, Result};

/// Fashion-MNIST's classes, by label id.
pub(super) const FASHION_MNIST_LABELS: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The file extensions read as images in folders.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// One image, not decoded yet.
#[derive(Clone, Debug)]
pub(super) enum Item {
    /// A PNG or JPEG file.
    File(PathBuf),
    /// A base64-encoded PNG/JPEG: example `example` (1-based) of `file`.
    Base64 { file: Arc<PathBuf>, example: usize, text: String },
    /// 8-bit grey pixels, row-major, image `index` of a shared buffer read from `file`.
    Grey { data: Arc<Vec<u8>>, index: usize, width: u32, height: u32 },
}

impl Item {
    /// The image as the model's input (see [`fit`]); errors name the file (and example).
    pub(super) fn decode(&self, size: u32) -> Result<RgbImage> {
        match self {
            Item::File(path) => load_image(path, size),
            Item::Base64 { file, example, text } => {
                let err = |m: String| Error::data(file.as_path(), None, format!("example {example}: {m}"));
                // The image is the last whitespace-separated token (a text prefix, if any, goes).
                let encoded = text.split_whitespace().last().unwrap_or("");
                let encoded = encoded.rsplit_once("base64,").map_or(encoded, |(_, b)| b); // a data: URL
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| err(format!("the input is not a base64 image ({e})")))?;
                Ok(fit(decode(&bytes).map_err(err)?, size))
            }
            Item::Grey { data, index, width, height } => {
                let len = (*width * *height) as usize;
                let pixels = data[index * len..(index + 1) * len].to_vec();
                let grey = GrayImage::from_raw(*width, *height, pixels).expect("pixel count checked when the file was read");
                Ok(fit(DynamicImage::ImageLuma8(grey), size))
            }
        }
    }
}

/// Labelled images: `targets[i]` is the class id of `items[i]`.
#[derive(Clone, Debug, Default)]
pub(super) struct Pool {
    pub items: Vec<Item>,
    pub targets: Vec<usize>,
}

impl Pool {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    fn push(&mut self, item: Item, target: usize) {
        self.items.push(item);
        self.targets.push(target);
    }
}

/// An opened source: its classes and its pools. `test` (and `validation`) exist where the
/// source comes split; otherwise every split is drawn from `train`.
#[derive(Clone, Debug)]
pub(super) struct Source {
    /// The spec it was opened from, for messages.
    pub name: String,
    pub labels: Vec<String>,
    pub train: Pool,
    pub validation: Option<Pool>,
    pub test: Option<Pool>,
}

/// Opens the source a spec names: `cifar10`, `fashion-mnist`, a `.jsonl`/`.ndjson` file, or a
/// folder (one subfolder per class, or `train/`, `test/` and optionally `val/` of those).
pub(super) fn open(spec: &str) -> Result<Source> {
    match spec {
        "cifar10" => return cifar10(),
        "fashion-mnist" | "fashion_mnist" => return fashion_mnist(),
        _ => {}
    }
    let path = Path::new(spec);
    let jsonl =
        path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson"));
    if path.is_dir() {
        folder(path)
    } else if jsonl {
        if !path.is_file() {
            return Err(Error::data(path, None, "no such file"));
        }
        jsonl_file(path)
    } else {
        Err(Error::Config(format!(
            "unknown image dataset {spec:?}: expected cifar10, fashion-mnist, a folder with one subfolder of PNG/JPEG images \
             per class, or a .jsonl file of {{\"image\": path, \"label\": class}} lines{}",
            if path.exists() { "" } else { " (no such file or folder)" }
        )))
    }
}

/// CIFAR-10's 10,000 test images, from BIG-bench's `cifar10_classification/base64` (one pool).
fn cifar10() -> Result<Source> {
    let path = crate::assets::fetch("bigbench:cifar10_classification/base64")?;
    let (examples, numbers) = bigbench::read(&path, false)?;
    let labels: Vec<String> = examples.iter().map(|e| e.label.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let file = Arc::new(path);
    let mut pool = Pool::default();
    for (example, n) in examples.into_iter().zip(numbers) {
        let target = labels.binary_search(&example.label).expect("labels collected above");
        pool.push(Item::Base64 { file: Arc::clone(&file), example: n, text: example.text }, target);
    }
    Ok(Source { name: "cifar10".into(), labels, train: pool, validation: None, test: None })
}

/// Fashion-MNIST from its Debian package: the 60,000 training and 10,000 test images.
fn fashion_mnist() -> Result<Source> {
    let dir = crate::assets::fetch("fashion-mnist")?;
    let pool = |prefix: &str| -> Result<Pool> {
        let images_path = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
        let labels_path = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
        let images = idx::read(&images_path, 3)?;
        let labels = idx::read(&labels_path, 1)?;
        let (n, height, width) = (images.dims[0], images.dims[1], images.dims[2]);
        if labels.dims[0] != n {
            return Err(Error::data(
                &labels_path,
                None,
                format!("{} labels for the {n} images of {}", labels.dims[0], images_path.display()),
            ));
        }
        if let Some(i) = labels.data.iter().position(|&l| usize::from(l) >= FASHION_MNIST_LABELS.len()) {
            return Err(Error::data(&labels_path, None, format!("label {} of image {i} is not a class id (0-9)", labels.data[i])));
        }
        let data = Arc::new(images.data);
        let (width, height) = (width as u32, height as u32);
        let items = (0..n).map(|index| Item::Grey { data: Arc::clone(&data), index, width, height }).collect();
        Ok(Pool { items, targets: labels.data.iter().map(|&l| usize::from(l)).collect() })
    };
    Ok(Source {
        name: "fashion-mnist".into(),
        labels: FASHION_MNIST_LABELS.iter().map(|s| s.to_string()).collect(),
        train: pool("train")?,
        validation: None,
        test: Some(pool("t10k")?),
    })
}

/// The non-hidden subfolders of `dir`, sorted by name.
fn subfolders(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// A folder of class subfolders; or, where it has `train/` and `test/`, those as pools (with
/// `val/` or `validation/` as the validation pool if present), classes from `train/`.
fn folder(root: &Path) -> Result<Source> {
    let subs = subfolders(root)?;
    let has = |name: &str| subs.iter().any(|s| s == name);
    let name = root.display().to_string();
    if has("train") && has("test") {
        let (labels, train) = class_folders(&root.join("train"), None)?;
        let test = class_folders(&root.join("test"), Some(&labels))?.1;
        let validation = match ["val", "validation"].into_iter().find(|v| has(v)) {
            Some(v) => Some(class_folders(&root.join(v), Some(&labels))?.1),
            None => None,
        };
        return Ok(Source { name, labels, train, validation, test: Some(test) });
    }
    if has("train") || has("test") {
        return Err(Error::data(
            root,
            None,
            "has a train/ or test/ subfolder but not both: a split folder needs train/ and test/ (val/ optional); an unsplit \
             one has only class subfolders",
        ));
    }
    let (labels, train) = class_folders(root, None)?;
    Ok(Source { name, labels, train, validation: None, test: None })
}

/// The images of `dir`'s class subfolders. With `known` labels, a subfolder must be one of them
/// (and the labels are those); otherwise the labels are the subfolder names, sorted.
fn class_folders(dir: &Path, known: Option<&[String]>) -> Result<(Vec<String>, Pool)> {
    let classes = subfolders(dir)?;
    if classes.is_empty() {
        return Err(Error::data(dir, None, "no class subfolders: expected one subfolder of PNG/JPEG images per class"));
    }
    let labels = known.map_or_else(|| classes.clone(), <[String]>::to_vec);
    let mut pool = Pool::default();
    for class in &classes {
        let target = labels.iter().position(|l| l == class).ok_or_else(|| {
            Error::data(
                dir.join(class),
                None,
                format!("class folder not among the training classes: {}", unknown_label_message(class, &labels)),
            )
        })?;
        let class_dir = dir.join(class);
        let files = crate::data::files_with(&class_dir, &IMAGE_EXTENSIONS)?;
        if files.is_empty() {
            return Err(Error::data(&class_dir, None, "class folder has no PNG/JPEG images (.png, .jpg, .jpeg)"));
        }
        for file in files {
            pool.push(Item::File(file), target);
        }
    }
    Ok((labels, pool))
}

/// A JSONL file of `{"image": "<path>", "label": "<class>"}` lines; a relative path is relative
/// to the file's folder. Blank lines are skipped. Labels are the classes found, sorted.
fn jsonl_file(path: &Path) -> Result<Source> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rows: Vec<(PathBuf, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |m: String| Error::data(path, Some(n), m);
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| err(format!("invalid JSON ({e})")))?;
        let field = |key: &str, what: &str| -> Result<String> {
            match value.get(key) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(serde_json::Value::Number(x)) if key == "label" => Ok(x.to_string()),
                Some(_) => Err(err(format!("\"{key}\" must be a non-empty string ({what})"))),
                None => Err(err(format!("missing \"{key}\" ({what}); each line is {{\"image\": path, \"label\": class}}"))),
            }
        };
        let image = base.join(field("image", "a path to a PNG/JPEG file")?);
        let label = field("label", "the class name")?;
        if !image.is_file() {
            return Err(err(format!("image file {} not found", image.display())));
        }
        rows.push((image, label));
    }
    if rows.is_empty() {
        return Err(Error::data(path, None, "no images: the file has no {\"image\", \"label\"} lines"));
    }
    let labels: Vec<String> = rows.iter().map(|(_, l)| l.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut pool = Pool::default();
    for (image, label) in rows {
        let target = labels.binary_search(&label).expect("labels collected above");
        pool.push(Item::File(image), target);
    }
    Ok(Source { name: path.display().to_string(), labels, train: pool, validation: None, test: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb};

    fn png(path: &Path, shade: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        ImageBuffer::from_pixel(6, 4, Rgb([shade, 0, 255 - shade])).save(path).unwrap();
    }

    #[test]
    fn class_folders_are_sorted_classes() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("zebra/a.png"), 1);
        png(&dir.path().join("cat/b.PNG"), 2);
        png(&dir.path().join("cat/a.png"), 3);
        std::fs::write(dir.path().join("cat/notes.txt"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join(".hidden")).unwrap();
        let source = open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(source.labels, ["cat", "zebra"]);
        assert_eq!(source.train.targets, [0, 0, 1]);
        assert!(source.test.is_none());
        assert_eq!(source.train.items[0].decode(4).unwrap().get_pixel(0, 0).0, [3, 0, 252]);
    }

    #[test]
    fn split_folders_are_pools() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("train/a/1.png"), 1);
        png(&dir.path().join("train/b/1.png"), 1);
        png(&dir.path().join("test/b/1.png"), 1);
        png(&dir.path().join("val/a/1.png"), 1);
        let source = open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(source.labels, ["a", "b"]);
        assert_eq!(source.test.unwrap().targets, [1]);
        assert_eq!(source.validation.unwrap().targets, [0]);

        png(&dir.path().join("test/c/1.png"), 1);
        let err = open(dir.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("test/c") && err.contains("unknown label \"c\"; known labels: a, b"), "{err}");
    }

    #[test]
    fn empty_folders_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(dir.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()) && err.contains("no class subfolders"), "{err}");
        png(&dir.path().join("cat/a.png"), 1);
        std::fs::create_dir_all(dir.path().join("dog")).unwrap();
        std::fs::write(dir.path().join("dog/readme.md"), "x").unwrap();
        let err = open(dir.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("/dog") && err.contains("no PNG/JPEG images"), "{err}");
        std::fs::create_dir_all(dir.path().join("train")).unwrap();
        let err = open(dir.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn jsonl_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("img/x.png"), 9);
        let abs = dir.path().join("img/y.png");
        png(&abs, 10);
        let list = dir.path().join("list.jsonl");
        let lines =
            format!("{{\"image\": \"img/x.png\", \"label\": \"b\"}}\n\n{{\"image\": {:?}, \"label\": 3}}\n", abs.display().to_string());
        std::fs::write(&list, lines).unwrap();
        let source = open(list.to_str().unwrap()).unwrap();
        assert_eq!(source.labels, ["3", "b"]);
        assert_eq!(source.train.targets, [1, 0]);
        assert!(matches!(&source.train.items[0], Item::File(p) if p == &dir.path().join("img/x.png")));
    }

    #[test]
    fn bad_jsonl_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("x.png"), 9);
        let list = dir.path().join("list.jsonl");
        for (content, line, needle) in [
            ("{\"image\": \"x.png\", \"label\": \"a\"}\n{\"image\": \"x.png\"}\n", 2, "missing \"label\""),
            ("\n{\"label\": \"a\"}\n", 2, "missing \"image\""),
            ("{\"image\": \"nope.png\", \"label\": \"a\"}\n", 1, "nope.png not found"),
            ("{\"image\": \"x.png\", \"label\": \"a\"}\n{oops\n", 2, "invalid JSON"),
            ("{\"image\": 3, \"label\": \"a\"}\n", 1, "\"image\" must be a non-empty string"),
        ] {
            std::fs::write(&list, content).unwrap();
            let err = open(list.to_str().unwrap()).unwrap_err();
            assert!(matches!(err, Error::Data { line: Some(l), .. } if l == line), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("list.jsonl:{line}:")) && msg.contains(needle), "{msg}");
        }
        std::fs::write(&list, "\n").unwrap();
        assert!(open(list.to_str().unwrap()).unwrap_err().to_string().contains("no images"));
    }

    #[test]
    fn unknown_specs_say_what_is_accepted() {
        let err = open("/nonexistent/images").unwrap_err().to_string();
        assert!(err.contains("cifar10, fashion-mnist") && err.contains("no such file or folder"), "{err}");
        assert!(open("/nonexistent/list.jsonl").unwrap_err().to_string().contains("no such file"));
    }

    #[test]
    fn base64_items_decode_and_name_their_example() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        png(&path, 50);
        let text = format!("An image: {}", base64::engine::general_purpose::STANDARD.encode(std::fs::read(&path).unwrap()));
        let file = Arc::new(PathBuf::from("task.json"));
        let item = Item::Base64 { file: Arc::clone(&file), example: 7, text };
        assert_eq!(item.decode(4).unwrap().get_pixel(1, 1).0, [50, 0, 205]);
        let bytes = std::fs::read(&path).unwrap();
        let cut = base64::engine::general_purpose::STANDARD.encode(&bytes[..bytes.len() - 20]);
        let err = Item::Base64 { file: Arc::clone(&file), example: 12, text: cut }.decode(4).unwrap_err().to_string();
        assert!(err.contains("task.json: example 12: cannot decode the PNG image"), "{err}");
        let err = Item::Base64 { file, example: 3, text: "%%%".into() }.decode(4).unwrap_err().to_string();
        assert!(err.contains("example 3: the input is not a base64 image"), "{err}");
    }

    #[test]
    fn grey_items_become_rgb() {
        let data = Arc::new((0..8u8).collect::<Vec<_>>());
        let item = Item::Grey { data, index: 1, width: 2, height: 2 };
        let image = item.decode(2).unwrap();
        assert_eq!(image.get_pixel(1, 1).0, [7, 7, 7]);
    }
}
