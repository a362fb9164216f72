//! A LLaMA-family decoder with its tokenizer and chat template, opened from an asset name, a
//! GGUF file or a Hugging Face directory.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::llama::{Llama, find_gguf};
use crate::adapters::Adaptable;
use crate::adapters::base_weight::Quantize;
use crate::error::{Error, Result};
use crate::weights::gguf::{Gguf, Value};

const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// A decoder with its tokenizer.
pub struct Decoder {
    pub model: Llama,
    pub tokenizer: tokenizers::Tokenizer,
    pub chat_template: Option<String>,
    /// The beginning-of-sequence token a prompt starts with, where the model wants one (Gemma's
    /// `add_bos_token`; SmolLM2 has none).
    pub bos: Option<u32>,
    /// The file or directory it was read from.
    pub source: PathBuf,
}

impl Decoder {
    /// [`Decoder::open`], keeping only the first `keep_layers` blocks when given (`--keep-layers`).
    /// The other blocks are never read from the file.
    pub fn open_keeping(model: &str, keep_layers: Option<usize>, quantize: Quantize, device: &Device) -> Result<Self> {
        let path = if Path::new(model).exists() { PathBuf::from(model) } else { super::resolve(model)? };
        match find_gguf(&path)? {
            Some(file) => {
                let gguf = Gguf::open(&file)?;
                let model = Llama::from_gguf_keeping(&gguf, &file, keep_layers, device)?.quantized(quantize)?;
                let adds_bos = gguf.metadata.get("tokenizer.ggml.add_bos_token").is_some_and(|v| matches!(v, Value::Bool(true)));
                let bos = model.config.bos_token_id.filter(|_| adds_bos);
                let chat_template = gguf.chat_template().map(String::from);
                Ok(Self { model, tokenizer: gguf.tokenizer()?, chat_template, bos, source: file })
            }
            None => {
                let file = path.join("tokenizer.json");
                let tokenizer = crate::data::tokenize::read_hf_tokenizer(&file)?;
                let config = path.join(TOKENIZER_CONFIG);
                let config = match config.exists() {
                    true => crate::files::read_json::<serde_json::Value>(&config)?,
                    false => serde_json::Value::Null,
                };
                let chat_template = config["chat_template"].as_str().map(String::from);
                let model = Llama::load_keeping(&path, keep_layers, quantize, device)?;
                let bos = model.config.bos_token_id.filter(|_| config["add_bos_token"].as_bool() == Some(true));
                Ok(Self { model, tokenizer, chat_template, bos, source: path })
            }
        }
    }

    /// Opens an asset name (`smollm2`), a `.gguf` file, a directory holding one, or a Hugging
    /// Face directory (`config.json`, `model.safetensors`, `tokenizer.json`), its weights as stored.
    pub fn open(model: &str, device: &Device) -> Result<Self> {
        Self::open_as(model, Quantize::Stored, device)
    }

    /// [`Decoder::open`] with the frozen weights held as `quantize` says (`--quantize`).
    pub fn open_as(model: &str, quantize: Quantize, device: &Device) -> Result<Self> {
        Self::open_keeping(model, None, quantize, device)
    }

    /// Writes `tokenizer.json` and, if there is a chat template, `tokenizer_config.json` with it
    /// and whether prompts start with BOS (where Hugging Face keeps them), so that
    /// [`Decoder::open`] on `dir` finds them.
    pub fn save_tokenizer(&self, dir: &Path) -> Result<()> {
        let file = dir.join("tokenizer.json");
        self.tokenizer.save(&file, false).map_err(|e| Error::format(&file, e))?;
        let mut config = serde_json::Map::new();
        if let Some(template) = &self.chat_template {
            config.insert("chat_template".into(), template.as_str().into());
        }
        if self.bos.is_some() {
            config.insert("add_bos_token".into(), true.into());
        }
        match config.is_empty() {
            true => Ok(()),
            false => crate::files::write_json(&dir.join(TOKENIZER_CONFIG), &serde_json::Value::Object(config)),
        }
    }

    /// Token ids of `text`, without special tokens added around it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding =
            self.tokenizer.encode(text, false).map_err(|e| Error::format(&self.source, format!("cannot tokenize {text:?}: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of `text` as the start of a sequence: after the BOS token where the model
    /// wants one (without it Gemma's predictions are far off).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self.bos.into_iter().collect();
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| Error::format(&self.source, format!("cannot decode token ids: {e}")))
    }

    /// The end-of-sequence id: the config's, else the tokenizer's `<|endoftext|>` / `</s>`.
    pub fn eos_id(&self) -> Result<u32> {
        let from_vocab = || ["<|im_end|>", "<|endoftext|>", "</s>"].iter().find_map(|t| self.tokenizer.token_to_id(t));
        self.model
            .config
            .eos_ids()
            .first()
            .copied()
            .or_else(from_vocab)
            .ok_or_else(|| Error::Config("the model declares no end-of-sequence token".into()))
    }

    /// Wraps a user message in the model's chat format. Only ChatML templates (`<|im_start|>`,
    /// SmolLM2's) are understood; others are an error rather than a silent plain prompt.
    pub fn chat_prompt(&self, message: &str) -> Result<String> {
        match self.chat_template.as_deref() {
            Some(t) if t.contains("<|im_start|>") => Ok(format!("<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n")),
            Some(_) => Err(Error::Config("the model's chat template is not ChatML; use a plain prompt".into())),
            None => Err(Error::Config("the model has no chat template; use a plain prompt".into())),
        }
    }
}
