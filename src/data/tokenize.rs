//! Tokenization and padded batches for encoders.
//!
//! [`Tokenizer`] wraps a Hugging Face `tokenizer.json` (the `tokenizers` crate) with its own
//! padding and truncation switched off: it truncates to `max_len` itself (longest part first
//! for pairs, before adding the special tokens) and pads per batch to the longest sequence, so
//! short batches stay short.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokenizers::{PostProcessor, TruncationDirection};

use super::split::shuffle;
use super::{Dataset, Example};
use crate::{Error, Result};

/// Reads a Hugging Face `tokenizer.json`. Its JSON syntax is checked first: the `tokenizers`
/// crate panics on a syntax error inside some sections (e.g. a truncated `decoder`).
pub fn read_hf_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(path, format!("cannot load tokenizer: invalid JSON ({e})")))?;
    check_templates(&json["post_processor"]).map_err(|e| Error::format(path, format!("cannot load tokenizer: post_processor {e}")))?;
    text.parse().map_err(|e| Error::format(path, format!("cannot load tokenizer ({e})")))
}

/// What `tokenizers` checks when a `TemplateProcessing` is built but not when one is read (it
/// panics on the first encoding instead): every special token a template names is defined
/// with as many ids as tokens, and the single-sequence template has no second sequence.
fn check_templates(processor: &serde_json::Value) -> std::result::Result<(), String> {
    match processor["type"].as_str() {
        Some("Sequence") => processor["processors"].as_array().into_iter().flatten().try_for_each(check_templates),
        Some("TemplateProcessing") => {
            let specials = &processor["special_tokens"];
            for (template, pieces) in ["single", "pair"].map(|t| (t, &processor[t])) {
                for piece in pieces.as_array().into_iter().flatten() {
                    if let Some(id) = piece["SpecialToken"]["id"].as_str() {
                        let token = &specials[id];
                        if token.is_null() {
                            return Err(format!("template {template:?} names special token {id:?}, which special_tokens does not define"));
                        }
                        if token["ids"].as_array().map(Vec::len) != token["tokens"].as_array().map(Vec::len) {
                            return Err(format!("special token {id:?} has a different number of ids and tokens"));
                        }
                    }
                    if template == "single" && piece["Sequence"]["id"] == "B" {
                        return Err("template \"single\" uses the second sequence B".into());
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A text tokenizer for encoder inputs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    max_len: usize,
    pad_id: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("path", &self.path).field("max_len", &self.max_len).field("pad_id", &self.pad_id).finish()
    }
}

/// One encoded example: ids with special tokens, and segment ids (0: first text, 1: pair).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

impl Tokenizer {
    /// The default maximum sequence length, special tokens included.
    pub const DEFAULT_MAX_LEN: usize = 128;

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::format(path, "no such tokenizer file"));
        }
        let mut inner = read_hf_tokenizer(path)?;
        let pad_id =
            inner.get_padding().map(|p| p.pad_id).or_else(|| ["[PAD]", "<pad>"].iter().find_map(|t| inner.token_to_id(t))).unwrap_or(0);
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| Error::format(path, e))?;
        Ok(Tokenizer { inner, path: path.to_path_buf(), max_len: Self::DEFAULT_MAX_LEN, pad_id })
    }

    /// Loads `tokenizer.json` from a model directory.
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("tokenizer.json"))
    }

    /// Sets the maximum sequence length (special tokens included).
    pub fn with_max_len(mut self, max_len: usize) -> Result<Self> {
        let specials = self.special_tokens(true);
        if max_len <= specials {
            return Err(Error::Config(format!("max_len {max_len} leaves no room for text next to {specials} special tokens")));
        }
        self.max_len = max_len;
        Ok(self)
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The id padding uses (the tokenizer's own padding id, else `[PAD]`/`<pad>`, else 0).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The underlying `tokenizers` tokenizer (padding and truncation off).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// How many special tokens the post-processor adds to a single text or a pair.
    pub fn special_tokens(&self, pair: bool) -> usize {
        self.inner.get_post_processor().map(|p| p.added_tokens(pair)).unwrap_or(0)
    }

    /// Encodes a text, or a text pair, with special tokens, truncated to `max_len`.
    pub fn encode(&self, text: &str, pair: Option<&str>) -> Result<Encoded> {
        let fail = |e: tokenizers::Error| Error::format(&self.path, format!("tokenizing failed ({e})"));
        let mut first = self.inner.encode_fast(text, false).map_err(fail)?;
        let mut second = pair.map(|p| self.inner.encode_fast(p, false)).transpose().map_err(fail)?;
        let budget = self.max_len.saturating_sub(self.special_tokens(second.is_some()));
        let (a, b) = longest_first(first.len(), second.as_ref().map_or(0, |s| s.len()), budget);
        if a < first.len() {
            first.truncate(a, 0, TruncationDirection::Right);
        }
        if let Some(second) = second.as_mut().filter(|s| b < s.len()) {
            second.truncate(b, 0, TruncationDirection::Right);
        }
        let encoding = self.inner.post_process(first, second, true).map_err(fail)?;
        Ok(Encoded { input_ids: encoding.get_ids().to_vec(), token_type_ids: encoding.get_type_ids().to_vec() })
    }

    /// Encodes an example (its text pair, if any).
    pub fn encode_example(&self, example: &Example) -> Result<Encoded> {
        self.encode(&example.text, example.text_pair.as_deref())
    }

    /// Encodes every example of a dataset once, for batching over many epochs.
    pub fn encode_dataset(&self, dataset: &Dataset) -> Result<EncodedDataset> {
        let items = dataset.examples.iter().map(|e| self.encode_example(e)).collect::<Result<Vec<_>>>()?;
        Ok(EncodedDataset { items, labels: dataset.label_ids(), label_names: dataset.labels.clone(), pad_id: self.pad_id })
    }

    /// Encodes and pads the examples of `dataset` at `indices` into one batch.
    pub fn batch(&self, dataset: &Dataset, indices: &[usize]) -> Result<Batch> {
        let items = indices.iter().map(|&i| self.encode_example(&dataset.examples[i])).collect::<Result<Vec<_>>>()?;
        let labels = indices
            .iter()
            .map(|&i| dataset.label_index(&dataset.examples[i].label).expect("example label outside the label set"))
            .collect();
        Ok(Batch::pad(&items.iter().collect::<Vec<_>>(), labels, self.pad_id))
    }
}

/// Lengths of a text pair cut to `budget` tokens by trimming the longer part first.
fn longest_first(a: usize, b: usize, budget: usize) -> (usize, usize) {
    if a + b <= budget {
        return (a, b);
    }
    let short = a.min(b);
    // The longer part is cut first; once both are equal they shrink together.
    let (short_cut, long_cut) = if short * 2 <= budget { (short, budget - short) } else { (budget / 2, budget - budget / 2) };
    if a >= b { (long_cut, short_cut) } else { (short_cut, long_cut) }
}

/// A padded batch: row-major `[batch, seq]` ids, segment ids and mask, padded to the longest
/// sequence in the batch, plus each row's class id.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    /// 1.0 for real tokens, 0.0 for padding.
    pub attention_mask: Vec<f32>,
    pub batch: usize,
    pub seq: usize,
    pub labels: Vec<usize>,
}

/// A tokenized, padded batch for an encoder: `[batch, seq]` each.
#[derive(Clone, Debug)]
pub struct EncoderInput {
    pub input_ids: Tensor<2, Int>,
    pub token_type_ids: Tensor<2, Int>,
    /// 1.0 for real tokens, 0.0 for padding.
    pub attention_mask: Tensor<2>,
}

impl Batch {
    /// Pads `items` to the longest one with `pad_id` (segment 0, mask 0).
    pub fn pad(items: &[&Encoded], labels: Vec<usize>, pad_id: u32) -> Batch {
        assert_eq!(items.len(), labels.len(), "one label per item");
        let seq = items.iter().map(|e| e.len()).max().unwrap_or(0);
        let n = items.len() * seq;
        let mut batch = Batch {
            input_ids: Vec::with_capacity(n),
            token_type_ids: Vec::with_capacity(n),
            attention_mask: Vec::with_capacity(n),
            batch: items.len(),
            seq,
            labels,
        };
        for item in items {
            let pad = seq - item.len();
            batch.input_ids.extend(item.input_ids.iter().map(|&id| i64::from(id)).chain(std::iter::repeat_n(i64::from(pad_id), pad)));
            batch.token_type_ids.extend(item.token_type_ids.iter().map(|&t| i64::from(t)).chain(std::iter::repeat_n(0, pad)));
            batch.attention_mask.extend(std::iter::repeat_n(1.0, item.len()).chain(std::iter::repeat_n(0.0, pad)));
        }
        batch
    }

    /// The batch as encoder input tensors on `device`.
    pub fn to_input(&self, device: &Device) -> EncoderInput {
        let shape = [self.batch, self.seq];
        EncoderInput {
            input_ids: Tensor::from_data(TensorData::new(self.input_ids.clone(), shape), device),
            token_type_ids: Tensor::from_data(TensorData::new(self.token_type_ids.clone(), shape), device),
            attention_mask: Tensor::from_data(TensorData::new(self.attention_mask.clone(), shape), device),
        }
    }

    /// The class ids as a `[batch]` tensor.
    pub fn labels_tensor(&self, device: &Device) -> Tensor<1, Int> {
        let labels: Vec<i64> = self.labels.iter().map(|&l| l as i64).collect();
        Tensor::from_data(TensorData::new(labels, [self.batch]), device)
    }
}

/// A dataset encoded once; batches are padded views of it.
#[derive(Clone, Debug)]
pub struct EncodedDataset {
    pub items: Vec<Encoded>,
    /// The class id of each item.
    pub labels: Vec<usize>,
    /// Class names, indexed by class id.
    pub label_names: Vec<String>,
    pub pad_id: u32,
}

/// How to cut an epoch into batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    pub batch_size: usize,
    /// Shuffle each epoch with this seed (the order depends on seed and epoch only);
    /// `None`: dataset order.
    pub shuffle_seed: Option<u64>,
    /// Leave out a last batch smaller than `batch_size`.
    pub drop_last: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { batch_size: 32, shuffle_seed: None, drop_last: false }
    }
}

impl EncodedDataset {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items at `indices`, padded into one batch.
    pub fn batch(&self, indices: &[usize]) -> Batch {
        let items: Vec<&Encoded> = indices.iter().map(|&i| &self.items[i]).collect();
        Batch::pad(&items, indices.iter().map(|&i| self.labels[i]).collect(), self.pad_id)
    }

    /// The batches of epoch `epoch` (0-based). With a shuffle seed, the order is a seeded
    /// permutation that differs between epochs and is reproducible for a (seed, epoch) pair,
    /// so a resumed run sees the same batches.
    pub fn batches(&self, config: &BatchConfig, epoch: u64) -> Batches<'_> {
        assert!(config.batch_size > 0, "batch_size must be positive");
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        if let Some(seed) = config.shuffle_seed {
            let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            shuffle(&mut order, &mut rng);
        }
        if config.drop_last {
            order.truncate(order.len() - order.len() % config.batch_size);
        }
        Batches { data: self, order, batch_size: config.batch_size, next: 0 }
    }
}

/// An iterator over one epoch's batches.
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    data: &'a EncodedDataset,
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
}

impl Batches<'_> {
    /// The dataset indices in this epoch's order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let batch = self.data.batch(&self.order[self.next..end]);
        self.next = end;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.next).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_first_trims_the_longer_part() {
        assert_eq!(longest_first(3, 4, 10), (3, 4));
        assert_eq!(longest_first(20, 3, 10), (7, 3));
        assert_eq!(longest_first(3, 20, 10), (3, 7));
        assert_eq!(longest_first(20, 30, 10), (5, 5));
        assert_eq!(longest_first(20, 30, 11), (5, 6));
        assert_eq!(longest_first(30, 20, 11), (6, 5));
        assert_eq!(longest_first(15, 0, 10), (10, 0));
    }

    fn encoded(ids: &[u32], types: &[u32]) -> Encoded {
        Encoded { input_ids: ids.to_vec(), token_type_ids: types.to_vec() }
    }

    #[test]
    fn batches_pad_to_the_longest_row() {
        let a = encoded(&[101, 7, 102], &[0, 0, 0]);
        let b = encoded(&[101, 8, 9, 102, 10, 102], &[0, 0, 0, 0, 1, 1]);
        let batch = Batch::pad(&[&a, &b], vec![1, 0], 0);
        assert_eq!((batch.batch, batch.seq), (2, 6));
        assert_eq!(batch.input_ids, vec![101, 7, 102, 0, 0, 0, 101, 8, 9, 102, 10, 102]);
        assert_eq!(batch.token_type_ids, vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(batch.attention_mask, vec![1., 1., 1., 0., 0., 0., 1., 1., 1., 1., 1., 1.]);

        let device = Device::flex();
        let input = batch.to_input(&device);
        assert_eq!(input.input_ids.dims(), [2, 6]);
        assert_eq!(input.input_ids.into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), batch.input_ids);
        assert_eq!(input.token_type_ids.into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), batch.token_type_ids);
        assert_eq!(input.attention_mask.into_data().try_to_vec::<f32>().unwrap(), batch.attention_mask);
        assert_eq!(batch.labels_tensor(&device).into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), vec![1, 0]);
    }

    fn toy(n: usize) -> EncodedDataset {
        EncodedDataset {
            items: (0..n as u32).map(|i| encoded(&vec![i; 1 + i as usize % 3], &vec![0; 1 + i as usize % 3])).collect(),
            labels: (0..n).map(|i| i % 2).collect(),
            label_names: vec!["a".into(), "b".into()],
            pad_id: 0,
        }
    }

    #[test]
    fn epochs_cover_every_item_once() {
        let data = toy(10);
        let config = BatchConfig { batch_size: 4, shuffle_seed: None, drop_last: false };
        let batches: Vec<Batch> = data.batches(&config, 0).collect();
        assert_eq!(batches.iter().map(|b| b.batch).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert_eq!(data.batches(&config, 0).len(), 3);
        assert_eq!(batches[0].labels, vec![0, 1, 0, 1]);
        let dropped = data.batches(&BatchConfig { drop_last: true, ..config.clone() }, 0);
        assert_eq!(dropped.len(), 2);

        let shuffled = BatchConfig { shuffle_seed: Some(7), ..config };
        let e0 = data.batches(&shuffled, 0).order().to_vec();
        let e1 = data.batches(&shuffled, 1).order().to_vec();
        assert_eq!(e0, data.batches(&shuffled, 0).order(), "reproducible per (seed, epoch)");
        assert_ne!(e0, e1, "epochs differ");
        assert_ne!(e0, (0..10).collect::<Vec<_>>());
        let mut sorted = e1.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "a permutation");
        // Labels follow their items through the shuffle.
        for batch in data.batches(&shuffled, 3) {
            for (row, label) in batch.labels.iter().enumerate() {
                let first_id = batch.input_ids[row * batch.seq] as usize;
                assert_eq!(*label, first_id % 2);
            }
        }
    }
}
