//! The vision transformers (ViTs) replora reads, one model for three families: DINOv2 (layer
//! scale), ViT and CLIP's vision tower ([`Variant`], chosen by `model_type`), read from and
//! written to their Hugging Face checkpoints (`Dinov2Model`, `ViTModel`, `CLIPVisionModel` or a
//! full `CLIPModel`), or, for DINOv2, converted once from an ONNX export
//! ([`convert_onnx_dir`]).
//!
//! Patch embedding (a convolution with stride = kernel = patch, computed as a linear over
//! flattened patches), a CLS token, learned position embeddings resized by bicubic
//! interpolation to the run's image size, pre-norm blocks (attention, then a two-layer MLP) and a
//! final LayerNorm. Every linear is an [`AdaptedLinear`] named by its Hugging Face module path
//! (`encoder.layer.0.attention.attention.query`), so PEFT adapter files line up.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Gradients;

pub use super::dinov2_onnx::{convert_onnx_dir, from_onnx};
use super::layers::{Activation, LayerNorm, ReadLayers, attention};
use super::pixels::PixelStatistics;
pub use super::vit_config::{Dinov2Config, Variant};
use crate::adapters::base_weight::Quantize;
use crate::adapters::{Adaptable, AdaptedLinear, Deltas};
use crate::error::{Error, Result};
use crate::files::write_json;
use crate::models::recompute::{LayerPasses, TaskLoss, checkpointed_backward};
use crate::weights::Reader;
use crate::weights::tensors::{self, HostTensor};

pub(super) const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";

/// Patch embedding, CLS token and position embeddings (with CLIP's norm of them).
#[derive(Module, Debug)]
pub struct Dinov2Embeddings {
    /// `[1, 1, hidden]` (CLIP stores `[hidden]`)
    pub cls_token: Param<Tensor<3>>,
    /// DINOv2's `[1, hidden]`, used by masked-image pre-training only, kept so checkpoints
    /// round-trip.
    pub mask_token: Option<Param<Tensor<2>>>,
    /// `[1, grid^2 + 1, hidden]` (CLIP stores `[grid^2 + 1, hidden]`)
    pub position: Param<Tensor<3>>,
    /// The patch convolution as a linear: `[channels * patch * patch, hidden]`, inputs in the
    /// convolution weight's `(channel, row, column)` order.
    pub patch_weight: Param<Tensor<2>>,
    /// None in CLIP, whose patch convolution has no bias.
    pub patch_bias: Option<Param<Tensor<1>>>,
    /// CLIP's `pre_layrnorm` (sic) of the tokens before the first block.
    pub pre_norm: Option<LayerNorm>,
}

/// One pre-norm block: `x + ls1 * attn(norm1(x))`, then `x + ls2 * mlp(norm2(x))`, the layer
/// scales DINOv2's only.
#[derive(Module, Debug)]
pub struct Dinov2Layer {
    pub norm1: LayerNorm,
    pub query: AdaptedLinear,
    pub key: AdaptedLinear,
    pub value: AdaptedLinear,
    /// `attention.output.dense` (CLIP's `self_attn.out_proj`)
    pub attention_output: AdaptedLinear,
    pub layer_scale1: Option<Param<Tensor<1>>>,
    pub norm2: LayerNorm,
    pub fc1: AdaptedLinear,
    pub fc2: AdaptedLinear,
    pub layer_scale2: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub activation: Activation,
}

/// `x` times a layer scale, if there is one.
fn scaled(x: Tensor<3>, scale: &Option<Param<Tensor<1>>>) -> Tensor<3> {
    match scale {
        Some(s) => x * s.val().unsqueeze::<3>(),
        None => x,
    }
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
        let x = x + scaled(self.attention_output.forward(context, deltas), &self.layer_scale1);
        let h = self.activation.forward(self.fc1.forward(self.norm2.forward(x.clone()), deltas));
        x.clone() + scaled(self.fc2.forward(h, deltas), &self.layer_scale2)
    }
}

/// A vision transformer: embeddings, `num_hidden_layers` blocks and the final LayerNorm.
#[derive(Module, Debug)]
pub struct Dinov2 {
    pub embeddings: Dinov2Embeddings,
    pub layers: Vec<Dinov2Layer>,
    /// DINOv2's and ViT's `layernorm` of every token; CLIP's `post_layernorm` of the pooled CLS
    /// token only.
    pub layernorm: LayerNorm,
    #[module(skip)]
    pub config: Dinov2Config,
    /// What its image processor normalizes pixels with (the task maps replora's
    /// ImageNet-normalized batches to it: [`PixelStatistics::from_imagenet`]).
    #[module(skip)]
    pub pixels: PixelStatistics,
    /// Prepended to every module path and tensor name (`""`, or the variant's task prefix, e.g.
    /// `"dinov2."` inside `Dinov2ForImageClassification`).
    #[module(skip)]
    pub prefix: String,
}

impl Dinov2 {
    /// Loads `config.json` and `model.safetensors` from `dir`; tensor names may carry the
    /// variant's task prefix (`dinov2.`, `vit.`, `vision_model.`) or none; module paths get
    /// `prefix`.
    /// A file's F16 and BF16 linears stay 16-bit (see `adapters::FrozenBlocks`).
    pub fn load(dir: &Path, prefix: &str, device: &Device) -> Result<Self> {
        Self::load_as(dir, prefix, Quantize::Stored, device)
    }

    /// [`Dinov2::load`] with the base weights held as `quantize` says (`--quantize`), each
    /// linear converted as it is read.
    pub fn load_as(dir: &Path, prefix: &str, quantize: Quantize, device: &Device) -> Result<Self> {
        let config = Dinov2Config::read(&dir.join(CONFIG_FILE))?;
        let mut checkpoint = crate::weights::open_model_dir(dir)?;
        let model = Self::from_reader(config, Reader::mapped(&mut checkpoint, quantize.matrices(), device), prefix)?.quantized(quantize)?;
        // The checkpoint's own processor, where it ships one, over the family's default.
        Ok(match PixelStatistics::read(dir)? {
            Some(pixels) => Self { pixels, ..model },
            None => model,
        })
    }

    /// Loads `dir` with its variant's task prefix on module paths (`vit.`), as an image
    /// classifier names them.
    pub fn load_in_task(dir: &Path, quantize: Quantize, device: &Device) -> Result<Self> {
        let variant = Dinov2Config::read(&dir.join(CONFIG_FILE))?.variant();
        Self::load_as(dir, variant.task_prefix(), quantize, device)
    }

    pub fn variant(&self) -> Variant {
        self.config.variant()
    }

    /// Builds the model from named tensors, removing those it uses. `file` names errors.
    pub fn from_tensors(
        config: Dinov2Config,
        tensors: &mut BTreeMap<String, HostTensor>,
        file: &Path,
        prefix: &str,
        device: &Device,
    ) -> Result<Self> {
        Self::from_reader(config, Reader::new(tensors, file, device), prefix)
    }

    /// Builds the model from `r`'s tensors (under no prefix yet), module paths under `prefix`.
    pub(crate) fn from_reader(config: Dinov2Config, r: Reader, prefix: &str) -> Result<Self> {
        let variant = config.variant();
        let stored = ["", variant.task_prefix()].into_iter().find(|p| r.has(&format!("{p}{}", variant.cls_name())));
        let mut r = r.with_prefixes(stored.unwrap_or(prefix), prefix);
        let embeddings = read_embeddings(&mut r, &config)?;
        let layers = (0..config.num_hidden_layers).map(|i| read_layer(&mut r, i, &config)).collect::<Result<Vec<_>>>()?;
        let layernorm = r.layer_norm(variant.final_norm(), config.hidden_size, config.eps())?;
        r.reject_extra_layers(variant.layers_prefix(), config.num_hidden_layers)?;
        let pixels = PixelStatistics::of(config.variant());
        Ok(Self { embeddings, layers, layernorm, config, pixels, prefix: prefix.to_string() })
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
    /// (the variant's bare model, e.g. `ViTModel`) read.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let variant = self.variant();
        let mut config = serde_json::to_value(&self.config).map_err(|e| Error::format(dir.join(CONFIG_FILE), e))?;
        config["model_type"] = variant.model_type().into();
        config
            .as_object_mut()
            .expect("config is an object")
            .entry("architectures")
            .or_insert(serde_json::json!([variant.bare_architecture()]));
        // The weights first: a directory with a config.json is complete.
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        tensors::write(&dir.join(WEIGHTS_FILE), &self.tensors(), Some(metadata))?;
        write_json(&dir.join(CONFIG_FILE), &config)
    }

    /// Every weight under its Hugging Face name, in PyTorch layout.
    pub fn tensors(&self) -> BTreeMap<String, HostTensor> {
        let (p, c, e) = (&self.prefix, &self.config, &self.embeddings);
        let variant = self.variant();
        let mut out = BTreeMap::new();
        let (cls, position) = (HostTensor::from_tensor(&e.cls_token.val()), HostTensor::from_tensor(&e.position.val()));
        let patch = HostTensor::from_tensor(&e.patch_weight.val()).transpose();
        let patch = HostTensor { shape: vec![c.hidden_size, c.num_channels, c.patch_size, c.patch_size], data: patch.data };
        if variant == Variant::Clip {
            out.insert(format!("{p}embeddings.class_embedding"), HostTensor { shape: vec![c.hidden_size], data: cls.data });
            let rows = position.shape[1];
            out.insert(
                format!("{p}embeddings.position_embedding.weight"),
                HostTensor { shape: vec![rows, c.hidden_size], data: position.data },
            );
            out.insert(format!("{p}embeddings.patch_embedding.weight"), patch);
        } else {
            out.insert(format!("{p}embeddings.cls_token"), cls);
            out.insert(format!("{p}embeddings.position_embeddings"), position);
            out.insert(format!("{p}embeddings.patch_embeddings.projection.weight"), patch);
        }
        if let Some(bias) = &e.patch_bias {
            out.insert(format!("{p}embeddings.patch_embeddings.projection.bias"), HostTensor::from_tensor(&bias.val()));
        }
        if let Some(mask) = &e.mask_token {
            out.insert(format!("{p}embeddings.mask_token"), HostTensor::from_tensor(&mask.val()));
        }
        if let Some(norm) = &e.pre_norm {
            norm.put(&mut out, &format!("{p}pre_layrnorm"));
        }
        let names = variant.layer_names();
        for (i, layer) in self.layers.iter().enumerate() {
            let l = format!("{p}{}", variant.layer_prefix(i));
            layer.norm1.put(&mut out, &format!("{l}{}", names.norm1));
            layer.norm2.put(&mut out, &format!("{l}{}", names.norm2));
            for (k, scale) in [(1, &layer.layer_scale1), (2, &layer.layer_scale2)] {
                if let Some(scale) = scale {
                    out.insert(format!("{l}layer_scale{k}.lambda1"), HostTensor::from_tensor(&scale.val()));
                }
            }
        }
        self.layernorm.put(&mut out, &format!("{p}{}", variant.final_norm()));
        for linear in self.linears() {
            linear.put(&mut out);
        }
        out
    }

    /// The sequence output `[batch, 1 + patches, hidden]` (CLS first) for `pixels`
    /// `[batch, channels, size, size]`, where `size` is the model's image size: transformers'
    /// `last_hidden_state` (normalized by the final LayerNorm, except CLIP's).
    ///
    /// # Panics
    /// If the pixels do not have the model's channels and image size.
    pub fn forward(&self, pixels: Tensor<4>, deltas: &Deltas) -> Tensor<3> {
        let mut x = self.first_layer_input(pixels);
        for layer in &self.layers {
            x = layer.forward(x, self.config.num_attention_heads, deltas);
        }
        self.final_norm(x)
    }

    /// `task.loss` of [`Dinov2::forward`], its gradients handed to `collect`, recomputing each
    /// layer's activations in the backward pass ([`crate::models::recompute`]).
    pub fn checkpointed_backward(&self, pixels: Tensor<4>, task: TaskLoss<'_, 3>, collect: impl FnMut(Gradients)) -> Tensor<1> {
        let heads = self.config.num_attention_heads;
        let (plain, frozen) = (self.valid(), (task.deltas)().without_autodiff());
        let passes = LayerPasses {
            embeddings: self.first_layer_input(pixels.clone()),
            embed_again: &|| self.first_layer_input(pixels.clone()),
            layers: self.layers.len(),
            plain_layer: &|i, x| plain.layers[i].forward(x, heads, &frozen),
            tracked_layer: &|i, x| self.layers[i].forward(x, heads, &(task.deltas)()),
            loss: &|x| (task.loss)(self.final_norm(x)),
            scale: task.scale,
        };
        checkpointed_backward(passes, collect)
    }

    /// The embedded tokens, normed where the model norms them before its blocks (CLIP).
    fn first_layer_input(&self, pixels: Tensor<4>) -> Tensor<3> {
        let x = self.embed(pixels);
        match &self.embeddings.pre_norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }

    /// The last block's output normed as `last_hidden_state` is (CLIP's is not).
    fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        if self.variant() == Variant::Clip { x } else { self.layernorm.forward(x) }
    }

    /// The image feature `[batch, hidden]` of a [`Dinov2::forward`] output: its CLS token
    /// (what `ViTForImageClassification` classifies), for CLIP normalized by `post_layernorm`
    /// (transformers' `pooler_output`).
    pub fn pooled(&self, hidden: Tensor<3>) -> Tensor<2> {
        let cls = hidden.narrow(1, 0, 1).squeeze_dim::<2>(1);
        if self.variant() == Variant::Clip { self.layernorm.forward(cls) } else { cls }
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
        let mut tokens = patches.matmul(e.patch_weight.val().unsqueeze::<3>());
        if let Some(bias) = &e.patch_bias {
            tokens = tokens + bias.val().unsqueeze::<3>();
        }
        let cls = e.cls_token.val().expand([b, 1, hidden]);
        Tensor::cat(vec![cls, tokens], 1) + e.position.val()
    }
}

/// The embeddings in DINOv2's shapes (CLIP stores the CLS token as `[hidden]` and the position
/// table as `[rows, hidden]`).
fn read_embeddings(r: &mut Reader, c: &Dinov2Config) -> Result<Dinov2Embeddings> {
    let (h, ch, p, rows) = (c.hidden_size, c.num_channels, c.patch_size, c.grid() * c.grid() + 1);
    let device = r.device().clone();
    let as_param = |t: HostTensor, shape: Vec<usize>| -> Param<Tensor<3>> {
        Param::from_tensor(HostTensor { shape, data: t.data }.to_tensor(&device))
    };
    let patch_as_linear = |t: HostTensor| {
        let t = HostTensor { shape: vec![h, ch * p * p], data: t.data }.transpose();
        Param::from_tensor(t.to_tensor(&device))
    };
    if c.variant() == Variant::Clip {
        return Ok(Dinov2Embeddings {
            cls_token: as_param(r.take("embeddings.class_embedding", [h])?, vec![1, 1, h]),
            mask_token: None,
            position: as_param(r.take("embeddings.position_embedding.weight", [rows, h])?, vec![1, rows, h]),
            patch_weight: patch_as_linear(r.take("embeddings.patch_embedding.weight", [h, ch, p, p])?),
            patch_bias: None,
            pre_norm: Some(r.layer_norm("pre_layrnorm", h, c.eps())?),
        });
    }
    let mask_token = match c.variant() {
        Variant::Dinov2 if r.has("embeddings.mask_token") => Some(r.param("embeddings.mask_token", [1, h])?),
        Variant::Dinov2 => Some(Param::from_tensor(Tensor::zeros([1, h], &device))),
        _ => None,
    };
    Ok(Dinov2Embeddings {
        cls_token: r.param("embeddings.cls_token", [1, 1, h])?,
        mask_token,
        position: r.param("embeddings.position_embeddings", [1, rows, h])?,
        patch_weight: patch_as_linear(r.take("embeddings.patch_embeddings.projection.weight", [h, ch, p, p])?),
        patch_bias: Some(r.param("embeddings.patch_embeddings.projection.bias", [h])?),
        pre_norm: None,
    })
}

fn read_layer(r: &mut Reader, i: usize, c: &Dinov2Config) -> Result<Dinov2Layer> {
    let (h, m, eps, bias) = (c.hidden_size, c.intermediate_size(), c.eps(), c.qkv_bias());
    let (p, names) = (c.variant().layer_prefix(i), c.variant().layer_names());
    let name = |part: &str| format!("{p}{part}");
    let mut layer_scale = |k: usize| -> Result<Option<Param<Tensor<1>>>> {
        if !c.variant().has_layer_scale() {
            return Ok(None);
        }
        r.param(&name(&format!("layer_scale{k}.lambda1")), [h]).map(Some)
    };
    let (layer_scale1, layer_scale2) = (layer_scale(1)?, layer_scale(2)?);
    Ok(Dinov2Layer {
        norm1: r.layer_norm(&name(names.norm1), h, eps)?,
        query: r.linear(&name(names.query), h, h, bias)?,
        key: r.linear(&name(names.key), h, h, bias)?,
        value: r.linear(&name(names.value), h, h, bias)?,
        attention_output: r.linear(&name(names.attention_output), h, h, true)?,
        layer_scale1,
        norm2: r.layer_norm(&name(names.norm2), h, eps)?,
        fc1: r.linear(&name(names.fc1), h, m, true)?,
        fc2: r.linear(&name(names.fc2), m, h, true)?,
        layer_scale2,
        activation: c.activation(),
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
    /// ViT's and DINOv2's `query`, `value`; CLIP's `q_proj`, `v_proj`.
    fn targets_of(&self, method: crate::adapters::Method) -> &'static [&'static str] {
        self.variant().default_targets(method)
    }
    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{}, {} layers, hidden {}, {} heads, MLP {}, patch {}, {} px ({} patches + CLS)",
            self.variant().name(),
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
