//! A video transformer grown from a pre-trained image ViT (DINOv2-style), with TimeSformer's
//! divided space-time attention.
//!
//! Each frame is cut into patches by the ViT's own patch embedding (CLS and position table
//! included), and a temporal position embedding (`time_embeddings`, one row per frame) is added
//! to every token of its frame. Each block then runs, in order:
//! - **temporal attention**: every token attends to the tokens at the same place (the same patch,
//!   or CLS) in the other frames: pre-norm, query/key/value, output projection, then a new
//!   linear `temporal_fc`, added to the tokens (a residual branch);
//! - **spatial attention and MLP**: the pre-trained ViT block, on each frame alone.
//!
//! The clip's feature is each frame's final CLS token, averaged over frames.
//!
//! Initialisation (as TimeSformer's): the temporal attention's norm and projections are copies
//! of the same block's pre-trained spatial ones, and `temporal_fc` and `time_embeddings` start at
//! zero. The temporal branch then adds nothing, so the untrained model is exactly the image ViT
//! run on each frame, its CLS features averaged over time. `temporal_fc` and `time_embeddings`
//! are new: they train in every adapter run (as a head does); the copied temporal projections
//! are frozen base weights that the adapters may target (`temporal_query`, `temporal_value`, ...).
//!
//! Checkpoints are the image ViT's `Dinov2Model` tensors plus `encoder.layer.N.temporal.*` and
//! `time_embeddings`, with `video_frames` in `config.json`; a plain `Dinov2Model` directory loads
//! with the temporal parts initialised as above.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Gradients;

use super::dinov2::{Dinov2, Dinov2Config, Dinov2Layer};
use super::layers::{LayerNorm, ReadLayers, attention};
use crate::adapters::base_weight::Quantize;
use crate::adapters::{Adaptable, AdaptedLinear, BaseWeight, Deltas, Sites};
use crate::error::{Error, Result};
use crate::models::recompute::{LayerPasses, TaskLoss, checkpointed_backward};
use crate::quantization::BlockFormat;
use crate::weights::Reader;
use crate::weights::tensors::{self, HostTensor};

/// `config.json` key of the frames a saved video model was trained on.
const FRAMES_KEY: &str = "video_frames";
/// Checkpoint name of the temporal position table `[frames, hidden]`.
const TIME_EMBEDDINGS: &str = "time_embeddings";

/// One block's temporal attention (see the module docs).
#[derive(Module, Debug)]
pub struct TemporalAttention {
    pub norm: LayerNorm,
    pub query: AdaptedLinear,
    pub key: AdaptedLinear,
    pub value: AdaptedLinear,
    pub output: AdaptedLinear,
    /// The zero-initialised projection that opens the temporal branch.
    pub fc: AdaptedLinear,
}

impl TemporalAttention {
    linear_fields!(query, key, value, output, fc);

    /// The module path prefix of block `i`'s temporal attention.
    fn path(prefix: &str, i: usize) -> String {
        format!("{prefix}encoder.layer.{i}.temporal.")
    }

    /// TimeSformer's start: block `layer`'s spatial norm and projections copied (fresh
    /// parameters), `fc` zero.
    fn from_spatial(layer: &Dinov2Layer, path: &str) -> Self {
        // A quantized or 16-bit weight stays so, its blocks shared with the spatial linear's.
        let copy = |l: &AdaptedLinear, name: &str| {
            let (path, bias) = (format!("{path}{name}"), l.bias.as_ref().map(|b| b.val().detach()));
            match &l.weight {
                BaseWeight::Quantized(blocks) => AdaptedLinear::quantized(path, blocks.clone(), bias),
                BaseWeight::Dense(w) => AdaptedLinear::new(path, w.val().detach(), bias),
            }
        };
        let hidden = layer.attention_output.d_out();
        let device = layer.attention_output.weight.device();
        let norm = LayerNorm {
            weight: Param::from_tensor(layer.norm1.weight.val().detach()),
            bias: layer.norm1.bias.as_ref().map(|b| Param::from_tensor(b.val().detach())),
            eps: layer.norm1.eps,
        };
        TemporalAttention {
            norm,
            query: copy(&layer.query, "temporal_query"),
            key: copy(&layer.key, "temporal_key"),
            value: copy(&layer.value, "temporal_value"),
            output: copy(&layer.attention_output, "temporal_output"),
            fc: AdaptedLinear::new(
                format!("{path}temporal_fc"),
                Tensor::zeros([hidden, hidden], &device),
                Some(Tensor::zeros([hidden], &device)),
            ),
        }
    }

    fn read(r: &mut Reader, path: &str, c: &Dinov2Config) -> Result<Self> {
        let (h, bias) = (c.hidden_size, c.qkv_bias());
        Ok(TemporalAttention {
            norm: r.layer_norm(&format!("{path}norm"), h, c.eps())?,
            query: r.linear(&format!("{path}temporal_query"), h, h, bias)?,
            key: r.linear(&format!("{path}temporal_key"), h, h, bias)?,
            value: r.linear(&format!("{path}temporal_value"), h, h, bias)?,
            output: r.linear(&format!("{path}temporal_output"), h, h, true)?,
            fc: r.linear(&format!("{path}temporal_fc"), h, h, true)?,
        })
    }

    /// `x` `[batch * frames, tokens, hidden]` plus attention over the frames at each token.
    fn forward(&self, x: Tensor<3>, frames: usize, heads: usize, deltas: &Deltas) -> Tensor<3> {
        let [bt, tokens, hidden] = x.dims();
        let (b, head_dim) = (bt / frames, hidden / heads);
        // [batch * tokens, frames, hidden]: each sequence is one place across time.
        let y = x.clone().reshape([b, frames, tokens, hidden]).swap_dims(1, 2).reshape([b * tokens, frames, hidden]);
        let split = |y: Tensor<3>| y.reshape([b * tokens, frames, heads, head_dim]).swap_dims(1, 2);
        let h = self.norm.forward(y);
        let q = split(self.query.forward(h.clone(), deltas).mul_scalar(1.0 / (head_dim as f64).sqrt()));
        let k = split(self.key.forward(h.clone(), deltas));
        let v = split(self.value.forward(h, deltas));
        let no_mask = Tensor::zeros([1, 1, 1, frames], &x.device());
        let (k, v, mask) = deltas.with_prefix(&self.key.path, k, v, no_mask);
        let context = attention(q, k, v, mask).swap_dims(1, 2).reshape([b * tokens, frames, hidden]);
        let out = self.fc.forward(self.output.forward(context, deltas), deltas);
        let out = out.reshape([b, tokens, frames, hidden]).swap_dims(1, 2).reshape([bt, tokens, hidden]);
        x + out
    }
}

/// The video transformer: the image ViT's blocks with a temporal attention before each.
#[derive(Module, Debug)]
pub struct VideoVit {
    pub spatial: Dinov2,
    pub temporal: Vec<TemporalAttention>,
    /// `[frames, hidden]`, added to every token of each frame.
    pub time_embeddings: Param<Tensor<2>>,
    #[module(skip)]
    pub frames: usize,
}

impl VideoVit {
    /// The video model for clips of `frames` frames around a pre-trained image ViT, its temporal
    /// parts initialised so that it computes the frame-averaged image features.
    pub fn from_image(spatial: Dinov2, frames: usize) -> Self {
        let temporal = spatial
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| TemporalAttention::from_spatial(l, &TemporalAttention::path(&spatial.prefix, i)))
            .collect();
        let device = spatial.embeddings.position.device();
        let time_embeddings = Param::from_tensor(Tensor::zeros([frames, spatial.config.hidden_size], &device));
        VideoVit { spatial, temporal, time_embeddings, frames }
    }

    /// Loads a video model saved by [`VideoVit::save`], or an image ViT (`Dinov2Model`
    /// directory) with fresh temporal parts, for clips of `frames` frames at `image_size` pixels.
    /// A file's F16 and BF16 linears stay 16-bit, but the new `temporal_fc`s, which train.
    /// With `quantize`, the base's linears are held as it says (`--quantize`), the image ViT's
    /// converted as they are read.
    pub fn load(dir: &Path, frames: usize, image_size: usize, quantize: Quantize, device: &Device) -> Result<Self> {
        let mut checkpoint = crate::weights::open_model_dir(dir)?;
        let config_path = dir.join("config.json");
        let config = Dinov2Config::read(&config_path)?;
        if config.variant() != super::dinov2::Variant::Dinov2 {
            return Err(Error::format(
                &config_path,
                format!("video models grow from a DINOv2 ViT (model_type dinov2), not a {}", config.variant().name()),
            ));
        }
        let saved_frames = config.extra.get(FRAMES_KEY).and_then(|v| v.as_u64()).map(|v| v as usize);
        let spatial = Dinov2::from_reader(config.clone(), Reader::mapped(&mut checkpoint, quantize.matrices(), device), "")?;
        let model = match saved_frames {
            None => VideoVit::from_image(spatial, frames),
            Some(saved) if saved != frames => {
                return Err(Error::format(
                    &config_path,
                    format!("this video model was trained on {saved} frames per clip; use --frames {saved}"),
                ));
            }
            Some(_) => {
                // Read as stored: `temporal_fc` trains in f32, so converting it on the way in
                // would round it; `quantized` below converts the rest.
                let mut r = Reader::mapped(&mut checkpoint, crate::weights::Matrices::Stored, device);
                let mut temporal = (0..config.num_hidden_layers)
                    .map(|i| TemporalAttention::read(&mut r, &TemporalAttention::path("", i), &config))
                    .collect::<Result<Vec<_>>>()?;
                for t in &mut temporal {
                    t.fc.weight = t.fc.weight.clone().widened();
                }
                let time_embeddings = r.param(TIME_EMBEDDINGS, [frames, config.hidden_size])?;
                VideoVit { spatial, temporal, time_embeddings, frames }
            }
        };
        model.with_image_size(image_size)?.quantized(quantize)
    }

    /// The model for `size` x `size` frames (the spatial position table resized).
    pub fn with_image_size(self, size: usize) -> Result<Self> {
        Ok(VideoVit { spatial: self.spatial.with_image_size(size)?, ..self })
    }

    /// Every weight under its checkpoint name: the image ViT's and the temporal parts'.
    pub fn tensors(&self) -> BTreeMap<String, HostTensor> {
        let mut out = self.spatial.tensors();
        out.extend(self.new_part_tensors());
        for (i, t) in self.temporal.iter().enumerate() {
            t.norm.put(&mut out, &format!("{}norm", TemporalAttention::path(&self.spatial.prefix, i)));
            for linear in [&t.query, &t.key, &t.value, &t.output] {
                linear.put(&mut out);
            }
        }
        out
    }

    /// The parts that exist only in the video model and train in every adapter run:
    /// `temporal_fc` of each block and `time_embeddings`.
    pub fn new_part_tensors(&self) -> BTreeMap<String, HostTensor> {
        let mut out = BTreeMap::new();
        for t in &self.temporal {
            t.fc.put(&mut out);
        }
        out.insert(format!("{}{TIME_EMBEDDINGS}", self.spatial.prefix), HostTensor::from_tensor(&self.time_embeddings.val()));
        out
    }

    /// Replaces the new parts by those in `tensors` (read from `file`), keeping each
    /// parameter's trainable state.
    pub fn with_new_parts(mut self, tensors: &mut BTreeMap<String, HostTensor>, file: &Path) -> Result<Self> {
        let device = self.time_embeddings.device();
        let hidden = self.spatial.config.hidden_size;
        let time = tensors::take(tensors, file, &format!("{}{TIME_EMBEDDINGS}", self.spatial.prefix), &[self.frames, hidden])?;
        self.time_embeddings = self.time_embeddings.map(|old| time.to_tensor(&device).set_require_grad(old.is_require_grad()));
        for t in &mut self.temporal {
            let path = t.fc.path.clone();
            let w = tensors::take(tensors, file, &format!("{path}.weight"), &[hidden, hidden])?.transpose().to_tensor(&device);
            let b = tensors::take(tensors, file, &format!("{path}.bias"), &[hidden])?.to_tensor(&device);
            t.fc.weight = t.fc.weight.clone().replaced(w);
            t.fc.bias = t.fc.bias.clone().map(|p| p.map(|old| b.set_require_grad(old.is_require_grad())));
        }
        Ok(self)
    }

    /// The model with its new parts trainable (after an adapter wrap froze every base weight).
    pub fn with_new_parts_trainable(mut self) -> Self {
        self.time_embeddings = self.time_embeddings.set_require_grad(true);
        for t in &mut self.temporal {
            t.fc.weight = t.fc.weight.clone().set_require_grad(true);
            t.fc.bias = t.fc.bias.clone().map(|b| b.set_require_grad(true));
        }
        self
    }

    /// Writes `config.json` (the image ViT's, with `video_frames`) and `model.safetensors`,
    /// which [`VideoVit::load`] reads.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut config = serde_json::to_value(&self.spatial.config).map_err(|e| Error::format(dir.join("config.json"), e))?;
        config["model_type"] = "dinov2".into();
        config[FRAMES_KEY] = self.frames.into();
        config["architectures"] = serde_json::json!(["ReploraVideoVit"]);
        tensors::write(
            &dir.join("model.safetensors"),
            &self.tensors(),
            Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())])),
        )?;
        crate::files::write_json(&dir.join("config.json"), &config)
    }

    /// The normalized tokens `[batch, frames, 1 + patches, hidden]` of `pixels`
    /// `[batch, frames, channels, size, size]`.
    ///
    /// # Panics
    /// If the clips do not have the model's frames, channels and image size.
    pub fn forward(&self, pixels: Tensor<5>, deltas: &Deltas) -> Tensor<4> {
        let [b, t, ..] = pixels.dims();
        let mut x = self.first_layer_input(pixels);
        for i in 0..self.temporal.len() {
            x = self.layer(i, x, t, deltas);
        }
        self.final_norm(x, b)
    }

    /// `task.loss` of [`VideoVit::forward`], its gradients handed to `collect`, recomputing
    /// each layer's activations in the backward pass ([`crate::models::recompute`]).
    pub fn checkpointed_backward(&self, pixels: Tensor<5>, task: TaskLoss<'_, 4>, collect: impl FnMut(Gradients)) -> Tensor<1> {
        let [b, t, ..] = pixels.dims();
        let (plain, frozen) = (self.valid(), (task.deltas)().without_autodiff());
        let passes = LayerPasses {
            embeddings: self.first_layer_input(pixels.clone()),
            embed_again: &|| self.first_layer_input(pixels.clone()),
            layers: self.temporal.len(),
            plain_layer: &|i, x| plain.layer(i, x, t, &frozen),
            tracked_layer: &|i, x| self.layer(i, x, t, &(task.deltas)()),
            loss: &|x| (task.loss)(self.final_norm(x, b)),
            scale: task.scale,
        };
        checkpointed_backward(passes, collect)
    }

    /// Every frame's tokens `[batch * frames, 1 + patches, hidden]` with the time table added.
    fn first_layer_input(&self, pixels: Tensor<5>) -> Tensor<3> {
        let [b, t, ch, h, w] = pixels.dims();
        assert_eq!(t, self.frames, "clips of {t} frames for a model of {}", self.frames);
        let hidden = self.spatial.config.hidden_size;
        let x = self.spatial.embed(pixels.reshape([b * t, ch, h, w]));
        let tokens = x.dims()[1];
        let time = self.time_embeddings.val().reshape([1, t, 1, hidden]);
        (x.reshape([b, t, tokens, hidden]) + time).reshape([b * t, tokens, hidden])
    }

    /// Block `i`: attention over the `frames` of each patch position, then the spatial block.
    fn layer(&self, i: usize, x: Tensor<3>, frames: usize, deltas: &Deltas) -> Tensor<3> {
        let heads = self.spatial.config.num_attention_heads;
        let x = self.temporal[i].forward(x, frames, heads, deltas);
        self.spatial.layers[i].forward(x, heads, deltas)
    }

    /// The last block's output normed, `[batch, frames, 1 + patches, hidden]`.
    fn final_norm(&self, x: Tensor<3>, batch: usize) -> Tensor<4> {
        let [bt, tokens, hidden] = x.dims();
        self.spatial.layernorm.forward(x).reshape([batch, bt / batch, tokens, hidden])
    }

    /// The clip features `[batch, hidden]`: each frame's CLS token, averaged over frames.
    pub fn features(&self, pixels: Tensor<5>, deltas: &Deltas) -> Tensor<2> {
        Self::clip_features(self.forward(pixels, deltas))
    }

    /// The clip features `[batch, hidden]` of a [`VideoVit::forward`] output.
    pub fn clip_features(tokens: Tensor<4>) -> Tensor<2> {
        let [b, _, _, hidden] = tokens.dims();
        tokens.narrow(2, 0, 1).mean_dim(1).reshape([b, hidden])
    }

    /// The temporal targets a method adds with `--temporal-adapters`: the temporal query and
    /// value, the temporal output (bottleneck adapters) or the temporal key (prefixes).
    pub fn temporal_targets(sites: Sites) -> &'static [&'static str] {
        match sites {
            Sites::QueryValue => &["temporal_query", "temporal_value"],
            Sites::Outputs => &["temporal_output"],
            Sites::KeyProjections => &["temporal_key"],
        }
    }
}

impl Adaptable for VideoVit {
    fn linears(&self) -> Vec<&AdaptedLinear> {
        let mut out: Vec<&AdaptedLinear> = self.temporal.iter().flat_map(|t| t.linears()).collect();
        out.extend(self.spatial.linears());
        out
    }

    fn map_linears(self, f: &mut dyn FnMut(AdaptedLinear) -> AdaptedLinear) -> Self {
        let temporal = self.temporal.into_iter().map(|t| t.map_linears(f)).collect();
        let spatial = self.spatial.map_linears(f);
        VideoVit { spatial, temporal, ..self }
    }

    /// The base's linears converted; the new `temporal_fc`s stay f32, as they train in every run.
    fn base_converted(self, format: Option<BlockFormat>) -> Result<Self> {
        let new: Vec<AdaptedLinear> = self.temporal.iter().map(|t| t.fc.clone()).collect();
        let mut model = crate::adapters::convert_linears(self, format)?;
        for (t, fc) in model.temporal.iter_mut().zip(new) {
            t.fc = fc;
        }
        Ok(model)
    }
}

impl crate::models::Architecture for VideoVit {
    const DEFAULT_TARGETS: &'static [&'static str] = &["query", "value"];
    const ADAPTER_SITES: &'static [&'static str] = &["attention.output.dense", "mlp.fc2"];
    const KEY_PROJECTIONS: &'static [&'static str] = &["key"];
    fn describe(&self) -> String {
        format!(
            "video ViT (TimeSformer divided space-time attention) of {} frames around a {}",
            self.frames,
            crate::models::Architecture::describe(&self.spatial)
        )
    }
    fn max_positions(&self) -> usize {
        crate::models::Architecture::max_positions(&self.spatial)
    }
    fn num_layers(&self) -> usize {
        self.spatial.config.num_hidden_layers
    }
    fn save(&self, dir: &Path) -> Result<()> {
        VideoVit::save(self, dir)
    }
}
