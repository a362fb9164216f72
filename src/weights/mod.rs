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

use crate::quantization::QuantizedMatrix;

/// The tensors of a Hugging Face model directory: its `model.safetensors`, or the shards its
/// `model.safetensors.index.json` lists (transformers' `save_pretrained` of a large model); and the
/// file errors should name (the weights file, or the index). The caller reads its own `config.json`.
pub fn read_model_dir(dir: &Path) -> crate::error::Result<(BTreeMap<String, HostTensor>, PathBuf)> {
    let (tensors, _, file) = read_model_dir_keeping(dir, false)?;
    Ok((tensors, file))
}

/// As [`read_model_dir`]; with `keep_16bit`, the F16 and BF16 matrices whose rows are whole
/// blocks of 32 values come apart, as stored ([`tensors::read_keeping`]), not widened to f32.
pub fn read_model_dir_keeping(dir: &Path, keep_16bit: bool) -> crate::error::Result<ModelWeights> {
    if !dir.is_dir() {
        let e = std::io::Error::new(std::io::ErrorKind::NotFound, "not a model directory (config.json + model.safetensors)");
        return Err(crate::error::Error::io(dir, e));
    }
    let file = dir.join(WEIGHTS_FILE);
    let index = dir.join(SHARD_INDEX_FILE);
    if !file.exists() && index.exists() {
        let (tensors, kept) = read_shards(&index, keep_16bit)?;
        return Ok((tensors, kept, index));
    }
    let (tensors, kept, _) = tensors::read_keeping(&file, keep_16bit)?;
    Ok((tensors, kept, file))
}

/// A model directory's f32 tensors, its matrices kept 16-bit, and the file errors name.
pub type ModelWeights = (BTreeMap<String, HostTensor>, BTreeMap<String, QuantizedMatrix>, PathBuf);

const WEIGHTS_FILE: &str = "model.safetensors";
const SHARD_INDEX_FILE: &str = "model.safetensors.index.json";

/// Every tensor of the shards a `model.safetensors.index.json` maps tensor names to, checked
/// against the index: a missing shard, a tensor missing from its shard, or one in another shard
/// than the index says is named.
fn read_shards(index: &Path, keep_16bit: bool) -> crate::error::Result<(BTreeMap<String, HostTensor>, BTreeMap<String, QuantizedMatrix>)> {
    use crate::error::Error;
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let Index { weight_map } = crate::files::read_json(index)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<&String> = weight_map.values().collect();
    shards.sort();
    shards.dedup();
    let (mut all, mut all_kept) = (BTreeMap::new(), BTreeMap::new());
    for shard in shards {
        let path = dir.join(shard);
        if shard.contains(['/', '\\']) || !path.is_file() {
            return Err(Error::format(index, format!("shard {shard} is missing from {}", dir.display())));
        }
        let (tensors, kept, _) = tensors::read_keeping(&path, keep_16bit)?;
        for name in tensors.keys().chain(kept.keys()) {
            match weight_map.get(name) {
                Some(listed) if listed == shard => {}
                Some(listed) => {
                    return Err(Error::format(index, format!("tensor {name} is in {shard}, but the index lists it in {listed}")));
                }
                None => return Err(Error::format(index, format!("tensor {name} of {shard} is not in the index"))),
            }
        }
        all.extend(tensors);
        all_kept.extend(kept);
    }
    if let Some((name, shard)) = weight_map.iter().find(|(name, _)| !all.contains_key(*name) && !all_kept.contains_key(*name)) {
        return Err(Error::format(index, format!("tensor {name} is missing from shard {shard}")));
    }
    Ok((all, all_kept))
}
