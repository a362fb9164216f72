//! Adapter files: replora's native format and Hugging Face PEFT's LoRA/DoRA layout.

pub mod gguf;
pub mod native;
pub mod peft;
pub mod tensors;

pub use tensors::HostTensor;

use std::path::Path;

use crate::error::{Error, Result};

/// Reads a JSON file into `T`; a wrong field type or a syntax error names the file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, e))
}

/// Writes pretty JSON atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("adapter configs serialize");
    tensors::write_atomic(path, text.as_bytes())
}
