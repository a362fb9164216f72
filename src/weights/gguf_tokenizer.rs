//! The tokenizer a GGUF file carries in its `tokenizer.ggml.*` metadata, as a Hugging Face
//! `tokenizers::Tokenizer` that tokenizes as llama.cpp does:
//!
//! - `gpt2`: byte-level BPE (vocabulary and merges; SmolLM2), split first as the file's
//!   `tokenizer.ggml.pre` says (SmolLM2's, GPT-2's, Qwen2's or LLaMA 3's pattern);
//! - `llama`: SentencePiece BPE (vocabulary and scores, no merges; Gemma 3). SentencePiece merges
//!   the adjacent pair whose concatenation is the highest-scoring piece until none is in the
//!   vocabulary; the same result comes from BPE merges ranked by that score (what transformers'
//!   `SpmConverter` builds), spaces written `▁` (U+2581) and characters outside the vocabulary
//!   as their UTF-8 bytes (`<0xNN>` tokens). With `tokenizer.ggml.add_space_prefix` (LLaMA 2,
//!   Mistral, Phi-3; llama.cpp's default) each stretch of text gets a leading space, as
//!   llama.cpp prefixes every text fragment that starts the input or follows an added token,
//!   and decoding drops it again.
//!
//! Both: control tokens match as special tokens (llama.cpp's `parse_special`, dropped when
//! decoding with `skip_special_tokens`), user-defined ones as plain added tokens, on the raw text
//! before anything else; `tokenizer.ggml.add_bos_token` / `add_eos_token` become a post-processor,
//! so `encode(text, true)` adds what llama.cpp's `add_special` adds (callers that build
//! sequences piecewise encode with `false` and add them where the model wants them).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, DecoderWrapper, Tokenizer};
use tokenizers::{NormalizerWrapper, normalizers};

use super::gguf::Value;
use crate::error::{Error, Result};

/// llama.cpp's token types (`tokenizer.ggml.token_type`; 1 is normal, 5 unused).
const UNKNOWN: u64 = 2;
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;
const BYTE: u64 = 6;

/// SentencePiece's word-boundary mark, which stands for a space.
const SPACE_MARK: &str = "\u{2581}";

/// llama.cpp's split before byte-level BPE for Qwen2/Qwen3 (`tokenizer.ggml.pre` `qwen2`,
/// `digits` empty: one digit a piece) and LLaMA 3 (`llama-bpe`, `digits` `{1,3}`): contractions,
/// letters with one leading non-letter, digits, punctuation runs, newlines and spaces.
fn split_pattern(digits: &str) -> String {
    format!(
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{digits}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
}
/// llama.cpp's `clean_spaces` when decoding, in its order: the space before `?!.,`, around a lone
/// `'`, and before `'s`, `'m`, `'re`, `'ve`.
const CLEANED_SPACES: [(&str, &str); 9] =
    [(" ?", "?"), (" !", "!"), (" .", "."), (" ,", ","), (" ' ", "'"), (" 's", "'s"), (" 'm", "'m"), (" 're", "'re"), (" 've", "'ve")];

/// The tokenizer of a GGUF file's metadata (`path` is named in errors).
pub fn tokenizer(metadata: &BTreeMap<String, Value>, path: &Path) -> Result<Tokenizer> {
    let meta = Metadata { map: metadata, path };
    let model = meta.get("tokenizer.ggml.model")?.as_str().unwrap_or("");
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let types: Vec<u64> = match metadata.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
        Some(items) if items.len() == tokens.len() => items.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        Some(items) => {
            return Err(meta.error(format!("tokenizer.ggml.token_type has {} entries for {} tokens", items.len(), tokens.len())));
        }
        None => vec![1; tokens.len()],
    };
    let mut tokenizer = match model {
        "gpt2" => byte_level_bpe(&meta, &tokens, &types)?,
        "llama" => sentencepiece_bpe(&meta, &tokens, &types)?,
        other => {
            return Err(
                meta.error(format!("tokenizer model {other:?} is not supported (byte-level BPE \"gpt2\" and SentencePiece \"llama\" are)"))
            );
        }
    };
    // llama.cpp adds a BOS by default to SentencePiece vocabularies only.
    let add_bos = meta.flag("tokenizer.ggml.add_bos_token")?.unwrap_or(model == "llama");
    let add_eos = meta.flag("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    tokenizer.with_post_processor(special_tokens_around(&meta, &tokens, add_bos, add_eos)?);
    Ok(tokenizer)
}

/// Typed access to the metadata, with errors naming the file and the key.
struct Metadata<'a> {
    map: &'a BTreeMap<String, Value>,
    path: &'a Path,
}

impl Metadata<'_> {
    fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::format(self.path, message)
    }

    fn get(&self, key: &str) -> Result<&Value> {
        self.map.get(key).ok_or_else(|| self.error(format!("metadata {key} is missing")))
    }

    fn array(&self, key: &str) -> Result<&[Value]> {
        self.get(key)?.as_array().ok_or_else(|| self.error(format!("{key} is not an array")))
    }

    fn strings(&self, key: &str) -> Result<Vec<&str>> {
        self.array(key)?.iter().map(|v| v.as_str().ok_or_else(|| self.error(format!("{key} holds a non-string")))).collect()
    }

    fn flag(&self, key: &str) -> Result<Option<bool>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.error(format!("{key} is not a boolean"))),
        }
    }

    /// A token id from `key`, if present, checked to be one of the `n` tokens.
    fn token_id(&self, key: &str, n: usize) -> Result<Option<u32>> {
        let Some(value) = self.map.get(key) else { return Ok(None) };
        match value.as_u64() {
            Some(id) if (id as usize) < n => Ok(Some(id as u32)),
            _ => Err(self.error(format!("{key} ({value:?}) is not a token id below the vocabulary size {n}"))),
        }
    }
}

/// GPT-2 style byte-level BPE: vocabulary and merges, the pre-tokenizer `tokenizer.ggml.pre` names.
fn byte_level_bpe(meta: &Metadata, tokens: &[&str], types: &[u64]) -> Result<Tokenizer> {
    let merges = meta.strings("tokenizer.ggml.merges")?;
    let vocab: serde_json::Map<String, serde_json::Value> = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i.into())).collect();
    // Control (3) and user-defined (4) tokens match as whole strings before BPE.
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, kind))| **kind == CONTROL || **kind == USER_DEFINED)
        .map(|(id, (t, kind))| serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": *kind == CONTROL}))
        .collect();
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre = meta.map.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
    // LLaMA 3's vocabulary (llama.cpp: `ignore_merges`, `clean_spaces`) takes a word that is a
    // token whole, and decoding drops the space before `?!.,` and some contractions.
    let llama3 = matches!(pre, "llama-bpe" | "llama3");
    let pre_tokenizer = match pre {
        // SmolLM2's tokenizer.json: single digits, then GPT-2's byte-level split.
        "smollm" => {
            serde_json::json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]})
        }
        "default" | "gpt-2" | "gpt2" => byte_level,
        "qwen2" | "llama-bpe" | "llama3" => {
            let pattern = split_pattern(if llama3 { "{1,3}" } else { "" });
            let split = serde_json::json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
            let bytes = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
            serde_json::json!({"type": "Sequence", "pretokenizers": [split, bytes]})
        }
        other => {
            return Err(
                meta.error(format!("tokenizer pre-tokenizer {other:?} is not supported (smollm, gpt2, default, qwen2, llama-bpe are)"))
            );
        }
    };
    let byte_level_decoder = serde_json::json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
    let decoder = match llama3 {
        false => byte_level_decoder,
        true => {
            let replace = |from: &str, to: &str| serde_json::json!({"type": "Replace", "pattern": {"String": from}, "content": to});
            let mut steps = vec![byte_level_decoder, serde_json::json!({"type": "Fuse"})];
            steps.extend(CLEANED_SPACES.iter().map(|(from, to)| replace(from, to)));
            serde_json::json!({"type": "Sequence", "decoders": steps})
        }
    };
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": decoder,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": llama3, "vocab": vocab, "merges": merges},
    });
    json.to_string().parse::<Tokenizer>().map_err(|e| meta.error(format!("cannot build the tokenizer: {e}")))
}

/// SentencePiece BPE from the vocabulary and its scores, as llama.cpp's `llm_tokenizer_spm`.
fn sentencepiece_bpe(meta: &Metadata, tokens: &[&str], types: &[u64]) -> Result<Tokenizer> {
    let pre = meta.map.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
    if pre != "default" {
        return Err(meta.error(format!("SentencePiece pre-tokenizer {pre:?} is not supported (only \"default\")")));
    }
    // llama.cpp's default for SentencePiece (LLaMA 1/2's " " before the text) is true.
    let space_prefix = meta.flag("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let scores: Vec<f32> = meta
        .array("tokenizer.ggml.scores")?
        .iter()
        .map(|v| v.as_f64().map(|s| s as f32).ok_or_else(|| meta.error("tokenizer.ggml.scores holds a non-number")))
        .collect::<Result<_>>()?;
    if scores.len() != tokens.len() {
        return Err(meta.error(format!("tokenizer.ggml.scores has {} entries for {} tokens", scores.len(), tokens.len())));
    }
    let merges = sentencepiece_merges(tokens, &scores, types);
    // The first of duplicated pieces keeps the name (llama.cpp's text-to-id map does the same).
    let mut vocab = Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        vocab.entry(token.to_string()).or_insert(id as u32);
    }
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true);
    if let Some(unk) = meta.token_id("tokenizer.ggml.unknown_token_id", tokens.len())? {
        builder = builder.unk_token(tokens[unk as usize].to_string());
    }
    let bpe = builder.build().map_err(|e| meta.error(format!("cannot build the SentencePiece tokenizer: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let replace = |from: &str, to: &str| Replace::new(from, to).expect("a literal pattern");
    let mut normalizers = vec![NormalizerWrapper::Replace(replace(" ", SPACE_MARK))];
    let mut decoders = vec![
        DecoderWrapper::Replace(replace(SPACE_MARK, " ")),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if space_prefix {
        // Normalizers run on each stretch of text between added tokens, as llama.cpp prefixes.
        normalizers.insert(0, NormalizerWrapper::Prepend(Prepend::new(SPACE_MARK.into())));
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tokenizer.with_normalizer(Some(normalizers::Sequence::new(normalizers))).map_err(|e| meta.error(e))?;
    tokenizer.with_decoder(Some(Sequence::new(decoders)));
    let added = |kinds: &[u64], special: bool| -> Vec<AddedToken> {
        let chosen = tokens.iter().zip(types).filter(|(_, kind)| kinds.contains(kind));
        chosen.map(|(t, _)| AddedToken::from(t.to_string(), special).normalized(false)).collect()
    };
    tokenizer.add_special_tokens(added(&[CONTROL, UNKNOWN], true)).map_err(|e| meta.error(e))?;
    tokenizer.add_tokens(added(&[USER_DEFINED], false)).map_err(|e| meta.error(e))?;
    Ok(tokenizer)
}

/// SentencePiece's merge order as BPE merges: every split of a piece into two pieces, ranked by
/// the score of the merged piece (highest first; then by id, and by the left part's id). Byte
/// tokens are never a part: they stand for bytes of characters no merge reaches.
fn sentencepiece_merges(tokens: &[&str], scores: &[f32], types: &[u64]) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().rev().map(|(id, t)| (*t, id)).collect();
    let part = |s: &str| ids.get(s).copied().filter(|&id| types[id] != BYTE);
    let mut merges: Vec<(usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        for (split, _) in piece.char_indices().skip(1) {
            if let (Some(left), Some(right)) = (part(&piece[..split]), part(&piece[split..])) {
                merges.push((id, left, right));
            }
        }
    }
    merges.sort_by(|a, b| scores[b.0].total_cmp(&scores[a.0]).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    merges.into_iter().map(|(_, left, right)| (tokens[left].to_string(), tokens[right].to_string())).collect()
}

/// The post-processor adding BOS before and EOS after each sequence, as the flags say; `None`
/// when neither is added.
fn special_tokens_around(meta: &Metadata, tokens: &[&str], add_bos: bool, add_eos: bool) -> Result<Option<TemplateProcessing>> {
    let special = |add: bool, key: &str, name: &str| -> Result<Option<SpecialToken>> {
        if !add {
            return Ok(None);
        }
        let id = meta.token_id(key, tokens.len())?.ok_or_else(|| meta.error(format!("{key} is missing, but the file asks to add it")))?;
        // The template calls it BOS / EOS: a token's own text may not parse as a template word.
        Ok(Some(SpecialToken::new(name.into(), vec![id], vec![tokens[id as usize].into()]).expect("one id, one token")))
    };
    let bos = special(add_bos, "tokenizer.ggml.bos_token_id", "BOS")?;
    let eos = special(add_eos, "tokenizer.ggml.eos_token_id", "EOS")?;
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let around = |sequence: &str, type_id: u32| -> Vec<String> {
        let word = |present: bool, name: &str| present.then(|| format!("{name}:{type_id}"));
        let words = word(bos.is_some(), "BOS").into_iter().chain([format!("{sequence}:{type_id}")]);
        words.chain(word(eos.is_some(), "EOS")).collect()
    };
    let pair: Vec<String> = around("$A", 0).into_iter().chain(around("$B", 1)).collect();
    let failed = |e: String| meta.error(format!("cannot build the BOS/EOS template: {e}"));
    let mut builder = TemplateProcessing::builder();
    builder.try_single(around("$A", 0)).map_err(failed)?;
    builder.try_pair(pair).map_err(failed)?;
    let specials: Vec<SpecialToken> = bos.into_iter().chain(eos).collect();
    builder.special_tokens(specials).build().map(Some).map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SentencePiece vocabulary: control tokens, a user-defined `\n`, all 256 byte tokens, and
    /// pieces whose scores disagree with their ids and with left-to-right merging.
    fn tiny_vocab() -> Vec<(String, f32, u64)> {
        let mut vocab: Vec<(String, f32, u64)> =
            [("<pad>", 0.0, CONTROL), ("<eos>", 0.0, CONTROL), ("<bos>", 0.0, CONTROL), ("<unk>", 0.0, UNKNOWN)]
                .map(|(t, s, k)| (t.to_string(), s, k))
                .into();
        // User-defined, as in Gemma's vocabulary: matched in the raw text, spaces and all.
        vocab.extend(["\n", "  ", "<b>"].map(|t| (t.to_string(), -1000.0, USER_DEFINED)));
        vocab.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, BYTE)));
        let pieces = [
            ("a", -10.0),
            ("b", -11.0),
            ("c", -12.0),
            ("\u{2581}", -13.0),
            ("ab", -5.0), // lower id than "bc", lower score: "abc" is a + bc
            ("bc", -1.0),
            ("ca", -2.0),
            ("\u{2581}a", -3.0),
            ("\u{2581}ab", -4.0),
            ("abca", -6.0),
            ("cc", -8.0),
            ("ccc", -9.0),
        ];
        vocab.extend(pieces.map(|(t, s)| (t.to_string(), s, 1)));
        vocab
    }

    fn metadata(vocab: &[(String, f32, u64)], extra: &[(&str, Value)]) -> BTreeMap<String, Value> {
        let mut m = BTreeMap::new();
        let array = |f: &dyn Fn(&(String, f32, u64)) -> Value| Value::Array(vocab.iter().map(f).collect());
        m.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
        m.insert("tokenizer.ggml.pre".into(), Value::String("default".into()));
        m.insert("tokenizer.ggml.tokens".into(), array(&|(t, _, _)| Value::String(t.clone())));
        m.insert("tokenizer.ggml.scores".into(), array(&|(_, s, _)| Value::F32(*s)));
        m.insert("tokenizer.ggml.token_type".into(), array(&|(_, _, k)| Value::I32(*k as i32)));
        m.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(2));
        m.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(1));
        m.insert("tokenizer.ggml.unknown_token_id".into(), Value::U32(3));
        m.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
        m.insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false));
        for (k, v) in extra {
            m.insert(k.to_string(), v.clone());
        }
        m
    }

    /// llama.cpp's tokenization written out naively: the text split at control and user-defined
    /// tokens, longest first (`tokenizer_st_partition`), then in each piece of text
    /// `llm_tokenizer_spm`: merge the adjacent pair whose concatenation is the highest-scoring
    /// normal piece (the leftmost on a tie) until none is; a leftover symbol outside the
    /// vocabulary becomes its bytes.
    fn reference(vocab: &[(String, f32, u64)], text: &str) -> Vec<u32> {
        let mut added: Vec<usize> = (0..vocab.len()).filter(|&i| [CONTROL, UNKNOWN, USER_DEFINED].contains(&vocab[i].2)).collect();
        added.sort_by_key(|&i| std::cmp::Reverse(vocab[i].0.len()));
        enum Fragment {
            Text(String),
            Token(u32),
        }
        let mut fragments = vec![Fragment::Text(text.to_string())];
        for id in added {
            let mut split = Vec::new();
            for fragment in fragments {
                let Fragment::Text(raw) = fragment else {
                    split.push(fragment);
                    continue;
                };
                for (i, piece) in raw.split(vocab[id].0.as_str()).enumerate() {
                    if i > 0 {
                        split.push(Fragment::Token(id as u32));
                    }
                    if !piece.is_empty() {
                        split.push(Fragment::Text(piece.to_string()));
                    }
                }
            }
            fragments = split;
        }
        let ids = |fragment: Fragment| match fragment {
            Fragment::Text(raw) => reference_spm(vocab, &raw),
            Fragment::Token(id) => vec![id],
        };
        fragments.into_iter().flat_map(ids).collect()
    }

    fn reference_spm(vocab: &[(String, f32, u64)], text: &str) -> Vec<u32> {
        let find = |s: &str| vocab.iter().position(|(t, _, k)| t == s && *k == 1);
        let mut symbols: Vec<String> = text.replace(' ', "\u{2581}").chars().map(String::from).collect();
        loop {
            let mut best: Option<(f32, usize)> = None;
            for i in 0..symbols.len().saturating_sub(1) {
                if let Some(id) = find(&format!("{}{}", symbols[i], symbols[i + 1]))
                    && best.is_none_or(|(score, _)| vocab[id].1 > score)
                {
                    best = Some((vocab[id].1, i));
                }
            }
            let Some((_, i)) = best else { break };
            let right = symbols.remove(i + 1);
            symbols[i].push_str(&right);
        }
        let byte = |b: u8| vocab.iter().position(|(t, _, _)| *t == format!("<0x{b:02X}>")).unwrap() as u32;
        symbols.iter().flat_map(|s| find(s).map_or_else(|| s.bytes().map(byte).collect(), |id| vec![id as u32])).collect()
    }

    fn ids(tokenizer: &Tokenizer, text: &str, special: bool) -> Vec<u32> {
        tokenizer.encode(text, special).unwrap().get_ids().to_vec()
    }

    #[test]
    fn merges_follow_scores_not_ids_nor_reading_order() {
        let vocab = tiny_vocab();
        let t = tokenizer(&metadata(&vocab, &[]), Path::new("tiny.gguf")).unwrap();
        let id = |s: &str| t.token_to_id(s).unwrap();
        // "bc" outscores "ab": a + bc, although ab comes first in the text and in the vocabulary.
        assert_eq!(ids(&t, "abc", false), [id("a"), id("bc")]);
        // bc first leaves a + bc + a: the piece abca (ab + ca, merging from the left) is not reached.
        assert_eq!(ids(&t, "abca", false), [id("a"), id("bc"), id("a")]);
        // ▁a (-3) before ab (-5), then ▁a + b.
        assert_eq!(ids(&t, " ab", false), [id("\u{2581}ab")]);
        // é is no piece: its UTF-8 bytes.
        assert_eq!(ids(&t, "é", false), [id("<0xC3>"), id("<0xA9>")]);
        assert_eq!(t.decode(&ids(&t, " abé c", false), true).unwrap(), " abé c");
    }

    #[test]
    fn random_texts_tokenize_as_sentencepiece() {
        let vocab = tiny_vocab();
        let t = tokenizer(&metadata(&vocab, &[]), Path::new("tiny.gguf")).unwrap();
        let alphabet: Vec<char> = "abc é\n<b>".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 14) as usize;
            let text: String = (0..len).map(|i| alphabet[((state >> (8 + 4 * i)) % alphabet.len() as u64) as usize]).collect();
            assert_eq!(ids(&t, &text, false), reference(&vocab, &text), "{text:?}");
            assert_eq!(t.decode(&ids(&t, &text, false), true).unwrap(), text);
        }
    }

    #[test]
    fn added_tokens_bos_and_decoding() {
        let vocab = tiny_vocab();
        let t = tokenizer(&metadata(&vocab, &[]), Path::new("tiny.gguf")).unwrap();
        let id = |s: &str| t.token_to_id(s).unwrap();
        // Control tokens match as special tokens, user-defined ones always, on the raw text: two
        // spaces are the user-defined "  ", not ▁▁.
        assert_eq!(ids(&t, "<eos>ab\nc", false), [1, id("ab"), id("\n"), id("c")]);
        assert_eq!(ids(&t, "a<b>  b", false), [id("a"), id("<b>"), id("  "), id("b")]);
        assert_eq!(ids(&t, "a<b>  b", false), reference(&vocab, "a<b>  b"));
        assert_eq!(ids(&t, "ab", true), [2, id("ab")], "add_bos_token: encode with special tokens adds <bos>");
        assert_eq!(t.encode(("ab", "c"), true).unwrap().get_ids(), [2, id("ab"), 2, id("c")], "each sequence of a pair");
        assert_eq!(t.decode(&[2, id("a"), 1, id("\n"), id("b")], true).unwrap(), "a\nb", "special tokens are skipped");

        let no_bos =
            metadata(&vocab, &[("tokenizer.ggml.add_bos_token", Value::Bool(false)), ("tokenizer.ggml.add_eos_token", Value::Bool(true))]);
        let t = tokenizer(&no_bos, Path::new("tiny.gguf")).unwrap();
        assert_eq!(ids(&t, "ab", true), [id("ab"), 1]);
    }

    #[test]
    fn a_space_prefix_starts_each_stretch_of_text() {
        let vocab = tiny_vocab();
        let t = tokenizer(&metadata(&vocab, &[("tokenizer.ggml.add_space_prefix", Value::Bool(true))]), Path::new("tiny.gguf")).unwrap();
        let id = |s: &str| t.token_to_id(s).unwrap();
        assert_eq!(ids(&t, "ab", false), [id("\u{2581}ab")]);
        // After an added token as well (llama.cpp prefixes every text fragment after one).
        assert_eq!(ids(&t, "ab\nab", false), [id("\u{2581}ab"), id("\n"), id("\u{2581}ab")]);
        assert_eq!(ids(&t, "", false), [] as [u32; 0]);
        assert_eq!(ids(&t, "ab", true), [2, id("\u{2581}ab")]);
        assert_eq!(t.decode(&ids(&t, "ab c", false), true).unwrap(), "ab c", "decoding drops the prefix");
    }

    #[test]
    fn unsupported_settings_are_named() {
        let vocab = tiny_vocab();
        let err = |extra: &[(&str, Value)]| tokenizer(&metadata(&vocab, extra), Path::new("tiny.gguf")).unwrap_err().to_string();
        assert!(err(&[("tokenizer.ggml.model", Value::String("bert".into()))]).contains("\"bert\""));
        assert!(err(&[("tokenizer.ggml.pre", Value::String("gemma4".into()))]).contains("\"gemma4\""));
        assert!(err(&[("tokenizer.ggml.scores", Value::Array(vec![]))]).contains("tokenizer.ggml.scores has 0 entries"));
        let e = err(&[("tokenizer.ggml.bos_token_id", Value::U32(100_000))]);
        assert!(e.contains("bos_token_id") && e.contains("tiny.gguf"), "{e}");
    }
}
