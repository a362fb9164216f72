//! Adapter methods as plug-ins, in the pattern of PEFT's tuners: each method is one file here
//! implementing [`AdapterMethod`] (its settings, its trainable state, the deltas it adds to a
//! forward pass, its parameter count and file names), and one line of `registry!` below.
//! The rest of the crate reaches a method only through [`MethodConfig`] and [`MethodState`],
//! never by matching on it.

pub mod bottleneck;
pub mod dora;
pub mod lora;
pub mod prefix;
pub mod replora;

use std::fmt::Debug;

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::config::AdapterConfig;
use super::init::Init;
use super::linear::{AdaptedLinear, Deltas};
use super::set::NamedParams;
use super::target::Target;
use crate::adapters::LrGroup;
use crate::error::{Error, Result};

/// Where a method goes when `--targets` is not given (each architecture names its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sites {
    /// The attention query and value (`Architecture::DEFAULT_TARGETS`).
    QueryValue,
    /// After the attention output and the feed-forward output (`Architecture::ADAPTER_SITES`).
    Outputs,
    /// Each layer's key projection (`Architecture::KEY_PROJECTIONS`).
    KeyProjections,
}

/// Which of the settings every method could share a method takes: the low-rank ones (`r`,
/// alpha, rsLoRA, init), dropout, and the targets (`--targets`, `--layers`). A flag of a
/// setting the chosen method does not take is refused, naming the methods that take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Takes {
    pub low_rank: bool,
    pub dropout: bool,
    pub targets: bool,
}

impl Takes {
    pub const ALL: Takes = Takes { low_rank: true, dropout: true, targets: true };
}

/// A setting that makes a method's adapter large, for the memory check to name the largest
/// value that fits: its flag, its config key, its value and how to set it.
pub struct SizeSetting<S> {
    pub flag: &'static str,
    pub key: &'static str,
    pub value: usize,
    pub set: fn(&mut S, usize),
}

/// What a forward pass of an adapter needs besides its state and settings.
pub struct Pass<'a> {
    /// The adapted linears, in model order.
    pub targets: &'a [Target],
    /// Dropout on the adapter's input (the config's `lora_dropout`), applied in training passes.
    pub dropout: f64,
}

/// One adapter method: everything that differs between LoRA, DoRA, RepLoRA, bottlenecks and
/// prefixes. Registered with one line of `registry!`.
pub trait AdapterMethod {
    /// The method's own settings: the config's `SETTINGS_KEY` object.
    type Settings: Clone + Debug + PartialEq + Default + Serialize + DeserializeOwned;
    /// Its trainable tensors (a burn module).
    type State: Module + Debug;
    /// `--method` and the `method` of a config file.
    const NAME: &'static str;
    /// The `peft_type` written into adapter configs.
    const PEFT_TYPE: &'static str;
    /// The key of its settings in a config file; `None` for a method without settings.
    const SETTINGS_KEY: Option<&'static str>;
    /// Its default targets.
    const SITES: Sites = Sites::QueryValue;
    /// The shared settings it takes.
    const TAKES: Takes = Takes::ALL;

    /// Checks the settings that do not depend on the model.
    fn validate(_settings: &Self::Settings) -> Result<()> {
        Ok(())
    }
    /// The trainable state for `targets` (the linears of the same paths are `linears`).
    fn init(
        settings: &Self::Settings,
        config: &AdapterConfig,
        targets: &[Target],
        linears: &[&AdaptedLinear],
        init: &mut Init,
    ) -> Result<Self::State>;
    /// Adds what the adapter contributes to one forward pass to `out`.
    fn deltas(state: &Self::State, settings: &Self::Settings, pass: &Pass, out: &mut Deltas);
    /// Trainable parameters on `targets`, in closed form (equal to the state's tensors).
    fn param_count(settings: &Self::Settings, targets: &[Target]) -> usize;
    /// Passes every tensor through `v` under its file name.
    fn map_named<V: NamedParams>(state: Self::State, targets: &[Target], v: &mut V) -> Result<Self::State>;
    /// `Ok` where the adapter is a low-rank update that can be `action` (merged, written as
    /// LoRA); an error saying why not otherwise.
    fn check_mergeable(_action: &str) -> Result<()> {
        Ok(())
    }
    /// The settings that make the adapter large (for the memory check).
    fn size_settings(_settings: &Self::Settings) -> Vec<SizeSetting<Self::Settings>> {
        vec![]
    }
    /// Positions of the model the adapter takes (prefix tuning's virtual tokens).
    fn virtual_tokens(_settings: &Self::Settings) -> usize {
        0
    }
    /// Parameters trained at their own learning rate.
    fn lr_group(_state: &Self::State, _settings: &Self::Settings) -> Option<LrGroup> {
        None
    }
    /// 2-D parameters kept out of weight decay, like the vectors every method's are (see
    /// `TrainConfig::exempt_from_decay`): RepLoRA's seeds.
    fn decay_exempt(_state: &Self::State) -> Vec<ParamId> {
        vec![]
    }
    /// Fields of the trainer's metrics line from one step's gradients.
    fn diagnostics(_state: &Self::State, _settings: &Self::Settings, _grads: &GradientsParams, _out: &mut Map<String, Value>) {}
}

/// The message of a method that adds to the architecture rather than to weights.
pub(crate) fn not_mergeable(why: &str, action: &str, hint: &str) -> Result<()> {
    Err(Error::State(format!(
        "{why} that no weight of the base model can absorb, so it cannot be {action}; use the run directory with replora's own `eval` / `predict`{hint}"
    )))
}

/// Access to one registered method's variants (implemented by `registry!`).
pub trait Registered: AdapterMethod + Sized {
    fn settings(config: &MethodConfig) -> Option<&Self::Settings>;
    fn settings_mut(config: &mut MethodConfig) -> Option<&mut Self::Settings>;
    fn state(state: &MethodState) -> Option<&Self::State>;
    fn state_mut(state: &mut MethodState) -> Option<&mut Self::State>;
    fn config(settings: Self::Settings) -> MethodConfig;
}

/// A size setting of whichever method a config chooses.
pub struct MethodSize {
    pub flag: &'static str,
    pub key: &'static str,
    pub value: usize,
    set: Box<dyn Fn(&mut MethodConfig, usize)>,
}

impl MethodSize {
    pub fn set(&self, config: &mut MethodConfig, value: usize) {
        (self.set)(config, value)
    }
}

/// Declares the methods: `Variant: type` per method. Generates [`Method`] (the names),
/// [`MethodConfig`] (a method with its settings), [`MethodState`] (its trainable state, a burn
/// module) and their dispatch to [`AdapterMethod`].
macro_rules! registry {
    ($($variant:ident: $method:ty),* $(,)?) => {
        /// An adapter method's name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Method { $($variant),* }

        /// The method an adapter config chooses, with its own settings (a config file's
        /// `method` tag and, for a method with settings, its settings object).
        #[derive(Clone, Debug, PartialEq)]
        pub enum MethodConfig { $($variant(<$method as AdapterMethod>::Settings)),* }

        /// The trainable state of an adapter of each method (one per model, so the size of
        /// its largest variant does not matter).
        #[derive(Module, Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum MethodState { $($variant(<$method as AdapterMethod>::State)),* }

        $(impl Registered for $method {
            fn settings(config: &MethodConfig) -> Option<&Self::Settings> {
                match config { MethodConfig::$variant(s) => Some(s), #[allow(unreachable_patterns)] _ => None }
            }
            fn settings_mut(config: &mut MethodConfig) -> Option<&mut Self::Settings> {
                match config { MethodConfig::$variant(s) => Some(s), #[allow(unreachable_patterns)] _ => None }
            }
            fn state(state: &MethodState) -> Option<&Self::State> {
                match state { MethodState::$variant(s) => Some(s), #[allow(unreachable_patterns)] _ => None }
            }
            fn state_mut(state: &mut MethodState) -> Option<&mut Self::State> {
                match state { MethodState::$variant(s) => Some(s), #[allow(unreachable_patterns)] _ => None }
            }
            fn config(settings: Self::Settings) -> MethodConfig {
                MethodConfig::$variant(settings)
            }
        })*

        impl Method {
            /// Every method, in registry order.
            pub const ALL: &'static [Method] = &[$(Method::$variant),*];

            /// `--method` and a config file's `method`.
            pub fn name(self) -> &'static str {
                match self { $(Method::$variant => <$method>::NAME),* }
            }
            /// The `peft_type` written into adapter configs.
            pub fn peft_type(self) -> &'static str {
                match self { $(Method::$variant => <$method>::PEFT_TYPE),* }
            }
            /// Where the method goes without `--targets`.
            pub fn sites(self) -> Sites {
                match self { $(Method::$variant => <$method>::SITES),* }
            }
            /// The shared settings the method takes.
            pub fn takes(self) -> Takes {
                match self { $(Method::$variant => <$method>::TAKES),* }
            }
            /// The config key of the method's settings.
            pub fn settings_key(self) -> Option<&'static str> {
                match self { $(Method::$variant => <$method>::SETTINGS_KEY),* }
            }
            /// `Ok` for a method that can be `action` (merged, written as LoRA).
            pub fn check_mergeable(self, action: &str) -> Result<()> {
                match self { $(Method::$variant => <$method>::check_mergeable(action)),* }
            }
            /// The method with default settings.
            pub fn defaults(self) -> MethodConfig {
                match self { $(Method::$variant => MethodConfig::$variant(Default::default())),* }
            }
            /// The method with the settings of a config file (`None`: the defaults).
            pub(crate) fn settings_from(self, value: Option<Value>) -> serde_json::Result<MethodConfig> {
                match self { $(Method::$variant => Ok(MethodConfig::$variant(match value {
                    Some(v) => serde_json::from_value(v)?,
                    None => Default::default(),
                }))),* }
            }
        }

        impl MethodConfig {
            pub fn method(&self) -> Method {
                match self { $(MethodConfig::$variant(_) => Method::$variant),* }
            }
            pub fn validate(&self) -> Result<()> {
                match self { $(MethodConfig::$variant(s) => <$method>::validate(s)),* }
            }
            pub fn param_count(&self, targets: &[Target]) -> usize {
                match self { $(MethodConfig::$variant(s) => <$method>::param_count(s, targets)),* }
            }
            pub fn virtual_tokens(&self) -> usize {
                match self { $(MethodConfig::$variant(s) => <$method>::virtual_tokens(s)),* }
            }
            /// The settings that make the adapter large.
            pub fn size_settings(&self) -> Vec<MethodSize> {
                match self { $(MethodConfig::$variant(s) => <$method>::size_settings(s).into_iter().map(|k| {
                    let set = k.set;
                    MethodSize { flag: k.flag, key: k.key, value: k.value, set: Box::new(move |c: &mut MethodConfig, v| {
                        if let Some(s) = <$method as Registered>::settings_mut(c) { set(s, v) }
                    }) }
                }).collect()),* }
            }
            /// The settings as a config file holds them, `None` for a method without settings.
            pub(crate) fn settings_value(&self) -> Option<Value> {
                match self { $(MethodConfig::$variant(s) => <$method>::SETTINGS_KEY.map(|_| {
                    serde_json::to_value(s).expect("settings serialize")
                })),* }
            }
            pub(crate) fn init(&self, config: &AdapterConfig, targets: &[Target], linears: &[&AdaptedLinear], init: &mut Init) -> Result<MethodState> {
                match self { $(MethodConfig::$variant(s) => Ok(MethodState::$variant(<$method>::init(s, config, targets, linears, init)?))),* }
            }
        }

        impl MethodState {
            pub(crate) fn deltas(&self, config: &MethodConfig, pass: &Pass, out: &mut Deltas) {
                match (self, config) {
                    $((MethodState::$variant(state), MethodConfig::$variant(s)) => <$method>::deltas(state, s, pass, out),)*
                    #[allow(unreachable_patterns)]
                    _ => unreachable!("an adapter's state is built from its config"),
                }
            }
            pub(crate) fn map_named<V: NamedParams>(self, targets: &[Target], v: &mut V) -> Result<Self> {
                match self { $(MethodState::$variant(state) => Ok(MethodState::$variant(<$method>::map_named(state, targets, v)?))),* }
            }
            pub(crate) fn lr_group(&self, config: &MethodConfig) -> Option<LrGroup> {
                match (self, config) {
                    $((MethodState::$variant(state), MethodConfig::$variant(s)) => <$method>::lr_group(state, s),)*
                    #[allow(unreachable_patterns)]
                    _ => unreachable!("an adapter's state is built from its config"),
                }
            }
            pub(crate) fn decay_exempt(&self) -> Vec<ParamId> {
                match self { $(MethodState::$variant(state) => <$method>::decay_exempt(state)),* }
            }
            pub(crate) fn diagnostics(&self, config: &MethodConfig, grads: &GradientsParams, out: &mut Map<String, Value>) {
                match (self, config) {
                    $((MethodState::$variant(state), MethodConfig::$variant(s)) => <$method>::diagnostics(state, s, grads, out),)*
                    #[allow(unreachable_patterns)]
                    _ => unreachable!("an adapter's state is built from its config"),
                }
            }
        }
    };
}

// The order is `--method`'s list of choices.
registry! {
    Replora: replora::RepLora,
    Lora: lora::Lora,
    Dora: dora::Dora,
    Houlsby: bottleneck::Houlsby,
    Prefix: prefix::PrefixTuning,
}

/// The module levels of an adapter set that a checkpoint leaves out of its tensor names (the
/// set's `state` field and the method's variant), so that checkpoints name tensors as before
/// methods were plug-ins (`adapters.targets.0.factors.a`) and runs interrupted then resume.
pub fn unnamed_module_level(name: &str, container: &str) -> bool {
    (name == "state" && container == "Struct:AdapterSet") || container == "Enum:MethodState"
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl crate::choice::Choice for Method {
    const ALL: &'static [Method] = Method::ALL;
    const WHAT: &'static str = "method";
    fn name(self) -> &'static str {
        Method::name(self)
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        crate::choice::parse(s)
    }
}

impl std::fmt::Display for MethodConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.method().name())
    }
}

impl MethodConfig {
    /// This method's settings, if it is method `M`.
    pub fn settings<M: Registered>(&self) -> Option<&M::Settings> {
        M::settings(self)
    }
    pub fn settings_mut<M: Registered>(&mut self) -> Option<&mut M::Settings> {
        M::settings_mut(self)
    }
}

impl MethodState {
    /// This state, if it is method `M`'s.
    pub fn of<M: Registered>(&self) -> Option<&M::State> {
        M::state(self)
    }
    pub fn of_mut<M: Registered>(&mut self) -> Option<&mut M::State> {
        M::state_mut(self)
    }
}
