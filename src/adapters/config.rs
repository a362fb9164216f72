//! Adapter hyper-parameters: the settings every method shares and the chosen method with its
//! own ([`MethodConfig`]), stored whole in native adapter files and run specs.
//!
//! A config file holds the shared settings, `method` (the tag) and the chosen method's
//! settings object under its key (`replora`, `bottleneck`, `prefix`). Files written before
//! methods were plug-ins hold every method's settings object: the chosen one's is read, the
//! others are ignored, so they load as they were written.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::methods::{Method, MethodConfig};
use crate::error::{Error, Result};

crate::choice_enum! {
    /// How the LoRA down-projection `A` (and RepLoRA's `A` generator output layer) is initialised.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum LoraInit: "init" {
        /// Kaiming-uniform with `a = sqrt(5)`, as `torch.nn.Linear` and PEFT's default.
        Kaiming => "kaiming",
        /// Normal with standard deviation `1 / r` (PEFT's `init_lora_weights="gaussian"`).
        Gaussian => "gaussian",
    }
}

crate::choice_enum! {
    /// Non-linearity between the two layers of a RepLoRA generator or a bottleneck adapter.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Activation: "activation" {
        Tanh => "tanh",
        Relu => "relu",
        Gelu => "gelu",
        /// No non-linearity: the paper's linear reparameterization.
        Identity => "identity",
    }
}

impl Activation {
    pub fn apply<const D: usize>(self, x: burn::Tensor<D>) -> burn::Tensor<D> {
        use burn::tensor::activation;
        match self {
            Activation::Tanh => x.tanh(),
            Activation::Relu => activation::relu(x),
            Activation::Gelu => activation::gelu(x),
            Activation::Identity => x,
        }
    }
}

/// PEFT's `target_modules`: a list of names (exact or suffix match) or one regex (full match).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    Names(Vec<String>),
    Regex(String),
}

/// Every hyper-parameter of an adapter; stored whole in native adapter files.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    /// The method and its own settings.
    pub method: MethodConfig,
    /// LoRA rank `r`.
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// Scale `alpha / sqrt(r)` (rsLoRA) instead of `alpha / r`.
    pub use_rslora: bool,
    pub init_lora_weights: LoraInit,
    pub target_modules: TargetModules,
    /// Only adapt linears whose layer index (first `.N.` in the path) is listed.
    pub layers_to_transform: Option<Vec<usize>>,
    /// Per-module rank overrides; a key matches a path that equals it or ends in `.key` (regex).
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides, matched like `rank_pattern`.
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Seed of the adapter's random initialisation.
    pub seed: u64,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        SharedSettings::default().with(Method::Replora.defaults())
    }
}

/// The settings every method shares, as a config file holds them (absent ones: the defaults).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SharedSettings {
    r: usize,
    lora_alpha: f64,
    lora_dropout: f64,
    use_rslora: bool,
    init_lora_weights: LoraInit,
    target_modules: TargetModules,
    layers_to_transform: Option<Vec<usize>>,
    rank_pattern: BTreeMap<String, usize>,
    alpha_pattern: BTreeMap<String, f64>,
    seed: u64,
}

impl SharedSettings {
    /// The config of `method` with these shared settings.
    fn with(self, method: MethodConfig) -> AdapterConfig {
        let s = self;
        AdapterConfig {
            method,
            r: s.r,
            lora_alpha: s.lora_alpha,
            lora_dropout: s.lora_dropout,
            use_rslora: s.use_rslora,
            init_lora_weights: s.init_lora_weights,
            target_modules: s.target_modules,
            layers_to_transform: s.layers_to_transform,
            rank_pattern: s.rank_pattern,
            alpha_pattern: s.alpha_pattern,
            seed: s.seed,
        }
    }
}

impl Default for SharedSettings {
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            use_rslora: false,
            init_lora_weights: LoraInit::Kaiming,
            target_modules: TargetModules::Names(vec!["query".into(), "value".into()]),
            layers_to_transform: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            seed: 0,
        }
    }
}

impl Serialize for AdapterConfig {
    /// The fields in the order files have always had: `method`, the shared settings, the
    /// method's own settings, `seed`.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("method", self.method.method().name())?;
        map.serialize_entry("r", &self.r)?;
        map.serialize_entry("lora_alpha", &self.lora_alpha)?;
        map.serialize_entry("lora_dropout", &self.lora_dropout)?;
        map.serialize_entry("use_rslora", &self.use_rslora)?;
        map.serialize_entry("init_lora_weights", &self.init_lora_weights)?;
        map.serialize_entry("target_modules", &self.target_modules)?;
        map.serialize_entry("layers_to_transform", &self.layers_to_transform)?;
        map.serialize_entry("rank_pattern", &self.rank_pattern)?;
        map.serialize_entry("alpha_pattern", &self.alpha_pattern)?;
        if let (Some(key), Some(settings)) = (self.method.method().settings_key(), self.method.settings_value()) {
            map.serialize_entry(key, &settings)?;
        }
        map.serialize_entry("seed", &self.seed)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for AdapterConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let mut map = serde_json::Map::<String, Value>::deserialize(deserializer)?;
        let method = match map.remove("method") {
            None => Method::Replora,
            Some(Value::String(name)) => name.parse::<Method>().map_err(D::Error::custom)?,
            Some(other) => return Err(D::Error::custom(format!("method must be a method's name, got {other}"))),
        };
        // Files from before methods were plug-ins hold every method's settings: read the chosen one's.
        let mut own = None;
        for m in Method::ALL {
            if let Some(key) = m.settings_key() {
                let value = map.remove(key);
                if *m == method {
                    own = value;
                }
            }
        }
        let key = method.settings_key().unwrap_or_default();
        let method = method.settings_from(own).map_err(|e| D::Error::custom(format!("{key}: {e}")))?;
        let shared: SharedSettings = serde_json::from_value(Value::Object(map)).map_err(D::Error::custom)?;
        Ok(shared.with(method))
    }
}

impl AdapterConfig {
    /// A config for `method` (with its default settings) with defaults elsewhere.
    pub fn new(method: Method) -> Self {
        Self { method: method.defaults(), ..Self::default() }
    }

    /// A config for the method of `method` with defaults elsewhere.
    pub fn with_method(method: MethodConfig) -> Self {
        Self { method, ..Self::default() }
    }

    /// The LoRA scale `s` for a target of rank `r` and the given alpha.
    pub fn scale(&self, r: usize, alpha: f64) -> f64 {
        if self.use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 }
    }

    /// Checks the values that do not depend on the model.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.r == 0 {
            return bad("rank r must be at least 1".into());
        }
        if let Some((k, _)) = self.rank_pattern.iter().find(|(_, r)| **r == 0) {
            return bad(format!("rank_pattern[{k:?}] must be at least 1"));
        }
        if !self.lora_alpha.is_finite() || self.lora_alpha <= 0.0 {
            return bad(format!("lora_alpha must be a positive number, got {}", self.lora_alpha));
        }
        if let Some((k, a)) = self.alpha_pattern.iter().find(|(_, a)| !a.is_finite() || **a <= 0.0) {
            return bad(format!("alpha_pattern[{k:?}] must be a positive number, got {a}"));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad(format!("lora_dropout must be in [0, 1), got {}", self.lora_dropout));
        }
        self.method.validate()?;
        match &self.target_modules {
            TargetModules::Names(names) if names.is_empty() => bad("target_modules is empty".into()),
            TargetModules::Regex(re) => {
                regex::Regex::new(re).map(|_| ()).map_err(|e| Error::Config(format!("target_modules regex {re:?}: {e}")))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::methods::replora::{OutputScale, RepLora, RepLoraConfig, SeedInit, SeedKind};

    fn replora(config: &AdapterConfig) -> &RepLoraConfig {
        config.method.settings::<RepLora>().expect("a RepLoRA config")
    }

    #[test]
    fn files_without_output_scale_keep_the_unscaled_generators() {
        let mut json = serde_json::to_value(AdapterConfig::default()).unwrap();
        assert_eq!(json["replora"]["output_scale"], "inv_sqrt_h");
        json["replora"].as_object_mut().unwrap().remove("output_scale");
        let old: AdapterConfig = serde_json::from_value(json).unwrap();
        assert_eq!(replora(&old).output_scale, OutputScale::One);
        assert_eq!(RepLoraConfig::default().output_scale, OutputScale::InvSqrtH);
    }

    /// The bias, learned-scale and seed-init options are written only when set, so adapter files and sweep cells
    /// from before them read back as they were saved (and keep their cell names).
    #[test]
    fn options_added_later_are_written_only_when_set() {
        let default = serde_json::to_value(AdapterConfig::default()).unwrap();
        assert!(["generator_bias", "seed_init", "learn_output_scale"].iter().all(|k| default["replora"].get(k).is_none()));
        let set = AdapterConfig::with_method(MethodConfig::Replora(RepLoraConfig {
            generator_bias: false,
            learn_output_scale: true,
            seed_init: Some(SeedInit::Random),
            ..RepLoraConfig::default()
        }));
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(
            (&json["replora"]["generator_bias"], &json["replora"]["seed_init"]),
            (&serde_json::json!(false), &serde_json::json!("random"))
        );
        assert_eq!(serde_json::from_value::<AdapterConfig>(json).unwrap(), set);
        let old: AdapterConfig = serde_json::from_value(default).unwrap();
        assert!(replora(&old).generator_bias && replora(&old).seed_start() == SeedInit::Identity);
        let full = RepLoraConfig { seed_kind: SeedKind::Full, ..RepLoraConfig::default() };
        assert_eq!(full.seed_start(), SeedInit::Random);
    }

    /// A config holds only its method's settings; one written when every method's settings
    /// were stored reads back as that method's, and the method tag is checked.
    #[test]
    fn a_config_holds_its_own_method_settings_only() {
        let lora = serde_json::to_value(AdapterConfig::new(Method::Lora)).unwrap();
        assert!(["replora", "bottleneck", "prefix"].iter().all(|k| lora.get(k).is_none()), "{lora}");
        let adapter = serde_json::to_value(AdapterConfig::new(Method::Houlsby)).unwrap();
        assert_eq!(adapter["method"], "adapter");
        assert!(adapter.get("bottleneck").is_some() && adapter.get("replora").is_none(), "{adapter}");
        let old =
            serde_json::json!({"method": "prefix", "r": 4, "replora": {"hidden": 3}, "bottleneck": {"size": 2}, "prefix": {"length": 5}});
        let config: AdapterConfig = serde_json::from_value(old).unwrap();
        assert_eq!((config.method.virtual_tokens(), config.r), (5, 4));
        let e = serde_json::from_value::<AdapterConfig>(serde_json::json!({"method": "lorax"})).unwrap_err().to_string();
        assert!(e.contains("lorax") && e.contains("replora"), "{e}");
        let e = serde_json::from_value::<AdapterConfig>(serde_json::json!({"method": "lora", "rr": 1})).unwrap_err().to_string();
        assert!(e.contains("rr"), "{e}");
    }

    #[test]
    fn output_scale_factors() {
        assert_eq!(OutputScale::One.factor(16), 1.0);
        assert_eq!(OutputScale::InvSqrtH.factor(16), 0.25);
        assert_eq!(OutputScale::InvH.factor(16), 1.0 / 16.0);
        assert_eq!("inv_sqrt_h".parse::<OutputScale>().unwrap(), OutputScale::InvSqrtH);
        let e = "Half".parse::<OutputScale>().unwrap_err().to_string();
        assert_eq!(e, r#"invalid configuration: unknown output scale "half"; expected one of: one, inv_sqrt_h, inv_h"#);
        assert_eq!("INV_H".parse::<OutputScale>().unwrap(), OutputScale::InvH, "any case");
        assert_eq!(OutputScale::InvSqrtH.to_string(), "inv_sqrt_h");
    }
}
