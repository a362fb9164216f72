//! Datasets: labelled texts for classification (loading, splitting, tokenizing, batching) and
//! BIG-bench multiple-choice questions for decoders ([`bigbench::read_choices`]).
//!
//! - [`jsonl`], [`csv`], [`bigbench`]: loaders; [`load`] picks one by file extension or
//!   [`LoadOptions::format`].
//! - [`split`]: deterministic stratified train/validation/test splits and training subsamples.
//! - [`tokenize`]: a [`Tokenizer`] over a model's `tokenizer.json` and padded [`Batch`]es.
//! - [`images`]: labelled image datasets (CIFAR-10, Fashion-MNIST, folders, JSONL), their
//!   train/validation/test protocol and normalized image batches.
//! - [`vqa`]: visual question answering (easy-VQA, JSONL of image/question/answer), split by image.
//!
//! ```no_run
//! use replora::data::{self, LoadOptions, SplitConfig, Tokenizer, BatchConfig};
//! # fn main() -> replora::Result<()> {
//! let dataset = data::open("bigbench:intent_recognition", &LoadOptions::default())?;
//! let splits = dataset.split(&SplitConfig::default())?;
//! let train = splits.train_fraction(0.1)?;
//! let tokenizer = Tokenizer::from_model_dir(&replora::assets::fetch("minilm")?)?;
//! let encoded = tokenizer.encode_dataset(&train)?;
//! for batch in encoded.batches(&BatchConfig { batch_size: 32, shuffle_seed: Some(0), drop_last: false }, 0) {
//!     let _input = batch.to_input(&burn::prelude::Device::flex());
//! }
//! # Ok(()) }
//! ```

pub mod bigbench;
pub mod csv;
pub mod images;
pub mod jsonl;
pub mod split;
pub mod tokenize;
pub mod video;
pub mod vqa;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub use split::{SplitConfig, Splits};
pub use tokenize::{Batch, BatchConfig, Batches, Encoded, EncodedDataset, Tokenizer};

/// One labelled example: a text, or a text pair (e.g. premise and hypothesis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    pub text_pair: Option<String>,
    pub label: String,
}

impl Example {
    pub fn new(text: impl Into<String>, label: impl Into<String>) -> Self {
        Example { text: text.into(), text_pair: None, label: label.into() }
    }
    pub fn pair(text: impl Into<String>, text_pair: impl Into<String>, label: impl Into<String>) -> Self {
        Example { text: text.into(), text_pair: Some(text_pair.into()), label: label.into() }
    }
}

/// Labelled examples and their label set (sorted; a label's index is its class id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    pub examples: Vec<Example>,
    pub labels: Vec<String>,
}

impl Dataset {
    /// A dataset whose label set is the sorted set of its examples' labels. Fails if empty.
    pub fn new(examples: Vec<Example>) -> Result<Self> {
        if examples.is_empty() {
            return Err(Error::Config("empty dataset: no examples".into()));
        }
        let labels: BTreeSet<&str> = examples.iter().map(|e| e.label.as_str()).collect();
        let labels = labels.into_iter().map(String::from).collect();
        Ok(Dataset { examples, labels })
    }

    /// A dataset with a given label set (sorted and deduplicated here; it may hold labels no
    /// example has). Fails on an example whose label is not in it.
    pub fn with_labels(examples: Vec<Example>, labels: &[String]) -> Result<Self> {
        let labels: Vec<String> = labels.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        if let Some((i, e)) = examples.iter().enumerate().find(|(_, e)| labels.binary_search(&e.label).is_err()) {
            return Err(Error::Config(format!("{} (example {})", unknown_label_message(&e.label, &labels), i + 1)));
        }
        Ok(Dataset { examples, labels })
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }

    /// The class id of `label`.
    pub fn label_index(&self, label: &str) -> Option<usize> {
        self.labels.binary_search_by(|l| l.as_str().cmp(label)).ok()
    }

    /// The class id of every example, in order.
    pub fn label_ids(&self) -> Vec<usize> {
        self.examples.iter().map(|e| self.label_index(&e.label).expect("example label outside the label set")).collect()
    }

    /// How many examples each class has, indexed by class id.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.len()];
        for id in self.label_ids() {
            counts[id] += 1;
        }
        counts
    }

    /// The examples at `indices` (in that order), with this dataset's label set.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset { examples: indices.iter().map(|&i| self.examples[i].clone()).collect(), labels: self.labels.clone() }
    }
}

/// A dataset file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// A BIG-bench `task.json`.
    BigBench,
}

impl Format {
    /// The format a file's extension implies: `.jsonl`/`.ndjson`, `.csv`, `.tsv`, `.json`
    /// (BIG-bench `task.json`).
    pub fn from_path(path: &Path) -> Result<Format> {
        let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
            Some("csv") => Ok(Format::Csv),
            Some("tsv") => Ok(Format::Tsv),
            Some("json") => Ok(Format::BigBench),
            _ => Err(Error::data(
                path,
                None,
                "cannot tell the dataset format from the file extension (expected .jsonl, .ndjson, .csv, .tsv or a BIG-bench .json); name the format explicitly",
            )),
        }
    }

    /// Parses a format name: `jsonl`, `csv`, `tsv`, `bigbench`.
    pub fn parse(name: &str) -> Result<Format> {
        match name.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            "tsv" => Ok(Format::Tsv),
            "bigbench" | "big-bench" | "task.json" => Ok(Format::BigBench),
            _ => Err(Error::Config(format!("unknown dataset format {name:?}; known: jsonl, csv, tsv, bigbench"))),
        }
    }
}

/// The field (JSONL) or column (CSV) names of an example's parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    pub text: String,
    /// The second text of a pair; where a record lacks it (or it is null/empty) the example
    /// is a single text. `None`: never read a pair.
    pub text_pair: Option<String>,
    pub label: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns { text: "text".into(), text_pair: Some("text_pair".into()), label: "label".into() }
    }
}

/// How to load a dataset file.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The format; `None`: from the file extension.
    pub format: Option<Format>,
    /// Field/column names (JSONL, CSV, TSV).
    pub columns: Columns,
    /// A fixed label set: an example with another label is an error. `None`: the labels found.
    pub labels: Option<Vec<String>>,
    /// BIG-bench: put the task's `task_prefix` and `example_input_prefix` before each input.
    pub bigbench_prefixes: bool,
}

/// Loads a dataset file.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Dataset> {
    if !path.exists() {
        return Err(Error::data(path, None, "no such file"));
    }
    let format = match options.format {
        Some(f) => f,
        None => Format::from_path(path)?,
    };
    let (examples, lines) = match format {
        Format::Jsonl => jsonl::read(path, &options.columns)?,
        Format::Csv => csv::read(path, &options.columns, b',')?,
        Format::Tsv => csv::read(path, &options.columns, b'\t')?,
        Format::BigBench => bigbench::read(path, options.bigbench_prefixes)?,
    };
    finish(path, examples, &lines, format == Format::BigBench, options.labels.as_deref())
}

/// Loads a dataset named by a path, or by `bigbench:<task>` (fetched if needed).
pub fn open(spec: &str, options: &LoadOptions) -> Result<Dataset> {
    load(&resolve(spec)?, options)
}

/// The file a dataset spec names: `bigbench:<task>` is fetched; anything else is a path.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    if spec.starts_with("bigbench:") { crate::assets::fetch(spec) } else { Ok(PathBuf::from(spec)) }
}

/// Refuses training data with fewer than two labels (a one-class classifier learns nothing and
/// scores 100%); `source` names the data.
pub fn check_two_labels<'a>(source: &Path, labels: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let present: BTreeSet<&str> = labels.into_iter().collect();
    if present.len() >= 2 {
        return Ok(());
    }
    let found = present.iter().next().map_or("no label".to_string(), |l| format!("only the label {l:?}"));
    Err(Error::data(source, None, format!("the training split has {found}: a classifier needs examples of at least two labels")))
}

pub(crate) fn unknown_label_message(label: &str, known: &[String]) -> String {
    format!("unknown label {label:?}; known labels: {}", known.join(", "))
}

/// Checks labels against a fixed set and builds the dataset. `lines[i]` locates example `i`
/// (a line number, or an example number where `numbered_examples`).
fn finish(path: &Path, examples: Vec<Example>, lines: &[usize], numbered_examples: bool, labels: Option<&[String]>) -> Result<Dataset> {
    if examples.is_empty() {
        return Err(Error::data(path, None, "empty dataset: no examples"));
    }
    match labels {
        None => Dataset::new(examples),
        Some(labels) => {
            let sorted: Vec<String> = labels.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
            for (e, &line) in examples.iter().zip(lines) {
                if sorted.binary_search(&e.label).is_err() {
                    let message = unknown_label_message(&e.label, &sorted);
                    return Err(if numbered_examples {
                        Error::data(path, None, format!("example {line}: {message}"))
                    } else {
                        Error::data(path, Some(line), message)
                    });
                }
            }
            Dataset::with_labels(examples, &sorted)
        }
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::PathBuf;

    /// Writes `content` to a fresh temporary file named `name`; the directory lives as long as
    /// the returned guard.
    pub fn write(name: &str, content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }
}

/// Whether `path`'s extension is one of `extensions` (any case).
pub(crate) fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The files directly in `dir` with one of `extensions`, sorted by name.
pub(crate) fn files_with(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && has_extension(&path, extensions) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str, label: &str) -> Example {
        Example::new(text, label)
    }

    #[test]
    fn labels_are_sorted_and_indexed() {
        let ds = Dataset::new(vec![ex("a", "pos"), ex("b", "neg"), ex("c", "pos")]).unwrap();
        assert_eq!(ds.labels, vec!["neg", "pos"]);
        assert_eq!(ds.label_index("pos"), Some(1));
        assert_eq!(ds.label_index("other"), None);
        assert_eq!(ds.label_ids(), vec![1, 0, 1]);
        assert_eq!(ds.class_counts(), vec![1, 2]);
    }

    #[test]
    fn empty_dataset_is_an_error() {
        assert!(Dataset::new(vec![]).unwrap_err().to_string().contains("empty dataset"));
        let (_dir, path) = test_util::write("empty.jsonl", "\n\n");
        let err = load(&path, &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("empty dataset"), "{err}");
    }

    /// Issue 26: a one-class dataset trained and reported 100% accuracy.
    #[test]
    fn fewer_than_two_labels_is_refused_naming_the_file() {
        let e = check_two_labels(Path::new("d/one.jsonl"), ["yes", "yes"]).unwrap_err().to_string();
        assert!(e.contains("d/one.jsonl") && e.contains("only the label \"yes\"") && e.contains("at least two"), "{e}");
        assert!(check_two_labels(Path::new("d.jsonl"), ["yes", "no"]).is_ok());
    }

    #[test]
    fn fixed_label_set() {
        let labels = vec!["pos".to_string(), "neg".into(), "neutral".into()];
        let ds = Dataset::with_labels(vec![ex("a", "pos")], &labels).unwrap();
        assert_eq!(ds.labels, vec!["neg", "neutral", "pos"]);
        let err = Dataset::with_labels(vec![ex("a", "pos"), ex("b", "bad")], &labels).unwrap_err().to_string();
        assert!(err.contains("unknown label \"bad\"") && err.contains("example 2"), "{err}");
    }

    #[test]
    fn unknown_label_reports_its_line() {
        let (_dir, path) = test_util::write("d.jsonl", "{\"text\":\"a\",\"label\":\"pos\"}\n\n{\"text\":\"b\",\"label\":\"meh\"}\n");
        let options = LoadOptions { labels: Some(vec!["pos".into(), "neg".into()]), ..Default::default() };
        let err = load(&path, &options).unwrap_err();
        assert!(matches!(err, Error::Data { line: Some(3), .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(":3: unknown label \"meh\"; known labels: neg, pos"), "{msg}");
    }

    #[test]
    fn missing_file_and_unknown_extension() {
        let err = load(Path::new("/nonexistent/data.jsonl"), &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/data.jsonl") && err.contains("no such file"), "{err}");
        let (_dir, path) = test_util::write("data.txt", "x");
        let err = load(&path, &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("file extension"), "{err}");
        assert_eq!(Format::parse("CSV").unwrap(), Format::Csv);
        assert!(Format::parse("xml").is_err());
    }

    #[test]
    fn explicit_format_overrides_extension() {
        let (_dir, path) = test_util::write("data.txt", "text,label\nhello,a\n");
        let ds = load(&path, &LoadOptions { format: Some(Format::Csv), ..Default::default() }).unwrap();
        assert_eq!(ds.examples, vec![ex("hello", "a")]);
    }
}
