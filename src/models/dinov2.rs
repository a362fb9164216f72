//! DINOv2-style vision transformers (ViT with layer-scale), read from and written to Hugging
//! Face `Dinov2Model` checkpoints, or converted once from an ONNX export.
//!
//! Patch embedding (a convolution with stride = kernel = patch, computed as a linear over
//! flattened patches), a CLS token, learned position embeddings resized by bicubic
//! interpolation to the run's image size, pre-norm blocks with layer-scale and an exact-GELU
//! MLP, and a final LayerNorm. Every linear is an [`AdaptedLinear`] named by its Hugging Face
//! module path (`encoder.layer.0.attention.attention.query`), so PEFT adapter files line up.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::layers::{LayerNorm, ReadLayers, attention};
use crate::adapters::{Adaptable, AdaptedLinear, Deltas};
use crate::error::{Error, Result};
use crate::files::{read_json, write_json};
use crate::kernels;
use crate::weights::Reader;
use crate::weights::tensors::{self, HostTensor};

const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";

/// A Hugging Face `Dinov2Config`. Keys this model does not use are kept in `extra`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dinov2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// MLP width over hidden width; transformers' config type is an integer.
    #[serde(default = "default_mlp_ratio", deserialize_with = "whole_number")]
    pub mlp_ratio: usize,
    /// The side, in pixels, the position table was trained for (`position_embeddings` holds
    /// `(image_size / patch_size)^2 + 1` rows).
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub use_swiglu_ffn: bool,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn default_mlp_ratio() -> usize {
    4
}

/// A count written as `4` or `4.0`.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    let v = f64::deserialize(d)?;
    if v >= 0.0 && v.fract() == 0.0 { Ok(v as usize) } else { Err(serde::de::Error::custom(format!("expected a whole number, got {v}"))) }
}
fn default_channels() -> usize {
    3
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "gelu".into()
}
fn default_true() -> bool {
    true
}

impl Dinov2Config {
    pub fn read(path: &Path) -> Result<Self> {
        let config: Self = read_json(path)?;
        config.validate().map_err(|m| Error::format(path, m))?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("patch_size", self.patch_size),
            ("image_size", self.image_size),
            ("num_channels", self.num_channels),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_attention_heads));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!("image_size {} is not a multiple of patch_size {}", self.image_size, self.patch_size));
        }
        if self.use_swiglu_ffn {
            return Err("use_swiglu_ffn (the SwiGLU MLP of the giant models) is not supported".into());
        }
        if self.hidden_act != "gelu" {
            return Err(format!("hidden_act {:?} is not supported (only \"gelu\")", self.hidden_act));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!("layer_norm_eps must be a positive number, got {}", self.layer_norm_eps));
        }
        Ok(())
    }

    pub fn intermediate_size(&self) -> usize {
        self.hidden_size * self.mlp_ratio
    }

    /// Patches along one side of an `image_size` image.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// Patch embedding, CLS token and position embeddings.
#[derive(Module, Debug)]
pub struct Dinov2Embeddings {
    /// `[1, 1, hidden]`
    pub cls_token: Param<Tensor<3>>,
    /// `[1, hidden]`; used by masked-image pre-training only, kept so checkpoints round-trip.
    pub mask_token: Param<Tensor<2>>,
    /// `[1, grid^2 + 1, hidden]`
    pub position: Param<Tensor<3>>,
    /// The patch convolution as a linear: `[channels * patch * patch, hidden]`, inputs in the
    /// convolution weight's `(channel, row, column)` order.
    pub patch_weight: Param<Tensor<2>>,
    pub patch_bias: Param<Tensor<1>>,
}

/// One pre-norm block: `x + ls1 * attn(norm1(x))`, then `x + ls2 * mlp(norm2(x))`.
#[derive(Module, Debug)]
pub struct Dinov2Layer {
    pub norm1: LayerNorm,
    pub query: AdaptedLinear,
    pub key: AdaptedLinear,
    pub value: AdaptedLinear,
    /// `attention.output.dense`
    pub attention_output: AdaptedLinear,
    pub layer_scale1: Param<Tensor<1>>,
    pub norm2: LayerNorm,
    pub fc1: AdaptedLinear,
    pub fc2: AdaptedLinear,
    pub layer_scale2: Param<Tensor<1>>,
}

impl Dinov2Layer {
    linear_fields!(query, key, value, attention_output, fc1, fc2);

    /// The block on `x` `[batch, tokens, hidden]` with `heads` attention heads.
    pub fn forward(&self, x: Tensor<3>, heads: usize, deltas: &Deltas) -> Tensor<3> {
        let [b, t, hidden] = x.dims();
        let head_dim = hidden / heads;
        let split = |y: Tensor<3>| y.reshape([b, t, heads, head_dim]).swap_dims(1, 2);
        let h = self.norm1.forward(x.clone());
        let q = split(self.query.forward(h.clone(), deltas).mul_scalar(1.0 / (head_dim as f64).sqrt()));
        let k = split(self.key.forward(h.clone(), deltas));
        let v = split(self.value.forward(h, deltas));
        let no_mask = Tensor::zeros([1, 1, 1, t], &x.device());
        let (k, v, mask) = deltas.with_prefix(&self.key.path, k, v, no_mask);
        let context = attention(q, k, v, mask).swap_dims(1, 2).reshape([b, t, hidden]);
        let x = x + self.attention_output.forward(context, deltas) * self.layer_scale1.val().unsqueeze::<3>();
        let h = kernels::gelu(self.fc1.forward(self.norm2.forward(x.clone()), deltas));
        x.clone() + self.fc2.forward(h, deltas) * self.layer_scale2.val().unsqueeze::<3>()
    }
}

/// A DINOv2 backbone: embeddings, `num_hidden_layers` blocks and the final LayerNorm.
#[derive(Module, Debug)]
pub struct Dinov2 {
    pub embeddings: Dinov2Embeddings,
    pub layers: Vec<Dinov2Layer>,
    pub layernorm: LayerNorm,
    #[module(skip)]
    pub config: Dinov2Config,
    /// Prepended to every module path and tensor name (`""`, or `"dinov2."` inside
    /// `Dinov2ForImageClassification`).
    #[module(skip)]
    pub prefix: String,
}

impl Dinov2 {
    /// Loads `config.json` and `model.safetensors` from `dir`; tensor names may carry a
    /// `dinov2.` prefix or none; module paths get `prefix`.
    pub fn load(dir: &Path, prefix: &str, device: &Device) -> Result<Self> {
        let (mut tensors, file) = crate::weights::read_model_dir(dir)?;
        Self::from_tensors(Dinov2Config::read(&dir.join(CONFIG_FILE))?, &mut tensors, &file, prefix, device)
    }

    /// Builds the model from named tensors, removing those it uses. `file` names errors.
    pub fn from_tensors(
        config: Dinov2Config,
        tensors: &mut BTreeMap<String, HostTensor>,
        file: &Path,
        prefix: &str,
        device: &Device,
    ) -> Result<Self> {
        let stored = ["", "dinov2."].into_iter().find(|p| tensors.contains_key(&format!("{p}embeddings.cls_token"))).unwrap_or(prefix);
        let mut r = Reader::new(tensors, file, device).with_prefixes(stored, prefix);
        let (h, c) = (config.hidden_size, &config);
        let (ch, p) = (c.num_channels, c.patch_size);
        let patch = r.take("embeddings.patch_embeddings.projection.weight", [h, ch, p, p])?;
        let patch = HostTensor { shape: vec![h, ch * p * p], data: patch.data }.transpose();
        let mask_token = if r.has("embeddings.mask_token") {
            r.param("embeddings.mask_token", [1, h])?
        } else {
            Param::from_tensor(Tensor::zeros([1, h], device))
        };
        let embeddings = Dinov2Embeddings {
            cls_token: r.param("embeddings.cls_token", [1, 1, h])?,
            mask_token,
            position: r.param("embeddings.position_embeddings", [1, c.grid() * c.grid() + 1, h])?,
            patch_weight: Param::from_tensor(patch.to_tensor(device)),
            patch_bias: r.param("embeddings.patch_embeddings.projection.bias", [h])?,
        };
        let layers = (0..c.num_hidden_layers).map(|i| read_layer(&mut r, i, c)).collect::<Result<Vec<_>>>()?;
        let layernorm = r.layer_norm("layernorm", h, c.layer_norm_eps)?;
        r.reject_extra_layers("encoder.layer.", c.num_hidden_layers)?;
        Ok(Self { embeddings, layers, layernorm, config, prefix: prefix.to_string() })
    }

    /// The model for `size` x `size` images: the position table resized to `size / patch`
    /// patches a side by bicubic interpolation (as `transformers` does on the fly; done once
    /// here, so fine-tuning and saving work on the table actually used).
    pub fn with_image_size(mut self, size: usize) -> Result<Self> {
        let c = &self.config;
        if size == 0 || !size.is_multiple_of(c.patch_size) {
            return Err(Error::Config(format!(
                "image size {size} is not a positive multiple of the patch size {}: try {} or {}",
                c.patch_size,
                (size / c.patch_size).max(1) * c.patch_size,
                (size / c.patch_size + 1) * c.patch_size
            )));
        }
        if size == c.image_size {
            return Ok(self);
        }
        let table = HostTensor::from_tensor(&self.embeddings.position.val());
        let resized = resize_positions(&table, c.grid(), size / c.patch_size);
        let device = self.embeddings.position.device();
        let trainable = self.embeddings.position.is_require_grad();
        let position = Param::from_tensor(resized.to_tensor(&device));
        self.embeddings.position = if trainable { position } else { position.set_require_grad(false) };
        self.config.image_size = size;
        Ok(self)
    }

    /// Writes `config.json` and `model.safetensors` that [`Dinov2::load`] and `transformers`
    /// (`Dinov2Model`) read.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut config = serde_json::to_value(&self.config).map_err(|e| Error::format(dir.join(CONFIG_FILE), e))?;
        config["model_type"] = "dinov2".into();
        config.as_object_mut().expect("config is an object").entry("architectures").or_insert(serde_json::json!(["Dinov2Model"]));
        // The weights first: a directory with a config.json is complete.
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        tensors::write(&dir.join(WEIGHTS_FILE), &self.tensors(), Some(metadata))?;
        write_json(&dir.join(CONFIG_FILE), &config)
    }

    /// Every weight under its Hugging Face name, in PyTorch layout.
    pub fn tensors(&self) -> BTreeMap<String, HostTensor> {
        let (p, c, e) = (&self.prefix, &self.config, &self.embeddings);
        let mut out = BTreeMap::new();
        out.insert(format!("{p}embeddings.cls_token"), HostTensor::from_tensor(&e.cls_token.val()));
        out.insert(format!("{p}embeddings.mask_token"), HostTensor::from_tensor(&e.mask_token.val()));
        out.insert(format!("{p}embeddings.position_embeddings"), HostTensor::from_tensor(&e.position.val()));
        let patch = HostTensor::from_tensor(&e.patch_weight.val()).transpose();
        let shape = vec![c.hidden_size, c.num_channels, c.patch_size, c.patch_size];
        out.insert(format!("{p}embeddings.patch_embeddings.projection.weight"), HostTensor { shape, data: patch.data });
        out.insert(format!("{p}embeddings.patch_embeddings.projection.bias"), HostTensor::from_tensor(&e.patch_bias.val()));
        for (i, layer) in self.layers.iter().enumerate() {
            let l = format!("{p}encoder.layer.{i}.");
            layer.norm1.put(&mut out, &format!("{l}norm1"));
            layer.norm2.put(&mut out, &format!("{l}norm2"));
            out.insert(format!("{l}layer_scale1.lambda1"), HostTensor::from_tensor(&layer.layer_scale1.val()));
            out.insert(format!("{l}layer_scale2.lambda1"), HostTensor::from_tensor(&layer.layer_scale2.val()));
        }
        self.layernorm.put(&mut out, &format!("{p}layernorm"));
        for linear in self.linears() {
            linear.put(&mut out);
        }
        out
    }

    /// The normalized sequence output `[batch, 1 + patches, hidden]` (CLS first) for
    /// `pixels` `[batch, channels, size, size]`, where `size` is the model's image size.
    ///
    /// # Panics
    /// If the pixels do not have the model's channels and image size.
    pub fn forward(&self, pixels: Tensor<4>, deltas: &Deltas) -> Tensor<3> {
        let mut x = self.embed(pixels);
        for layer in &self.layers {
            x = layer.forward(x, self.config.num_attention_heads, deltas);
        }
        self.layernorm.forward(x)
    }

    /// The tokens `[batch, 1 + patches, hidden]` before the first block: CLS and the patch
    /// embeddings, plus the position table.
    ///
    /// # Panics
    /// If the pixels do not have the model's channels and image size.
    pub fn embed(&self, pixels: Tensor<4>) -> Tensor<3> {
        let [b, ch, height, width] = pixels.dims();
        let (c, e) = (&self.config, &self.embeddings);
        assert!(
            ch == c.num_channels && height == c.image_size && width == c.image_size,
            "pixels {:?} do not fit the model ({} x {c:?}px)",
            pixels.dims(),
            c.num_channels
        );
        let (p, n, hidden) = (c.patch_size, c.grid(), c.hidden_size);
        let patches = pixels.reshape([b, ch, n, p, n, p]).permute([0, 2, 4, 1, 3, 5]).reshape([b, n * n, ch * p * p]);
        let tokens = patches.matmul(e.patch_weight.val().unsqueeze::<3>()) + e.patch_bias.val().unsqueeze::<3>();
        let cls = e.cls_token.val().expand([b, 1, hidden]);
        Tensor::cat(vec![cls, tokens], 1) + e.position.val()
    }
}

fn read_layer(r: &mut Reader, i: usize, c: &Dinov2Config) -> Result<Dinov2Layer> {
    let (h, m, eps, bias) = (c.hidden_size, c.intermediate_size(), c.layer_norm_eps, c.qkv_bias);
    let p = format!("encoder.layer.{i}.");
    Ok(Dinov2Layer {
        norm1: r.layer_norm(&format!("{p}norm1"), h, eps)?,
        query: r.linear(&format!("{p}attention.attention.query"), h, h, bias)?,
        key: r.linear(&format!("{p}attention.attention.key"), h, h, bias)?,
        value: r.linear(&format!("{p}attention.attention.value"), h, h, bias)?,
        attention_output: r.linear(&format!("{p}attention.output.dense"), h, h, true)?,
        layer_scale1: r.param(&format!("{p}layer_scale1.lambda1"), [h])?,
        norm2: r.layer_norm(&format!("{p}norm2"), h, eps)?,
        fc1: r.linear(&format!("{p}mlp.fc1"), h, m, true)?,
        fc2: r.linear(&format!("{p}mlp.fc2"), m, h, true)?,
        layer_scale2: r.param(&format!("{p}layer_scale2.lambda1"), [h])?,
    })
}

/// PyTorch's bicubic interpolation matrix `[to, from]` for one axis (`align_corners=False`,
/// cubic coefficient -0.75, border samples clamped), which ONNX `Resize` (cubic, half_pixel)
/// computes too.
pub fn bicubic_matrix(from: usize, to: usize) -> Vec<Vec<f64>> {
    const A: f64 = -0.75;
    let near = |t: f64| ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let far = |t: f64| ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A;
    let scale = from as f64 / to as f64;
    (0..to)
        .map(|i| {
            let src = (i as f64 + 0.5) * scale - 0.5;
            let base = src.floor();
            let t = src - base;
            let weights = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
            let mut row = vec![0.0; from];
            for (k, w) in weights.iter().enumerate() {
                let index = (base as i64 - 1 + k as i64).clamp(0, from as i64 - 1) as usize;
                row[index] += w;
            }
            row
        })
        .collect()
}

/// `[1, from^2 + 1, d]` position table -> `[1, to^2 + 1, d]`: the CLS row kept, the patch grid
/// resized bicubically along both axes.
fn resize_positions(table: &HostTensor, from: usize, to: usize) -> HostTensor {
    let d = table.shape[2];
    let m = bicubic_matrix(from, to);
    let grid = &table.data[d..];
    // Rows first (`[to, from, d]`), then columns.
    let mut rows = vec![0.0f64; to * from * d];
    for (y, weights) in m.iter().enumerate() {
        for (i, &w) in weights.iter().enumerate().filter(|(_, w)| **w != 0.0) {
            for x in 0..from {
                let (src, dst) = ((i * from + x) * d, (y * from + x) * d);
                for k in 0..d {
                    rows[dst + k] += w * grid[src + k] as f64;
                }
            }
        }
    }
    let mut data = table.data[..d].to_vec();
    data.resize(d + to * to * d, 0.0);
    for y in 0..to {
        for (x, weights) in m.iter().enumerate() {
            let dst = d + (y * to + x) * d;
            for (j, &w) in weights.iter().enumerate().filter(|(_, w)| **w != 0.0) {
                let src = (y * from + j) * d;
                for k in 0..d {
                    data[dst + k] += (w * rows[src + k]) as f32;
                }
            }
        }
    }
    HostTensor { shape: vec![1, to * to + 1, d], data }
}

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
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: (hidden / 64).max(1),
        mlp_ratio: fc1.shape[0] / hidden,
        image_size: grid * patch_size,
        patch_size,
        num_channels: channels,
        layer_norm_eps: 1e-6,
        hidden_act: "gelu".into(),
        use_swiglu_ffn: false,
        qkv_bias: true,
        extra: BTreeMap::from([("layerscale_value".to_string(), serde_json::json!(1.0))]),
    };
    config.validate().map_err(|m| Error::format(path, m))?;
    Ok(config)
}

impl Adaptable for Dinov2 {
    fn linears(&self) -> Vec<&AdaptedLinear> {
        self.layers.iter().flat_map(|l| l.linears()).collect()
    }

    fn map_linears(self, f: &mut dyn FnMut(AdaptedLinear) -> AdaptedLinear) -> Self {
        let layers = self.layers.into_iter().map(|l| l.map_linears(f)).collect();
        Self { layers, ..self }
    }
}

impl crate::models::Architecture for Dinov2 {
    const DEFAULT_TARGETS: &'static [&'static str] = &["query", "value"];
    const ADAPTER_SITES: &'static [&'static str] = &["attention.output.dense", "mlp.fc2"];
    const KEY_PROJECTIONS: &'static [&'static str] = &["key"];
    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "DINOv2-style ViT, {} layers, hidden {}, {} heads, MLP {}, patch {}, {} px ({} patches + CLS)",
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size(),
            c.patch_size,
            c.image_size,
            c.grid() * c.grid()
        )
    }
    /// Tokens per image: patches plus CLS.
    fn max_positions(&self) -> usize {
        self.config.grid() * self.config.grid() + 1
    }
    fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }
    fn save(&self, dir: &Path) -> Result<()> {
        Dinov2::save(self, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_rows_sum_to_one_and_identity_when_sizes_match() {
        for (from, to) in [(37, 8), (37, 16), (4, 9), (5, 5)] {
            for row in bicubic_matrix(from, to) {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
        let same = bicubic_matrix(5, 5);
        for (i, row) in same.iter().enumerate() {
            for (j, &w) in row.iter().enumerate() {
                assert!((w - f64::from(u8::from(i == j))).abs() < 1e-12, "{i},{j}: {w}");
            }
        }
    }

    #[test]
    fn resized_positions_keep_cls_and_linear_ramps() {
        // A ramp along x is reproduced at the sample centres away from the clamped border.
        let (from, to, d) = (8, 4, 2);
        let mut data = vec![7.0, -7.0];
        for _y in 0..from {
            for x in 0..from {
                data.extend([x as f32, 1.0]);
            }
        }
        let out = resize_positions(&HostTensor { shape: vec![1, from * from + 1, d], data }, from, to);
        assert_eq!(out.shape, [1, to * to + 1, d]);
        assert_eq!(&out.data[..2], &[7.0, -7.0]);
        for y in 0..to {
            for x in 1..to - 1 {
                let v = &out.data[d + (y * to + x) * d..][..2];
                let centre = (x as f32 + 0.5) * 2.0 - 0.5;
                assert!((v[0] - centre).abs() < 1e-4 && (v[1] - 1.0).abs() < 1e-5, "({y},{x}) = {v:?}, expected {centre}");
            }
        }
    }
}
