//! The `config.json` of the vision transformers replora reads with one model file
//! ([`super::dinov2`]): DINOv2, ViT and CLIP's vision tower. They share the pre-norm block
//! (attention, then a two-layer MLP, each around a residual); [`Variant`] names what differs:
//! the tensor names, DINOv2's layer scale and mask token, CLIP's patch convolution without bias,
//! its `pre_layrnorm` (sic) before the first block, quick-GELU, and its final norm
//! (`post_layernorm`), which normalizes the pooled CLS token only, where DINOv2's and ViT's
//! `layernorm` normalizes every token.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::layers::Activation;
use crate::adapters::{Method, Sites};
use crate::error::{Error, Result};
use crate::files::read_json;

/// Which vision-transformer family a config describes (its `model_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Dinov2,
    Vit,
    /// CLIP's vision tower (`clip_vision_model`, or the `vision_config` of a full `clip`).
    Clip,
}

/// The checkpoint names of one block's parts, after `encoder.layer.N.` (`encoder.layers.N.`).
pub struct LayerNames {
    pub norm1: &'static str,
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_output: &'static str,
    pub norm2: &'static str,
    pub fc1: &'static str,
    pub fc2: &'static str,
}

const DINOV2_NAMES: LayerNames = LayerNames {
    norm1: "norm1",
    query: "attention.attention.query",
    key: "attention.attention.key",
    value: "attention.attention.value",
    attention_output: "attention.output.dense",
    norm2: "norm2",
    fc1: "mlp.fc1",
    fc2: "mlp.fc2",
};
const VIT_NAMES: LayerNames =
    LayerNames { norm1: "layernorm_before", norm2: "layernorm_after", fc1: "intermediate.dense", fc2: "output.dense", ..DINOV2_NAMES };
const CLIP_NAMES: LayerNames = LayerNames {
    norm1: "layer_norm1",
    query: "self_attn.q_proj",
    key: "self_attn.k_proj",
    value: "self_attn.v_proj",
    attention_output: "self_attn.out_proj",
    norm2: "layer_norm2",
    fc1: "mlp.fc1",
    fc2: "mlp.fc2",
};

/// transformers 5 loads DINOv2's and ViT's checkpoint names as other module names (CLIP's are
/// its own): PEFT adapters it makes, and those replora exports for it, use these
/// (checkpoint name, transformers 5 name) pairs, applied in order as substring replacements.
const DINOV2_TRANSFORMERS_5: &[(&str, &str)] = &[
    ("attention.attention.query", "attention.q_proj"),
    ("attention.attention.key", "attention.k_proj"),
    ("attention.attention.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
];
const VIT_TRANSFORMERS_5: &[(&str, &str)] = &[
    ("attention.attention.query", "attention.q_proj"),
    ("attention.attention.key", "attention.k_proj"),
    ("attention.attention.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
    ("encoder.layer.", "layers."),
];

impl Variant {
    /// The `model_type` values read with this model file.
    pub const MODEL_TYPES: [&'static str; 4] = ["dinov2", "vit", "clip_vision_model", "clip"];

    /// The variant of a `model_type`; a config naming none is DINOv2's (replora's own ONNX
    /// conversions wrote none before).
    pub fn of(model_type: Option<&str>) -> Option<Self> {
        match model_type.unwrap_or("dinov2") {
            "dinov2" => Some(Variant::Dinov2),
            "vit" => Some(Variant::Vit),
            "clip_vision_model" | "clip" => Some(Variant::Clip),
            _ => None,
        }
    }

    /// The variant of `model` (a directory with `config.json`; an asset name or anything
    /// unreadable is DINOv2, whose loader then reports what is wrong).
    pub fn detect(model: &str) -> Self {
        let config = Path::new(model).join("config.json");
        let model_type = read_json::<serde_json::Value>(&config).ok().and_then(|c| c.get("model_type")?.as_str().map(String::from));
        Self::of(model_type.as_deref()).unwrap_or(Variant::Dinov2)
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Dinov2 => "DINOv2-style ViT",
            Variant::Vit => "ViT",
            Variant::Clip => "CLIP vision tower",
        }
    }

    /// The `model_type` a saved config names.
    pub fn model_type(self) -> &'static str {
        match self {
            Variant::Dinov2 => "dinov2",
            Variant::Vit => "vit",
            Variant::Clip => "clip_vision_model",
        }
    }

    /// transformers' class of the bare tower.
    pub fn bare_architecture(self) -> &'static str {
        match self {
            Variant::Dinov2 => "Dinov2Model",
            Variant::Vit => "ViTModel",
            Variant::Clip => "CLIPVisionModel",
        }
    }

    /// The tower's module prefix inside transformers' image classifiers
    /// (`Dinov2ForImageClassification`, `ViTForImageClassification`,
    /// `CLIPForImageClassification`); a full `clip` checkpoint's vision tower has it too.
    pub fn task_prefix(self) -> &'static str {
        match self {
            Variant::Dinov2 => "dinov2.",
            Variant::Vit => "vit.",
            Variant::Clip => "vision_model.",
        }
    }

    /// The CLS token's checkpoint name, which tells the prefix a checkpoint stores names under.
    pub fn cls_name(self) -> &'static str {
        match self {
            Variant::Clip => "embeddings.class_embedding",
            _ => "embeddings.cls_token",
        }
    }

    /// The checkpoint prefix of the blocks, before their number.
    pub fn layers_prefix(self) -> &'static str {
        match self {
            Variant::Clip => "encoder.layers.",
            _ => "encoder.layer.",
        }
    }

    /// Block `i`'s checkpoint prefix.
    pub fn layer_prefix(self, i: usize) -> String {
        format!("{}{i}.", self.layers_prefix())
    }

    pub fn layer_names(self) -> &'static LayerNames {
        match self {
            Variant::Dinov2 => &DINOV2_NAMES,
            Variant::Vit => &VIT_NAMES,
            Variant::Clip => &CLIP_NAMES,
        }
    }

    /// The final norm's checkpoint name.
    pub fn final_norm(self) -> &'static str {
        match self {
            Variant::Clip => "post_layernorm",
            _ => "layernorm",
        }
    }

    /// Whether blocks scale their residual branches (`layer_scale{1,2}.lambda1`).
    pub fn has_layer_scale(self) -> bool {
        self == Variant::Dinov2
    }

    /// Module-path renames from the checkpoint's names to transformers 5's.
    pub fn transformers_5_names(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Variant::Dinov2 => DINOV2_TRANSFORMERS_5,
            Variant::Vit => VIT_TRANSFORMERS_5,
            Variant::Clip => &[],
        }
    }

    /// The default targets of `method` (PEFT's `query`, `value` for ViT; CLIP's projections).
    pub fn default_targets(self, method: Method) -> &'static [&'static str] {
        match (method.sites(), self) {
            (Sites::QueryValue, Variant::Clip) => &["q_proj", "v_proj"],
            (Sites::QueryValue, _) => &["query", "value"],
            (Sites::Outputs, Variant::Dinov2) => &["attention.output.dense", "mlp.fc2"],
            (Sites::Outputs, Variant::Vit) => &["attention.output.dense", "output.dense"],
            (Sites::Outputs, Variant::Clip) => &["self_attn.out_proj", "mlp.fc2"],
            (Sites::KeyProjections, Variant::Clip) => &["k_proj"],
            (Sites::KeyProjections, _) => &["key"],
        }
    }
}

/// A Hugging Face `Dinov2Config`, `ViTConfig` or `CLIPVisionConfig`. Keys a family's config does
/// not have stay absent (so a saved config is the one read); keys this model does not use are
/// kept in `extra`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dinov2Config {
    /// `dinov2` (also when absent), `vit` or `clip_vision_model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// DINOv2: MLP width over hidden width (default 4); transformers' config type is an integer.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
    pub mlp_ratio: Option<usize>,
    /// ViT and CLIP: the MLP width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<usize>,
    /// The side, in pixels, the position table was trained for (`(image_size / patch_size)^2 + 1`
    /// rows).
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    /// Default: DINOv2 1e-6, ViT 1e-12, CLIP 1e-5 (transformers').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_norm_eps: Option<f64>,
    /// Default: `gelu`, CLIP `quick_gelu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_swiglu_ffn: Option<bool>,
    /// Biases on query, key and value (default true; CLIP always has them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qkv_bias: Option<bool>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A count written as `4` or `4.0`.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<usize>, D::Error> {
    let v = f64::deserialize(d)?;
    if v >= 0.0 && v.fract() == 0.0 {
        Ok(Some(v as usize))
    } else {
        Err(serde::de::Error::custom(format!("expected a whole number, got {v}")))
    }
}
fn default_channels() -> usize {
    3
}

impl Dinov2Config {
    /// Reads and checks `config.json`; a full `clip` config gives its `vision_config`.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_value(read_json(path)?, path)
    }

    /// The config of a `config.json` value, checked; `source` names errors.
    pub fn from_value(mut value: serde_json::Value, source: &Path) -> Result<Self> {
        let model_type = value.get("model_type").and_then(serde_json::Value::as_str).map(String::from);
        if Variant::of(model_type.as_deref()).is_none() {
            return Err(Error::format(
                source,
                format!(
                    "model_type {:?} is not a vision transformer replora reads (vision transformers: {}; every family: {})",
                    model_type.unwrap_or_default(),
                    Variant::MODEL_TYPES.join(", "),
                    super::known_model_types()
                ),
            ));
        }
        if model_type.as_deref() == Some("clip") {
            value = value.get("vision_config").cloned().ok_or_else(|| Error::format(source, "a clip config without vision_config"))?;
            value["model_type"] = Variant::Clip.model_type().into();
        }
        let config: Self = serde_json::from_value(value).map_err(|e| Error::format(source, format!("model config: {e}")))?;
        config.validate().map_err(|m| Error::format(source, m))?;
        Ok(config)
    }

    pub fn variant(&self) -> Variant {
        Variant::of(self.model_type.as_deref()).unwrap_or(Variant::Dinov2)
    }

    pub fn eps(&self) -> f64 {
        self.layer_norm_eps.unwrap_or(match self.variant() {
            Variant::Dinov2 => 1e-6,
            Variant::Vit => 1e-12,
            Variant::Clip => 1e-5,
        })
    }

    pub fn qkv_bias(&self) -> bool {
        self.variant() == Variant::Clip || self.qkv_bias.unwrap_or(true)
    }

    /// The MLP's non-linearity (checked on reading).
    pub fn activation(&self) -> Activation {
        self.activation_or_error().expect("the config was validated")
    }

    fn activation_or_error(&self) -> std::result::Result<Activation, String> {
        let clip = self.variant() == Variant::Clip;
        match (self.hidden_act.as_deref(), clip) {
            (None, false) | (Some("gelu"), _) => Ok(Activation::Gelu),
            (None, true) | (Some("quick_gelu"), true) => Ok(Activation::QuickGelu),
            (Some(other), _) => {
                let supported = if clip { "\"quick_gelu\" or \"gelu\"" } else { "\"gelu\"" };
                Err(format!("hidden_act {other:?} is not supported for {} (only {supported})", self.variant().name()))
            }
        }
    }

    pub(super) fn validate(&self) -> std::result::Result<(), String> {
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
        if self.use_swiglu_ffn == Some(true) {
            return Err("use_swiglu_ffn (the SwiGLU MLP of the giant models) is not supported".into());
        }
        if self.variant() != Variant::Dinov2 && self.intermediate_size.is_none_or(|m| m == 0) {
            return Err(format!("{} configs need intermediate_size (the MLP width, at least 1)", self.variant().name()));
        }
        self.activation_or_error()?;
        if !(self.eps().is_finite() && self.eps() > 0.0) {
            return Err(format!("layer_norm_eps must be a positive number, got {}", self.eps()));
        }
        Ok(())
    }

    pub fn intermediate_size(&self) -> usize {
        match self.variant() {
            Variant::Dinov2 => self.hidden_size * self.mlp_ratio.unwrap_or(4),
            _ => self.intermediate_size.unwrap_or_default(),
        }
    }

    /// Patches along one side of an `image_size` image.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}
