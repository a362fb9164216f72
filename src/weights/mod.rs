//! Model-weight I/O: safetensors files as named host tensors, GGUF files, and the one
//! [`Reader`] every architecture loads its parameters through.

pub mod gguf;
pub mod gguf_tokenizer;
pub mod onnx;
pub mod reader;
pub mod tensors;

pub use reader::Reader;
pub use tensors::HostTensor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The tensors of a Hugging Face model directory's `model.safetensors`, and that file's path
/// (which errors name); the caller reads its own `config.json`.
pub fn read_model_dir(dir: &Path) -> crate::error::Result<(BTreeMap<String, HostTensor>, PathBuf)> {
    if !dir.is_dir() {
        let e = std::io::Error::new(std::io::ErrorKind::NotFound, "not a model directory (config.json + model.safetensors)");
        return Err(crate::error::Error::io(dir, e));
    }
    let file = dir.join("model.safetensors");
    let (tensors, _) = tensors::read(&file)?;
    Ok((tensors, file))
}
