//! Video input and the video transformer: the H.264 decoder on good, corrupt, truncated, empty
//! and too-short clips; frame folders; the zero-initialised temporal parts making the untrained
//! video model equal the image ViT's frame-averaged features; and the temporal parts' gradients
//! against central finite differences.

mod support;

use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use image::RgbImage;
use replora::adapters::{BaseWeight, Deltas};
use replora::data::video::{self, clips};
use replora::models::dinov2::Dinov2;
use replora::models::video_vit::VideoVit;
use support::tiny_dinov2;

/// A clip of a moving garment-like pattern (the dataset's own renderer), 32 x 32.
fn moving_clip(class: usize) -> Vec<RgbImage> {
    let garment = RgbImage::from_fn(28, 28, |x, y| image::Rgb([if (6..22).contains(&x) && (4..24).contains(&y) { 200 } else { 0 }; 3]));
    clips::clip_frames(&garment, class, 1, 0)
}

fn max_and_mean_error(a: &[RgbImage], b: &[RgbImage]) -> (u8, f64) {
    let (mut max, mut sum, mut n) = (0u8, 0.0, 0usize);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.as_raw().iter().zip(y.as_raw()) {
            max = max.max(p.abs_diff(*q));
            sum += f64::from(p.abs_diff(*q));
            n += 1;
        }
    }
    (max, sum / n as f64)
}

#[test]
fn mp4_files_round_trip_through_the_h264_decoder() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clip.mp4");
    let frames = moving_clip(1);
    video::write_mp4(&path, &frames).unwrap();
    let back = video::read_mp4(&path).unwrap();
    assert_eq!(back.len(), frames.len(), "every frame comes back");
    assert_eq!(back[0].dimensions(), (32, 32));
    let (max, mean) = max_and_mean_error(&frames, &back);
    assert!(max <= 40 && mean < 2.0, "lossy but close: max {max}, mean {mean:.2}");
    // The motion survives: the frames differ, in order.
    assert!(max_and_mean_error(&back[..1], &back[15..]).1 > 10.0);
    // Resized to the model's size as images are.
    let resized = video::load_clip(&path, 16).unwrap();
    assert_eq!((resized.len(), resized[3].dimensions()), (16, (16, 16)));
}

#[test]
fn frame_folders_are_clips_in_name_order() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = moving_clip(2);
    for (i, f) in frames.iter().enumerate().take(5) {
        f.save(tmp.path().join(format!("{i:03}.png"))).unwrap();
    }
    let clip = video::load_clip(tmp.path(), 32).unwrap();
    assert_eq!(clip, frames[..5].to_vec(), "PNG frames are lossless and in order");
    let empty = tempfile::tempdir().unwrap();
    let e = video::load_clip(empty.path(), 32).unwrap_err().to_string();
    assert!(e.contains("no frames") && e.contains(&empty.path().display().to_string()), "{e}");
}

fn error_of(path: &Path) -> String {
    video::read_mp4(path).unwrap_err().to_string()
}

#[test]
fn corrupt_truncated_and_empty_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.mp4");
    video::write_mp4(&good, &moving_clip(0)).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let truncated = tmp.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = error_of(&truncated);
    assert!(e.contains("truncated.mp4"), "{e}");

    let text = tmp.path().join("notes.mp4");
    std::fs::write(&text, "hello, not a video").unwrap();
    let e = error_of(&text);
    assert!(e.contains("notes.mp4") && e.contains("not a readable MP4"), "{e}");

    // The container intact, the coded frames overwritten with noise.
    let mut garbled = bytes.clone();
    let mdat = garbled.windows(4).position(|w| w == b"mdat").unwrap();
    for (i, b) in garbled[mdat + 8..mdat + 400].iter_mut().enumerate() {
        *b = (i * 97 % 251) as u8;
    }
    let garbled_path = tmp.path().join("garbled.mp4");
    std::fs::write(&garbled_path, &garbled).unwrap();
    if let Err(e) = video::read_mp4(&garbled_path) {
        assert!(e.to_string().contains("garbled.mp4"), "{e}");
    }

    // An MP4 whose video track has no frames.
    let empty = tmp.path().join("empty.mp4");
    let mut out = std::io::Cursor::new(Vec::new());
    let brand = |b: &str| b.parse::<mp4::FourCC>().unwrap();
    let config = mp4::Mp4Config { major_brand: brand("isom"), minor_version: 512, compatible_brands: vec![brand("isom")], timescale: 1000 };
    let mut writer = mp4::Mp4Writer::write_start(&mut out, &config).unwrap();
    let avc = mp4::AvcConfig { width: 32, height: 32, seq_param_set: vec![0x67, 0x42, 0, 10], pic_param_set: vec![0x68, 0xce] };
    let track = mp4::TrackConfig {
        track_type: mp4::TrackType::Video,
        timescale: 8000,
        language: "und".into(),
        media_conf: mp4::MediaConfig::AvcConfig(avc),
    };
    writer.add_track(&track).unwrap();
    writer.write_end().unwrap();
    drop(writer);
    std::fs::write(&empty, out.into_inner()).unwrap();
    let e = error_of(&empty);
    assert!(e.contains("empty.mp4") && e.contains("no frames"), "{e}");

    // Too short for the frames a run samples.
    let e = video::decode_clip(&good, 16, 17).unwrap_err().to_string();
    assert!(e.contains("good.mp4") && e.contains("16 frames, fewer than the 17"), "{e}");
    let e = video::load_clip(&tmp.path().join("clip.avi"), 16).unwrap_err().to_string();
    assert!(e.contains("clip.avi"), "{e}");
}

#[test]
fn frames_are_sampled_uniformly_with_a_random_offset_in_training() {
    assert_eq!(video::frame_indices(16, 4, 0.5), [2, 6, 10, 14]);
    assert_eq!(video::frame_indices(16, 4, 0.0), [0, 4, 8, 12]);
    assert_eq!(video::frame_indices(16, 4, 0.999), [3, 7, 11, 15]);
    assert_eq!(video::frame_indices(3, 3, 0.5), [0, 1, 2]);
}

/// Deterministic values in about [-scale, scale].
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            scale * 2.0 * ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        })
        .collect()
}

fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn tiny_video(frames: usize, device: &Device) -> (tempfile::TempDir, Dinov2, VideoVit) {
    let tmp = tempfile::tempdir().unwrap();
    tiny_dinov2(tmp.path());
    let image = Dinov2::load(tmp.path(), "", device).unwrap();
    let video = VideoVit::from_image(image.clone(), frames);
    (tmp, image, video)
}

fn flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

#[test]
fn the_untrained_video_model_is_the_frame_averaged_image_vit() {
    let device = Device::flex();
    let (b, t, s) = (2, 3, 16);
    let (_tmp, image, video) = tiny_video(t, &device);
    let pixels = tensor(values(b * t * 3 * s * s, 7, 2.0), [b, t, 3, s, s], &device);
    let ours = flat(video.features(pixels.clone(), &Deltas::none()));
    let per_frame = image.forward(pixels.clone().reshape([b * t, 3, s, s]), &Deltas::none());
    let cls = per_frame.narrow(1, 0, 1).reshape([b, t, 16]).mean_dim(1).reshape([b, 16]);
    let expected = flat(cls);
    let diff = ours.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "video features differ from the frame-averaged image features by {diff}");

    // The equality comes from the zero-initialised parts: opening either one changes the output.
    let mut opened = video.clone();
    opened.temporal[1].fc.weight = BaseWeight::Dense(Param::from_tensor(tensor(values(256, 3, 0.3), [16, 16], &device)));
    let moved = flat(opened.features(pixels.clone(), &Deltas::none()));
    assert!(moved.iter().zip(&expected).any(|(a, b)| (a - b).abs() > 1e-3), "a non-zero temporal_fc must change the features");
    let mut timed = video.clone();
    timed.time_embeddings = Param::from_tensor(tensor(values(t * 16, 4, 0.5), [t, 16], &device));
    let moved = flat(timed.features(pixels, &Deltas::none()));
    assert!(moved.iter().zip(&expected).any(|(a, b)| (a - b).abs() > 1e-3), "time embeddings must change the features");
}

/// A copy of `v` with entry `i` moved by `delta`, as a parameter.
fn nudged<const D: usize>(v: Tensor<D>, i: usize, delta: f32) -> Param<Tensor<D>> {
    let (shape, device) = (v.shape(), v.device());
    let mut data = flat(v);
    data[i] += delta;
    Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), &device))
}

/// The temporal parts each get a non-zero value (so that every one of them has a gradient),
/// then `which` entry `i` nudged by `delta`.
fn set_temporal(mut m: VideoVit, which: &str, i: usize, delta: f32) -> VideoVit {
    let layer = &mut m.temporal[0];
    match which {
        "fc" => layer.fc.weight = BaseWeight::Dense(nudged(layer.fc.weight.dense(), i, delta)),
        "query" => layer.query.weight = BaseWeight::Dense(nudged(layer.query.weight.dense(), i, delta)),
        "value" => layer.value.weight = BaseWeight::Dense(nudged(layer.value.weight.dense(), i, delta)),
        "norm" => layer.norm.weight = nudged(layer.norm.weight.val(), i, delta),
        "time" => m.time_embeddings = nudged(m.time_embeddings.val(), i, delta),
        other => panic!("unknown part {other}"),
    }
    m
}

#[test]
fn temporal_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    let (b, t, s) = (1, 3, 16);
    let (_tmp, _, mut video) = tiny_video(t, &device);
    for layer in &mut video.temporal {
        layer.fc.weight = BaseWeight::Dense(Param::from_tensor(tensor(values(256, 9, 0.4), [16, 16], &device)));
    }
    video.time_embeddings = Param::from_tensor(tensor(values(t * 16, 5, 0.5), [t, 16], &device));
    let pixels = tensor(values(b * t * 3 * s * s, 11, 2.0), [b, t, 3, s, s], &device);
    let weights = tensor(values(b * 16, 13, 1.0), [b, 16], &device);
    let loss = |m: &VideoVit| (m.features(pixels.clone(), &Deltas::none()) * weights.clone()).sum();
    let grads = loss(&video).backward();
    let eps = 1e-2f32;
    let mut checked = 0;
    for which in ["fc", "query", "value", "norm", "time"] {
        let layer = &video.temporal[0];
        let grad = match which {
            "fc" => layer.fc.weight.dense().grad(&grads).map(flat),
            "query" => layer.query.weight.dense().grad(&grads).map(flat),
            "value" => layer.value.weight.dense().grad(&grads).map(flat),
            "norm" => layer.norm.weight.val().grad(&grads).map(flat),
            _ => video.time_embeddings.val().grad(&grads).map(flat),
        };
        let grad = grad.unwrap_or_else(|| panic!("{which}: no gradient"));
        for i in (0..grad.len()).step_by(grad.len() / 6 + 1) {
            let at = |d: f32| flat(loss(&set_temporal(video.clone(), which, i, d)))[0];
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            let err = (fd - grad[i]).abs() / grad[i].abs().max(1.0);
            assert!(err < 2e-2, "{which}[{i}]: autodiff {} vs finite differences {fd}", grad[i]);
            checked += 1;
        }
        assert!(grad.iter().any(|g| g.abs() > 1e-6), "{which}: the gradient is zero everywhere");
    }
    assert!(checked >= 25);
}
