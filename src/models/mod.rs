//! Model architectures, one self-contained file each (candle-transformers style), behind one
//! contract ([`Architecture`]) and one registry ([`Family`]). Adding an architecture is one
//! file here plus one line in [`Family`] (and its detection).

/// A block's `linears` and `map_linears` (see [`Adaptable`]) from ONE list of its linear fields
/// (nested ones as `self_attn.q_proj`), so that no linear can be in one and not the other, where
/// it would escape targeting, merging or saving without an error.
macro_rules! linear_fields {
    ($($first:ident $(. $rest:ident)*),+ $(,)?) => {
        fn linears(&self) -> Vec<&$crate::adapters::AdaptedLinear> {
            vec![$(&self.$first$(.$rest)*),+]
        }

        fn map_linears(mut self, f: &mut dyn FnMut($crate::adapters::AdaptedLinear) -> $crate::adapters::AdaptedLinear) -> Self {
            $(self.$first$(.$rest)* = f(self.$first$(.$rest)*);)+
            self
        }
    };
}

pub mod bert;
pub mod bert_config;
pub mod decoder;
pub mod dinov2;
mod dinov2_onnx;
pub mod distilbert;
pub mod encoder;
pub mod layers;
pub mod llama;
pub mod llama_config;
mod llama_positions;
pub mod modernbert;
pub mod modernbert_config;
pub mod pixels;
pub mod recompute;
pub mod video_vit;
pub mod vision_language;
pub mod vit_config;

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::adapters::Adaptable;
use crate::error::{Error, Result};

/// What every pre-trained architecture provides to the rest of replora: its linears (through
/// [`Adaptable`], with their Hugging Face module paths), the modules adapted by default, a
/// description, its limits, and saving in the Hugging Face layout.
pub trait Architecture: Adaptable + Clone {
    /// The linears adapted when `--targets` is not given: the attention query and value.
    const DEFAULT_TARGETS: &'static [&'static str];
    /// Where a bottleneck adapter (`--method adapter`) goes without `--targets`: after the
    /// attention output projection and after the feed-forward output projection (Houlsby).
    const ADAPTER_SITES: &'static [&'static str];
    /// The key projections, where prefix tuning (`--method prefix`) anchors each layer's prefix.
    const KEY_PROJECTIONS: &'static [&'static str];

    /// The default targets of `method`.
    fn default_targets(method: crate::adapters::Method) -> &'static [&'static str] {
        use crate::adapters::Sites;
        match method.sites() {
            Sites::Outputs => Self::ADAPTER_SITES,
            Sites::KeyProjections => Self::KEY_PROJECTIONS,
            Sites::QueryValue => Self::DEFAULT_TARGETS,
        }
    }
    /// The default targets of `method` on this model: [`Architecture::default_targets`], unless
    /// the family's variants name their linears differently (DistilBERT's `q_lin`, `v_lin`).
    fn targets_of(&self, method: crate::adapters::Method) -> &'static [&'static str] {
        Self::default_targets(method)
    }
    /// One line: family, layers, widths, vocabulary.
    fn describe(&self) -> String;
    /// Longest input in tokens (`max_position_embeddings`).
    fn max_positions(&self) -> usize;
    fn num_layers(&self) -> usize;
    /// Writes `config.json` and `model.safetensors` that [`Family`]'s loader and Hugging Face
    /// `transformers` read.
    fn save(&self, dir: &Path) -> Result<()>;

    /// Checks a run's settings against the model: sequences must fit its position table,
    /// `--layers` must exist in it.
    fn check_fits(&self, max_len: usize, layers: Option<&[usize]>) -> Result<()> {
        crate::validate::fits_model(max_len, self.max_positions(), layers, self.num_layers())
    }
}

/// The registry of architectures replora loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Encoders (`model_type` bert: MiniLM; roberta, xlm-roberta, distilbert; modernbert).
    Bert,
    /// LLaMA-style decoders (`model_type` llama: SmolLM2; qwen2, qwen3, mistral, gemma3_text, phi3),
    /// from Hugging Face directories, or GGUF files (llama, qwen2, qwen3, phi3, gemma3).
    Llama,
    /// Vision transformers (`model_type` dinov2, vit, clip_vision_model, or a full clip's vision
    /// tower), from Hugging Face directories; DINOv2 also converted once from ONNX.
    Dinov2,
}

/// What `replora info` shows about a model.
pub struct ModelInfo {
    pub description: String,
    /// Module path, d_in, d_out of every linear.
    pub linears: Vec<(String, usize, usize)>,
    /// The linears that are row blocks of a fused checkpoint linear (Phi-3's `qkv_proj`), by path.
    pub fused: std::collections::BTreeMap<String, crate::adapters::FusedRows>,
    pub params: usize,
    /// How the linears' weights are held: how many in each format, and their bytes.
    pub weights_held: String,
    pub default_targets: Vec<String>,
    /// Where a bottleneck adapter goes by default.
    pub adapter_sites: Vec<String>,
    /// Where prefix tuning anchors each layer's prefix.
    pub key_projections: Vec<String>,
}

impl Family {
    /// The family of `model` (an asset name, a `.gguf` file, or a Hugging Face directory whose
    /// `config.json` names its `model_type`); `None` if it is neither.
    pub fn detect(model: &str) -> Option<Self> {
        let path = Path::new(model);
        if !path.exists() {
            return crate::assets::known().iter().find(|a| a.name == model).and_then(|a| Self::from_model_type(a.model_type?));
        }
        if path.join("config.json").is_file() {
            let config = crate::files::read_json::<serde_json::Value>(&path.join("config.json")).ok()?;
            // Older BERT checkpoints' configs name no model_type.
            return Self::from_model_type(config.get("model_type").and_then(|t| t.as_str()).unwrap_or("bert"));
        }
        matches!(llama::find_gguf(path), Ok(Some(_))).then_some(Family::Llama)
    }

    fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            t if bert_config::Variant::MODEL_TYPES.contains(&t) || t == modernbert_config::MODEL_TYPE => Some(Family::Bert),
            t if llama::Variant::MODEL_TYPES.contains(&t) => Some(Family::Llama),
            t if vit_config::Variant::MODEL_TYPES.contains(&t) => Some(Family::Dinov2),
            _ => None,
        }
    }

    /// Loads `model`, its base weights held as `quantize` says, and describes it.
    pub fn info(self, model: &str, quantize: crate::adapters::base_weight::Quantize, device: &Device) -> Result<ModelInfo> {
        fn of<A: Architecture>(a: &A, source: &Path) -> ModelInfo {
            use crate::adapters::Method;
            let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
            ModelInfo {
                description: format!("{}: {}", source.display(), a.describe()),
                linears: a.linears().iter().map(|l| (l.path.clone(), l.d_in(), l.d_out())).collect(),
                fused: crate::adapters::fused_blocks(&a.linears()),
                params: a.num_params(),
                weights_held: weights_held(&a.linears()),
                default_targets: names(a.targets_of(Method::Lora)),
                adapter_sites: names(a.targets_of(Method::Houlsby)),
                key_projections: names(a.targets_of(Method::Prefix)),
            }
        }
        match self {
            Family::Bert => {
                let dir = resolve(model)?;
                Ok(of(&encoder::Encoder::load_as(&dir, "", quantize, device)?, &dir))
            }
            Family::Llama => {
                // The model alone: a description needs no tokenizer.
                let path = resolve(model)?;
                let source = llama::find_gguf(&path)?.unwrap_or_else(|| path.clone());
                Ok(of(&llama::Llama::load_as(&path, quantize, device)?, &source))
            }
            Family::Dinov2 => {
                let dir = resolve(model)?;
                Ok(of(&dinov2::Dinov2::load_as(&dir, "", quantize, device)?, &dir))
            }
        }
    }
}

/// `linears` by how their weights are held (`14 f32`, `210 q4_1`, ...), with the bytes they take
/// against an f32 copy's.
fn weights_held(linears: &[&crate::adapters::AdaptedLinear]) -> String {
    let mut formats = std::collections::BTreeMap::<&str, usize>::new();
    for l in linears {
        *formats.entry(l.weight.format().map_or("f32", crate::quantization::BlockFormat::name)).or_default() += 1;
    }
    let counts: Vec<String> = formats.iter().map(|(format, n)| format!("{n} {format}")).collect();
    let held: usize = linears.iter().map(|l| l.weight.stored_bytes()).sum();
    let wide: usize = linears.iter().map(|l| 4 * l.d_in() * l.d_out()).sum();
    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    format!("linear weights: {}, {:.1} MiB ({:.1} MiB as f32)", counts.join(", "), mib(held), mib(wide))
}

/// Every `model_type` replora reads, by kind, for errors about one it does not.
pub fn known_model_types() -> String {
    format!(
        "encoders {}, {}; decoders {}; vision transformers {}",
        bert_config::Variant::MODEL_TYPES.join(", "),
        modernbert_config::MODEL_TYPE,
        llama_config::Variant::MODEL_TYPES.join(", "),
        vit_config::Variant::MODEL_TYPES.join(", ")
    )
}

/// A model directory from a path or an asset name (fetched on demand; an asset published as
/// ONNX is converted once into a Hugging Face directory beside its ONNX file).
pub fn resolve(model: &str) -> Result<PathBuf> {
    let path = PathBuf::from(model);
    if path.exists() {
        return Ok(path);
    }
    if let Some(asset) = crate::assets::known().iter().find(|a| a.name == model) {
        let dir = crate::assets::fetch(model)?;
        if asset.model_type == Some("dinov2") {
            dinov2::convert_onnx_dir(&dir)?;
        }
        return Ok(dir);
    }
    let names: Vec<&str> = crate::assets::known().iter().filter(|a| a.model_type.is_some()).map(|a| a.name).collect();
    Err(Error::io(
        &path,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no such model directory or file (and not a model asset name: {})", names.join(", ")),
        ),
    ))
}
