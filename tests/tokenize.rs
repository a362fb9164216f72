//! The tokenizer wrapper on the real all-MiniLM-L6-v2 tokenizer.json (fetched through
//! `assets::fetch("minilm")`, a one-time download).

use std::sync::OnceLock;

use burn::prelude::*;
use replora::data::{BatchConfig, Dataset, Example, Tokenizer};

const CLS: u32 = 101;
const SEP: u32 = 102;
const PAD: i64 = 0;

fn tokenizer() -> Tokenizer {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| replora::assets::fetch("minilm").unwrap());
    Tokenizer::from_model_dir(dir).unwrap()
}

#[test]
fn single_text_has_specials_and_no_padding() {
    let tok = tokenizer();
    assert_eq!(tok.max_len(), 128);
    assert_eq!(tok.pad_id(), 0);
    assert_eq!(tok.vocab_size(), 30522);
    let e = tok.encode("Hello world", None).unwrap();
    assert_eq!(e.input_ids, vec![CLS, 7592, 2088, SEP], "uncased BERT ids, not padded to 128");
    assert_eq!(e.token_type_ids, vec![0; 4]);
}

#[test]
fn pairs_get_segment_ids() {
    let tok = tokenizer();
    let e = tok.encode("A man sleeps.", Some("A person rests.")).unwrap();
    let first_sep = e.input_ids.iter().position(|&id| id == SEP).unwrap();
    assert_eq!(e.input_ids[0], CLS);
    assert_eq!(*e.input_ids.last().unwrap(), SEP);
    assert_eq!(e.input_ids.iter().filter(|&&id| id == SEP).count(), 2);
    assert!(e.token_type_ids[..=first_sep].iter().all(|&t| t == 0));
    assert!(e.token_type_ids[first_sep + 1..].iter().all(|&t| t == 1));
    assert_eq!(tok.special_tokens(true), 3);
    assert_eq!(tok.special_tokens(false), 2);
}

#[test]
fn long_texts_are_truncated_to_max_len() {
    let tok = tokenizer();
    let long = "the quick brown fox jumps over the lazy dog ".repeat(60);
    let e = tok.encode(&long, None).unwrap();
    assert_eq!(e.len(), 128);
    assert_eq!((e.input_ids[0], e.input_ids[127]), (CLS, SEP));

    let short = tok.clone().with_max_len(16).unwrap();
    let e = short.encode(&long, None).unwrap();
    assert_eq!(e.len(), 16);
    assert_eq!(e.input_ids[15], SEP);

    // Pairs: the longer part is cut first; both survive, each ends with [SEP].
    let e = short.encode(&long, Some("a short hypothesis")).unwrap();
    assert_eq!(e.len(), 16);
    let pair_len = e.token_type_ids.iter().filter(|&&t| t == 1).count();
    assert_eq!(pair_len, 3 + 1, "the short hypothesis (3 tokens) and its [SEP] are kept whole");
    assert_eq!(e.input_ids[15 - pair_len], SEP);
    assert!(tok.clone().with_max_len(3).is_err());
}

#[test]
fn batches_pad_to_the_longest_example() {
    let tok = tokenizer();
    let dataset = Dataset::new(vec![
        Example::new("short", "b"),
        Example::pair("a somewhat longer first sentence", "and a second one", "a"),
        Example::new("mid length text here", "b"),
    ])
    .unwrap();
    let batch = tok.batch(&dataset, &[0, 1, 2]).unwrap();
    let lengths: Vec<usize> = dataset.examples.iter().map(|e| tok.encode_example(e).unwrap().len()).collect();
    assert_eq!(batch.batch, 3);
    assert_eq!(batch.seq, *lengths.iter().max().unwrap());
    assert_eq!(batch.labels, vec![1, 0, 1]);
    for (row, &len) in lengths.iter().enumerate() {
        let mask = &batch.attention_mask[row * batch.seq..(row + 1) * batch.seq];
        let ids = &batch.input_ids[row * batch.seq..(row + 1) * batch.seq];
        assert_eq!(mask.iter().sum::<f32>() as usize, len);
        assert!(mask[..len].iter().all(|&m| m == 1.0) && mask[len..].iter().all(|&m| m == 0.0));
        assert!(ids[len..].iter().all(|&id| id == PAD));
        assert_eq!(ids[len - 1], SEP as i64);
    }
    let row1_types = &batch.token_type_ids[batch.seq..2 * batch.seq];
    assert!(row1_types.contains(&1));

    // The encoded-dataset path gives the same batch.
    let encoded = tok.encode_dataset(&dataset).unwrap();
    let from_epoch: Vec<_> = encoded.batches(&BatchConfig { batch_size: 3, shuffle_seed: None, drop_last: false }, 0).collect();
    assert_eq!(from_epoch, vec![batch.clone()]);

    let device = Device::flex();
    let input = batch.to_input(&device);
    assert_eq!(input.input_ids.dims(), [3, batch.seq]);
    assert_eq!(input.attention_mask.dims(), [3, batch.seq]);
    assert_eq!(batch.labels_tensor(&device).dims(), [3]);
}
