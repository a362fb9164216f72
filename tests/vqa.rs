//! Visual question answering on a tiny ViT and a tiny LLaMA: the visual tokens reach the
//! decoder, the cached image features are the freshly computed ones, and the fast one-token
//! answer scoring equals scoring each answer as a sequence.

mod support;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use replora::data::images::load_image;
use replora::tasks::Task;
use replora::tasks::vqa::{Vqa, VqaSpec};
use replora::tasks::vqa_model::{answer_scores, sequence_answer_scores, single_token_scores};

/// Tiny models and a JSONL of questions about 12 images of three colours (answers `w10`, `w11`,
/// `w12`: one token each in the tiny word tokenizer).
struct Fixture {
    _dir: tempfile::TempDir,
    spec: VqaSpec,
    images: PathBuf,
}

/// A tiny LLaMA with room for visual tokens (64 positions).
fn tiny_llama(dir: &Path) {
    support::tiny_llama_model(dir);
    let file = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    config["max_position_embeddings"] = 64.into();
    std::fs::write(&file, config.to_string()).unwrap();
}

/// `n` 20x20 images `pics/<i>.png`, image `i` mostly in colour channel `i % 3`, with a
/// position-dependent pattern so that no two are equal, and two questions each.
pub fn vqa_folder(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir.join("pics")).unwrap();
    let mut lines = String::new();
    for i in 0..n {
        let image = image::RgbImage::from_fn(20, 20, |x, y| {
            let mut px = [30u8, 30, 30];
            px[i % 3] = 200;
            px[(i + 1) % 3] = ((x * 7 + y * 3 + i as u32 * 11) % 60) as u8;
            image::Rgb(px)
        });
        image.save(dir.join(format!("pics/{i}.png"))).unwrap();
        for question in ["w1 w2", "w3 w4 w5"] {
            let answer = format!("w{}", 10 + i % 3);
            lines += &format!("{}\n", serde_json::json!({"image": format!("pics/{i}.png"), "question": question, "answer": answer}));
        }
    }
    let file = dir.join("data.jsonl");
    std::fs::write(&file, lines).unwrap();
    file
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (llama, vit) = (dir.path().join("llama"), dir.path().join("vit"));
    tiny_llama(&llama);
    support::tiny_dinov2(&vit);
    let data = vqa_folder(dir.path(), 12);
    let spec = VqaSpec {
        model: llama.to_str().unwrap().into(),
        vision_model: vit.to_str().unwrap().into(),
        data: data.to_str().unwrap().into(),
        image_size: 16,
        validation_share: 0.25,
        test_share: 0.25,
        ..VqaSpec::default()
    };
    Fixture { images: dir.path().join("pics"), _dir: dir, spec }
}

#[test]
fn visual_tokens_reach_the_decoder_answers_change_with_the_image() {
    let f = fixture();
    let device = Device::flex();
    let task = Vqa::open(f.spec.clone(), &device).unwrap();
    let data = task.data().unwrap();
    let model = task.build(&data).unwrap();
    let prompt = data.validation.questions[0].1.clone();
    // The same question about every training image: the answer scores differ between images.
    let features = &data.train_features;
    let questions: Vec<(usize, Vec<u32>)> = (0..features.len()).map(|i| (i, prompt.clone())).collect();
    let scores = single_token_scores(&model, features, &questions, &data.answer_tokens, 4, &device);
    let first = &scores[0];
    let largest = scores.iter().map(|s| s.iter().zip(first).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)).fold(0.0, f64::max);
    assert!(largest > 1e-4, "the answer scores do not depend on the image: {scores:?}");
    // And the same image gives the same scores (no other source of variation).
    let again = single_token_scores(&model, features, &questions[..1], &data.answer_tokens, 4, &device);
    assert_eq!(again[0], scores[0]);
}

#[test]
fn cached_features_equal_freshly_computed_ones_and_each_image_is_computed_once() {
    let f = fixture();
    let device = Device::flex();
    let task = Vqa::open(f.spec.clone(), &device).unwrap();
    let data = task.data().unwrap();
    let train = &data.splits.train;
    let cached = &data.train_features;
    assert_eq!(cached.len(), train.image_paths.len(), "one feature row per distinct image");
    assert!(train.questions.len() > cached.len(), "images with several questions are computed once");
    for (i, path) in train.image_paths.iter().enumerate() {
        assert!(path.starts_with(&f.images), "{}", path.display());
        let fresh = task.features(&[load_image(path, 16).unwrap()]);
        let diff = support::max_abs_diff(cached.image(i), fresh.image(0));
        assert!(diff < 1e-5, "image {i} ({}): cached features differ from fresh ones by {diff}", path.display());
    }
    // The features of different images differ (the comparison above can fail).
    assert!(support::max_abs_diff(cached.image(0), cached.image(1)) > 1e-3);
}

#[test]
fn answer_scoring_off_the_next_token_distribution_equals_scoring_each_answer_as_a_sequence() {
    let f = fixture();
    let device = Device::flex();
    let task = Vqa::open(f.spec.clone(), &device).unwrap();
    let data = task.data().unwrap();
    let model = task.build(&data).unwrap();
    let (features, questions) = (&data.validation.features, &data.validation.questions);
    assert!(data.answer_tokens.iter().all(|a| a.len() == 1), "{:?}", data.answer_tokens);
    let fast = single_token_scores(&model, features, questions, &data.answer_tokens, 3, &device);
    let slow = sequence_answer_scores(&model, features, questions, &data.answer_tokens, 5, &device);
    assert_eq!(fast.len(), questions.len());
    let close = |fast: &[Vec<f64>], slow: &[Vec<f64>]| {
        for (a, b) in fast.iter().zip(slow) {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
            }
        }
    };
    close(&fast, &slow);
    // A set mixing one-token and two-token answers (as " teal" is two SmolLM2 tokens).
    let mut mixed = data.answer_tokens.clone();
    mixed.insert(1, vec![mixed[0][0], mixed[2][0]]);
    let slow = sequence_answer_scores(&model, features, questions, &mixed, 5, &device);
    close(&answer_scores(&model, features, questions, &mixed, 4, &device), &slow);
    assert!(slow.iter().all(|s| s[1] < s[0]), "the two-token answer is scored as both its tokens: {slow:?}");
}

#[test]
fn batched_greedy_answers_equal_generation_over_a_key_value_cache() {
    let f = fixture();
    let device = Device::flex();
    let task = Vqa::open(f.spec.clone(), &device).unwrap();
    let data = task.data().unwrap();
    let model = task.build(&data).unwrap();
    let (features, questions) = (&data.train_features, &data.validation.questions);
    // Questions of different lengths in one batch, about several images.
    let questions: Vec<(usize, Vec<u32>)> = questions.iter().enumerate().map(|(k, (_, p))| (k % features.len(), p.clone())).collect();
    let batched = model.generate(features, &questions, 4, &[2], 3, &device);
    let llama = &model.decoder.model;
    let sampling = replora::generate::Sampling { max_new_tokens: 4, stop: vec![2], ..Default::default() };
    for ((image, prompt), answer) in questions.iter().zip(&batched) {
        let visual = model.projector.forward(features.batch(&[*image], &device));
        let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        let text = llama.embed(Tensor::<2, Int>::from_data(TensorData::new(ids, [1, prompt.len()]), &device));
        let deltas = model.decoder.deltas();
        let one = replora::generate::generate_after(llama, &deltas, Tensor::cat(vec![visual, text], 1), &sampling, &device, &mut |_| {});
        assert_eq!(&one, answer, "question {prompt:?} about image {image}");
    }
    assert!(batched.iter().any(|a| !a.is_empty()), "something was generated: {batched:?}");
}
