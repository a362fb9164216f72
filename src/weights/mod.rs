//! Model-weight I/O: safetensors files as named host tensors, GGUF files, and the one
//! [`Reader`] every architecture loads its parameters through.

pub mod gguf;
pub mod gguf_tokenizer;
pub mod mapped;
pub mod onnx;
pub mod reader;
pub mod tensors;

pub use mapped::{MappedCheckpoint, Matrices};
pub use reader::Reader;
pub use tensors::HostTensor;

use std::collections::BTreeMap;
use std::path::Path;

/// A Hugging Face model directory's weights, mapped and read as a model takes them: its
/// `model.safetensors`, or the shards its `model.safetensors.index.json` lists (transformers'
/// `save_pretrained` of a large model), checked against the index. Errors name the weights file,
/// or the index. The caller reads its own `config.json`.
pub fn open_model_dir(dir: &Path) -> crate::error::Result<MappedCheckpoint> {
    if !dir.is_dir() {
        let e = std::io::Error::new(std::io::ErrorKind::NotFound, "not a model directory (config.json + model.safetensors)");
        return Err(crate::error::Error::io(dir, e));
    }
    let file = dir.join(WEIGHTS_FILE);
    let index = dir.join(SHARD_INDEX_FILE);
    match !file.exists() && index.exists() {
        true => open_shards(&index),
        false => MappedCheckpoint::open(&file),
    }
}

/// The block index of a tensor named `{prefix}{i}.…` (`model.layers.3.mlp…`, GGUF's `blk.3.…`).
pub(crate) fn layer_index(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.split_once('.')?.0.parse().ok()
}

const WEIGHTS_FILE: &str = "model.safetensors";
const SHARD_INDEX_FILE: &str = "model.safetensors.index.json";

/// The shards a `model.safetensors.index.json` maps tensor names to, checked against the index:
/// a missing shard, a tensor missing from its shard, or one in another shard than the index says
/// is named.
fn open_shards(index: &Path) -> crate::error::Result<MappedCheckpoint> {
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
    let mut paths = vec![];
    for shard in &shards {
        let path = dir.join(shard);
        if shard.contains(['/', '\\']) || !path.is_file() {
            return Err(Error::format(index, format!("shard {shard} is missing from {}", dir.display())));
        }
        paths.push(path);
    }
    let checkpoint = MappedCheckpoint::open_shards(&paths, index)?;
    for (shard, path) in shards.iter().zip(&paths) {
        for name in checkpoint.names_in(path) {
            match weight_map.get(name) {
                Some(listed) if listed == *shard => {}
                Some(listed) => {
                    return Err(Error::format(index, format!("tensor {name} is in {shard}, but the index lists it in {listed}")));
                }
                None => return Err(Error::format(index, format!("tensor {name} of {shard} is not in the index"))),
            }
        }
    }
    if let Some((name, shard)) = weight_map.iter().find(|(name, _)| !checkpoint.contains(name)) {
        return Err(Error::format(index, format!("tensor {name} is missing from shard {shard}")));
    }
    Ok(checkpoint)
}
