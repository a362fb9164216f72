//! Visual question answering data: (image, question, answer) triples, split by image.
//!
//! Sources ([`open`]):
//! - `easy-vqa`: the easy-VQA package ([`crate::assets::fetch`]): its train and test
//!   `questions.json` (`[[question, answer, image_id], ..]`) and `images/<id>.png`. The test split
//!   is its test set; the validation split is a seeded share of its training *images* with all
//!   their questions, so no image is in two splits.
//! - a `.jsonl` file of `{"image": path, "question": .., "answer": ..}` lines, image paths
//!   relative to the file's folder: split by image into train, validation and test.
//!
//! Bad input is an error naming the file and line: a line that is not such an object, an empty
//! question or answer, a missing or undecodable image. A validation or test question whose answer
//! no training question has is skipped instead (the model picks among the training answers, so
//! it could never be right), counted in [`VqaSet::skipped`] and reported on stderr.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde_json::Value;

use super::images::load_image;
use crate::{Error, Result};

/// The name of the easy-VQA asset.
pub const EASY_VQA: &str = "easy-vqa";

/// One question about an image of its set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VqaQuestion {
    /// Index into [`VqaSet::images`].
    pub image: usize,
    pub question: String,
    pub answer: String,
}

/// Decoded images (RGB, `size` x `size`) and the questions asked about them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VqaSet {
    pub images: Vec<RgbImage>,
    /// Where each image was read from.
    pub image_paths: Vec<PathBuf>,
    pub questions: Vec<VqaQuestion>,
    /// Questions left out because their answer is not among the training answers.
    pub skipped: usize,
}

impl VqaSet {
    pub fn len(&self) -> usize {
        self.questions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.questions.is_empty()
    }
}

/// A run's splits and its answer set (the training answers, sorted).
#[derive(Clone, Debug)]
pub struct VqaSplits {
    pub answers: Vec<String>,
    pub train: VqaSet,
    pub validation: VqaSet,
    pub test: VqaSet,
}

/// How [`open`] splits and samples.
#[derive(Clone, Debug, PartialEq)]
pub struct VqaOptions {
    /// Side of the decoded square images, in pixels.
    pub image_size: u32,
    /// At most this many questions in the train, validation and test splits (a seeded sample).
    pub questions: [usize; 3],
    /// Share of the training images held out for validation (with all their questions).
    pub validation_share: f64,
    /// Share of a JSONL file's images held out for testing (easy-VQA has its own test set).
    pub test_share: f64,
    /// Share of the sampled training questions kept (sample-efficiency runs).
    pub train_fraction: f64,
    /// Seed of the image split and the question samples.
    pub seed: u64,
}

impl Default for VqaOptions {
    fn default() -> Self {
        Self { image_size: 56, questions: [2000, 200, 500], validation_share: 0.1, test_share: 0.1, train_fraction: 1.0, seed: 0 }
    }
}

/// A question before its image is decoded, with where it was read.
#[derive(Clone, Debug)]
struct Raw {
    image: PathBuf,
    question: String,
    answer: String,
    file: PathBuf,
    /// 1-based line (JSONL) or entry (questions.json).
    line: usize,
}

/// Opens `spec` (`easy-vqa` or a `.jsonl` file) and splits it by image (see the module docs).
pub fn open(spec: &str, options: &VqaOptions) -> Result<VqaSplits> {
    let mut rng = StdRng::seed_from_u64(options.seed ^ 0x7a_9e11_5eed);
    let (train_pool, test_pool) = match spec {
        EASY_VQA => {
            let dir = crate::assets::fetch(EASY_VQA)?;
            (read_easy_vqa(&dir.join("train"))?, read_easy_vqa(&dir.join("test"))?)
        }
        file => {
            let all = read_jsonl(Path::new(file))?;
            let (test, rest) = split_by_image(all, options.test_share, &mut rng);
            (rest, test)
        }
    };
    let (validation, train) = split_by_image(train_pool, options.validation_share, &mut rng);
    let [n_train, n_val, n_test] = options.questions;
    let mut train = sample(train, n_train, &mut rng);
    let kept = ((train.len() as f64 * options.train_fraction).round() as usize).clamp(train.len().min(1), train.len());
    train.truncate(kept);
    let (validation, test) = (sample(validation, n_val, &mut rng), sample(test_pool, n_test, &mut rng));
    if train.is_empty() {
        return Err(Error::data(spec, None, "no training questions: the data has too few images for the validation and test shares"));
    }
    let answers: Vec<String> = train.iter().map(|q| q.answer.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let size = options.image_size;
    let splits = VqaSplits {
        train: decode(train, size, &answers, "training")?,
        validation: decode(validation, size, &answers, "validation")?,
        test: decode(non_empty_test(test, spec)?, size, &answers, "test")?,
        answers,
    };
    if splits.validation.is_empty() {
        return Err(Error::data(spec, None, "the validation split is empty: no validation image has a question with a training answer"));
    }
    Ok(splits)
}

/// `questions`, refused if there are none: a test split must score something.
fn non_empty_test(questions: Vec<Raw>, spec: &str) -> Result<Vec<Raw>> {
    match questions.is_empty() {
        true => Err(Error::data(spec, None, "the test split is empty: the data has too few images for a test share")),
        false => Ok(questions),
    }
}

/// Opens `spec` whole as a test set scored against a run's `answers` (`easy-vqa`: its test set).
pub fn open_test(spec: &str, image_size: u32, answers: &[String]) -> Result<VqaSet> {
    let pool = match spec {
        EASY_VQA => read_easy_vqa(&crate::assets::fetch(EASY_VQA)?.join("test"))?,
        file => read_jsonl(Path::new(file))?,
    };
    decode(non_empty_test(pool, spec)?, image_size, answers, "test")
}

/// Reads one easy-VQA split folder: `questions.json` and `images/<id>.png`.
fn read_easy_vqa(dir: &Path) -> Result<Vec<Raw>> {
    let file = dir.join("questions.json");
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    let entries: Vec<(String, String, u64)> =
        serde_json::from_str(&text).map_err(|e| Error::format(&file, format!("expected [[question, answer, image id], ..]: {e}")))?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, (question, answer, id))| {
            let raw = Raw { image: dir.join("images").join(format!("{id}.png")), question, answer, file: file.clone(), line: i + 1 };
            check(raw)
        })
        .collect()
}

/// Reads a JSONL file of `{"image", "question", "answer"}` lines (blank lines are skipped).
fn read_jsonl(file: &Path) -> Result<Vec<Raw>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |m: String| Error::data(file, Some(i + 1), m);
        let value: Value = serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let field = |name: &str| match value.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(bad(format!("\"{name}\" is not a string: {other}"))),
            None => Err(bad(format!("no \"{name}\" field (each line needs \"image\", \"question\" and \"answer\")"))),
        };
        let image = base.join(field("image")?);
        out.push(check(Raw { image, question: field("question")?, answer: field("answer")?, file: file.to_path_buf(), line: i + 1 })?);
    }
    if out.is_empty() {
        return Err(Error::data(file, None, "no questions: the file is empty"));
    }
    Ok(out)
}

/// Refuses an empty question or answer and a missing image, naming the file and line.
fn check(mut raw: Raw) -> Result<Raw> {
    raw.question = raw.question.trim().to_string();
    raw.answer = raw.answer.trim().to_string();
    let bad = |m: String| Err(Error::data(&raw.file, Some(raw.line), m));
    if raw.question.is_empty() {
        return bad("the question is empty".into());
    }
    if raw.answer.is_empty() {
        return bad("the answer is empty".into());
    }
    if !raw.image.is_file() {
        return bad(format!("image {}: no such file", raw.image.display()));
    }
    Ok(raw)
}

/// Moves the questions of a seeded `share` of the images (at least one if `share > 0` and
/// there are two images or more) into the first part; the rest form the second.
fn split_by_image(questions: Vec<Raw>, share: f64, rng: &mut StdRng) -> (Vec<Raw>, Vec<Raw>) {
    let mut images: Vec<&PathBuf> = questions.iter().map(|q| &q.image).collect::<BTreeSet<_>>().into_iter().collect();
    images.shuffle(rng);
    let n = images.len();
    let held = ((share * n as f64).round() as usize).max(usize::from(share > 0.0 && n >= 2)).min(n.saturating_sub(1));
    let held: BTreeSet<PathBuf> = images[..held].iter().map(|p| (*p).clone()).collect();
    questions.into_iter().partition(|q| held.contains(&q.image))
}

/// At most `n` questions, a seeded sample in a seeded order.
fn sample(mut questions: Vec<Raw>, n: usize, rng: &mut StdRng) -> Vec<Raw> {
    questions.shuffle(rng);
    questions.truncate(n);
    questions
}

/// Decodes the images the questions use (each once, in parallel) and drops (counting them) the
/// questions whose answer is not in `answers`.
fn decode(questions: Vec<Raw>, size: u32, answers: &[String], split: &str) -> Result<VqaSet> {
    let (questions, unanswerable): (Vec<Raw>, Vec<Raw>) = questions.into_iter().partition(|q| answers.binary_search(&q.answer).is_ok());
    if let Some(first) = unanswerable.first() {
        eprintln!(
            "replora: skipped {} {split} question(s) whose answer is not among the {} training answers (first: {}:{} answer {:?})",
            unanswerable.len(),
            answers.len(),
            first.file.display(),
            first.line,
            first.answer
        );
    }
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    let mut first_use: Vec<&Raw> = vec![];
    let mut out = VqaSet { skipped: unanswerable.len(), ..VqaSet::default() };
    for q in &questions {
        let next = index.len();
        let image = *index.entry(q.image.clone()).or_insert_with(|| {
            first_use.push(q);
            next
        });
        out.questions.push(VqaQuestion { image, question: q.question.clone(), answer: q.answer.clone() });
    }
    out.images = first_use
        .par_iter()
        .map(|q| load_image(&q.image, size).map_err(|e| Error::data(&q.file, Some(q.line), format!("image {}: {e}", q.image.display()))))
        .collect::<Result<Vec<_>>>()?;
    out.image_paths = first_use.iter().map(|q| q.image.clone()).collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb};

    /// A folder with `n` distinct 8x8 PNGs `img<i>.png` and a `data.jsonl` of `lines`.
    fn folder(n: usize, lines: &[String]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pics")).unwrap();
        for i in 0..n {
            ImageBuffer::from_fn(8, 8, |x, _| Rgb([(i * 12) as u8, x as u8, 0])).save(dir.path().join(format!("pics/img{i}.png"))).unwrap();
        }
        let file = dir.path().join("data.jsonl");
        std::fs::write(&file, lines.join("\n")).unwrap();
        (dir, file)
    }

    fn line(image: usize, question: &str, answer: &str) -> String {
        serde_json::json!({"image": format!("pics/img{image}.png"), "question": question, "answer": answer}).to_string()
    }

    /// 20 images, three questions each, answers "yes"/"no"/a colour.
    fn good_lines() -> Vec<String> {
        (0..20).flat_map(|i| [line(i, "is it red?", "yes"), line(i, "is it blue?", "no"), line(i, "what colour?", "red")]).collect()
    }

    fn options() -> VqaOptions {
        VqaOptions { image_size: 8, questions: [1000, 1000, 1000], validation_share: 0.2, test_share: 0.2, ..VqaOptions::default() }
    }

    fn images_of(set: &VqaSet) -> BTreeSet<PathBuf> {
        set.questions.iter().map(|q| set.image_paths[q.image].clone()).collect()
    }

    #[test]
    fn a_jsonl_file_splits_by_image_with_paths_relative_to_the_file() {
        let (_dir, file) = folder(20, &good_lines());
        let splits = open(file.to_str().unwrap(), &options()).unwrap();
        let (train, val, test) = (images_of(&splits.train), images_of(&splits.validation), images_of(&splits.test));
        assert_eq!((train.len(), val.len(), test.len()), (13, 3, 4));
        assert!(train.is_disjoint(&val) && train.is_disjoint(&test) && val.is_disjoint(&test));
        assert_eq!(splits.train.len() + splits.validation.len() + splits.test.len(), 60, "every question in one split");
        assert_eq!(splits.answers, ["no", "red", "yes"]);
        assert_eq!(splits.train.images.len(), 13, "each image decoded once");
        assert_eq!(splits.train.images[0].dimensions(), (8, 8));
        // The same seed splits the same way; another seed differently.
        let again = open(file.to_str().unwrap(), &options()).unwrap();
        assert_eq!(images_of(&again.validation), val);
        let other = open(file.to_str().unwrap(), &VqaOptions { seed: 9, ..options() }).unwrap();
        assert_ne!(images_of(&other.validation), val);
    }

    #[test]
    fn caps_and_train_fraction_sample_questions() {
        let (_dir, file) = folder(20, &good_lines());
        let o = VqaOptions { questions: [10, 5, 3], train_fraction: 0.5, ..options() };
        let splits = open(file.to_str().unwrap(), &o).unwrap();
        assert_eq!((splits.train.len(), splits.validation.len(), splits.test.len()), (5, 5, 3));
    }

    #[test]
    fn bad_lines_are_errors_naming_the_file_and_line() {
        let cases = [
            (line(0, "  ", "yes"), "the question is empty"),
            (line(0, "q?", ""), "the answer is empty"),
            (line(7, "q?", "yes"), "no such file"),
            (r#"{"image": "pics/img0.png", "question": "q?"}"#.to_string(), "no \"answer\" field"),
            (r#"{"image": 3, "question": "q?", "answer": "a"}"#.to_string(), "\"image\" is not a string"),
            ("not json".to_string(), "not a JSON object"),
        ];
        for (bad, expected) in cases {
            let lines = [line(0, "q?", "yes"), bad.clone()];
            let (_dir, file) = folder(2, &lines);
            let e = read_jsonl(&file).unwrap_err().to_string();
            assert!(e.contains(&format!("{}:2:", file.display())) && e.contains(expected), "{bad}: {e}");
        }
    }

    #[test]
    fn an_undecodable_image_is_an_error_naming_the_line_and_the_image() {
        let (dir, file) = folder(20, &good_lines());
        std::fs::write(dir.path().join("pics/img3.png"), b"not a png").unwrap();
        let e = open(file.to_str().unwrap(), &options()).unwrap_err().to_string();
        assert!(e.contains(file.to_str().unwrap()) && e.contains("img3.png") && e.contains("PNG or JPEG"), "{e}");
    }

    #[test]
    fn questions_with_answers_never_seen_in_training_are_counted_and_skipped() {
        let (_dir, file) = folder(20, &good_lines());
        let answers = ["no".to_string(), "yes".to_string()];
        let test = open_test(file.to_str().unwrap(), 8, &answers).unwrap();
        assert_eq!((test.len(), test.skipped), (40, 20), "the 20 \"red\" answers are skipped");
        assert!(test.questions.iter().all(|q| q.answer != "red"));
    }
}
