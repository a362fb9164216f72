//! Adapter hyper-parameters: one serializable struct that a native adapter file stores whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bottleneck::BottleneckConfig;
use super::prefix::PrefixConfig;
use crate::error::{Error, Result};

/// The parameter-efficient method an adapter implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum Method {
    /// `W0 + s B A` with independent factors per target.
    Lora,
    /// LoRA plus a learned per-output-row magnitude (weight-decomposed LoRA).
    Dora,
    /// LoRA factors generated from shared per-block seeds by small MLPs.
    Replora,
    /// Houlsby bottleneck adapters after the attention and feed-forward outputs
    /// (`--method adapter`; see [`super::bottleneck`]).
    #[serde(rename = "adapter")]
    #[value(name = "adapter")]
    Houlsby,
    /// Prefix tuning: learned keys and values in front of every attention layer's
    /// (`--method prefix`; see [`super::prefix`]).
    Prefix,
}

impl Method {
    /// The `peft_type` string written into adapter configs.
    pub fn peft_type(self) -> &'static str {
        match self {
            Method::Lora | Method::Dora => "LORA",
            Method::Replora => "REPLORA",
            Method::Houlsby => "BOTTLENECK",
            Method::Prefix => "PREFIX_TUNING",
        }
    }

    /// `Ok` for a method that can be `action` (merged, written as LoRA): the low-rank ones.
    /// Bottlenecks and prefixes add to the architecture, so neither is possible for them.
    pub fn check_mergeable(self, action: &str) -> Result<()> {
        let why = match self {
            Method::Houlsby => "a bottleneck adapter (--method adapter) adds layers (down, non-linearity, up)",
            Method::Prefix => "prefix tuning (--method prefix) adds keys and values to every attention layer",
            _ => return Ok(()),
        };
        Err(Error::State(format!(
            "{why} that no weight of the base model can absorb, so it cannot be {action}; use the run directory with replora's own `eval` / `predict`{}",
            if self == Method::Prefix { " (`replora export` writes a decoder's prefix in PEFT's PREFIX_TUNING layout)" } else { "" }
        )))
    }
}

/// How the LoRA down-projection `A` (and RepLoRA's `A` generator output layer) is initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum LoraInit {
    /// Kaiming-uniform with `a = sqrt(5)`, as `torch.nn.Linear` and PEFT's default.
    Kaiming,
    /// Normal with standard deviation `1 / r` (PEFT's `init_lora_weights="gaussian"`).
    Gaussian,
}

/// The shape of RepLoRA's shared seeds (spec section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum SeedKind {
    /// `A = diag(a)`, `B = diag(b)`: `2 r` seed parameters per block.
    Diagonal,
    /// `A` is a full `r x d_in` matrix, `B` a full `r x d_out` matrix.
    Full,
}

/// Non-linearity between the two layers of a RepLoRA generator or a bottleneck adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum Activation {
    Tanh,
    Relu,
    Gelu,
    /// No non-linearity: the paper's linear reparameterization.
    Identity,
}

/// How RepLoRA's seeds start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum SeedInit {
    /// Diagonal seeds all ones (the identity); full seeds the first `r` rows of the identity.
    Identity,
    /// Diagonal seeds N(0, 1); full seeds Kaiming-uniform, as `torch.nn.Linear`'s weight.
    Random,
}

impl SeedInit {
    /// Each seed kind's own start: the identity for diagonal seeds, random for full seeds.
    pub fn default_for(kind: SeedKind) -> Self {
        match kind {
            SeedKind::Diagonal => SeedInit::Identity,
            SeedKind::Full => SeedInit::Random,
        }
    }
}

/// How a RepLoRA generator's output is scaled. Every generated entry sums `h` hidden units,
/// and Adam moves each output weight by about `lr` per step with a sign that agrees across
/// them, so without a scale a generated factor moves about `h * E|act|` times as fast as a
/// LoRA factor at the same learning rate (about 4x at h = 16, with A also starting 5x
/// larger): RepLoRA's update `B A` then runs an order of magnitude ahead of LoRA's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum OutputScale {
    /// No scale (replora 0.1 before this option; adapters saved then read back as this).
    One,
    /// `1 / sqrt(h)`: a generated factor starts and moves about as a LoRA factor does.
    InvSqrtH,
    /// `1 / h`.
    InvH,
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

impl OutputScale {
    /// The multiplier for a generator of hidden width `hidden`.
    pub fn factor(self, hidden: usize) -> f64 {
        match self {
            OutputScale::One => 1.0,
            OutputScale::InvSqrtH => 1.0 / (hidden as f64).sqrt(),
            OutputScale::InvH => 1.0 / hidden as f64,
        }
    }
}

/// Files written before `output_scale` existed used no scale.
fn legacy_output_scale() -> OutputScale {
    OutputScale::One
}

/// `FromStr` (any case, the error naming the choices) and `Display` for a `clap::ValueEnum`,
/// from its value names (the same names as its serde form): one spelling for flags, files and
/// messages.
#[macro_export]
macro_rules! value_enum_str {
    ($ty:ty, $what:literal) => {
        impl std::str::FromStr for $ty {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                <$ty as clap::ValueEnum>::from_str(s, true).map_err(|_| {
                    let names: Vec<String> = <$ty as clap::ValueEnum>::value_variants()
                        .iter()
                        .filter_map(clap::ValueEnum::to_possible_value)
                        .map(|v| v.get_name().to_string())
                        .collect();
                    $crate::error::Error::Config(format!(
                        concat!("unknown ", $what, " {:?}; expected one of: {}"),
                        s.to_ascii_lowercase(),
                        names.join(", ")
                    ))
                })
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let value = clap::ValueEnum::to_possible_value(self).expect("no variant is skipped");
                f.pad(value.get_name())
            }
        }
    };
}

value_enum_str!(Method, "method");
value_enum_str!(SeedKind, "seed kind");
value_enum_str!(OutputScale, "output scale");
value_enum_str!(SeedInit, "seed init");
value_enum_str!(LoraInit, "init");
value_enum_str!(Activation, "activation");

/// PEFT's `target_modules`: a list of names (exact or suffix match) or one regex (full match).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    Names(Vec<String>),
    Regex(String),
}

/// RepLoRA's generator settings (ignored by LoRA and DoRA).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepLoraConfig {
    pub seed_kind: SeedKind,
    /// Hidden width `h` of the generator MLPs `g_A` and `g_B`.
    pub hidden: usize,
    pub activation: Activation,
    /// One generator pair for all blocks instead of one per block (seeds stay per block).
    pub shared_generators: bool,
    /// Multiplier on each generator's output (weights and bias); see [`OutputScale`].
    #[serde(default = "legacy_output_scale")]
    pub output_scale: OutputScale,
    /// The generators' learning rate relative to the run's (the seeds keep the run's), as
    /// LoRA+ gives B its own rate. A training setting: the adapter it trains is unchanged.
    pub generator_lr_multiplier: f64,
    /// Biases in both generator layers. Written to files only when off, so that adapters and
    /// sweep cells from before this option read back unchanged.
    #[serde(skip_serializing_if = "is_true")]
    pub generator_bias: bool,
    /// Train each generator's output scale, a scalar starting at `output_scale`'s factor, with
    /// the generators' learning rate; written only when set.
    #[serde(skip_serializing_if = "is_false")]
    pub learn_output_scale: bool,
    /// How the seeds start [default: [`SeedInit::default_for`] the seed kind]; written only when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_init: Option<SeedInit>,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl RepLoraConfig {
    /// The seeds' start, explicit or the seed kind's own.
    pub fn seed_start(&self) -> SeedInit {
        self.seed_init.unwrap_or(SeedInit::default_for(self.seed_kind))
    }
}

impl Default for RepLoraConfig {
    fn default() -> Self {
        Self {
            seed_kind: SeedKind::Diagonal,
            hidden: 8,
            activation: Activation::Tanh,
            shared_generators: false,
            output_scale: OutputScale::InvSqrtH,
            generator_lr_multiplier: 1.0,
            generator_bias: true,
            learn_output_scale: false,
            seed_init: None,
        }
    }
}

/// Every hyper-parameter of an adapter; stored whole in native adapter files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterConfig {
    pub method: Method,
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
    pub replora: RepLoraConfig,
    /// The bottleneck adapter's settings (`--method adapter`).
    pub bottleneck: BottleneckConfig,
    /// Prefix tuning's settings (`--method prefix`).
    pub prefix: PrefixConfig,
    /// Seed of the adapter's random initialisation.
    pub seed: u64,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self {
            method: Method::Replora,
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            use_rslora: false,
            init_lora_weights: LoraInit::Kaiming,
            target_modules: TargetModules::Names(vec!["query".into(), "value".into()]),
            layers_to_transform: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            replora: RepLoraConfig::default(),
            bottleneck: BottleneckConfig::default(),
            prefix: PrefixConfig::default(),
            seed: 0,
        }
    }
}

impl AdapterConfig {
    /// A config for `method` with defaults elsewhere.
    pub fn new(method: Method) -> Self {
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
        if self.method == Method::Replora && self.replora.hidden == 0 {
            return bad("replora.hidden must be at least 1".into());
        }
        if self.bottleneck.size == Some(0) {
            return bad("the bottleneck width (bottleneck.size, --bottleneck) must be at least 1".into());
        }
        if self.prefix.length == 0 || self.prefix.hidden == 0 {
            return bad(format!(
                "prefix.length (--prefix-length) and prefix.hidden (--prefix-hidden) must be at least 1, got {} and {}",
                self.prefix.length, self.prefix.hidden
            ));
        }
        let m = self.replora.generator_lr_multiplier;
        if !(m.is_finite() && m > 0.0) {
            return bad(format!("replora.generator_lr_multiplier must be a positive number, got {m}"));
        }
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

    #[test]
    fn files_without_output_scale_keep_the_unscaled_generators() {
        let mut json = serde_json::to_value(AdapterConfig::default()).unwrap();
        assert_eq!(json["replora"]["output_scale"], "inv_sqrt_h");
        json["replora"].as_object_mut().unwrap().remove("output_scale");
        let old: AdapterConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.replora.output_scale, OutputScale::One);
        assert_eq!(RepLoraConfig::default().output_scale, OutputScale::InvSqrtH);
    }

    /// The bias, learned-scale and seed-init options are written only when set, so adapter files and sweep cells
    /// from before them read back as they were saved (and keep their cell names).
    #[test]
    fn options_added_later_are_written_only_when_set() {
        let default = serde_json::to_value(AdapterConfig::default()).unwrap();
        assert!(["generator_bias", "seed_init", "learn_output_scale"].iter().all(|k| default["replora"].get(k).is_none()));
        let mut set = AdapterConfig::default();
        set.replora.generator_bias = false;
        set.replora.learn_output_scale = true;
        set.replora.seed_init = Some(SeedInit::Random);
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(
            (&json["replora"]["generator_bias"], &json["replora"]["seed_init"]),
            (&serde_json::json!(false), &serde_json::json!("random"))
        );
        assert_eq!(serde_json::from_value::<AdapterConfig>(json).unwrap(), set);
        let old: AdapterConfig = serde_json::from_value(default).unwrap();
        assert!(old.replora.generator_bias && old.replora.seed_start() == SeedInit::Identity);
        let full = RepLoraConfig { seed_kind: SeedKind::Full, ..RepLoraConfig::default() };
        assert_eq!(full.seed_start(), SeedInit::Random);
    }

    #[test]
    fn output_scale_factors() {
        assert_eq!(OutputScale::One.factor(16), 1.0);
        assert_eq!(OutputScale::InvSqrtH.factor(16), 0.25);
        assert_eq!(OutputScale::InvH.factor(16), 1.0 / 16.0);
        assert_eq!("inv_sqrt_h".parse::<OutputScale>().unwrap(), OutputScale::InvSqrtH);
        assert!("half".parse::<OutputScale>().is_err());
    }
}
