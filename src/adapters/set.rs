//! The trainable adapter of a whole model: the linears it targets and the state of its method
//! ([`MethodState`]), with the stable tensor names that files store.

use burn::module::Param;
use burn::prelude::*;

use super::config::AdapterConfig;
use super::init::Init;
use super::linear::{AdaptedLinear, Deltas};
use super::methods::dora::{DoraState, DoraTarget};
use super::methods::lora::{LoraFactors, LoraState, LoraTarget};
use super::methods::{Method, MethodConfig, MethodState, Pass, Registered};
use super::target::{Target, select_linears};
use crate::error::Result;

/// Parameters trained at `multiplier` times the run's learning rate, 2-D and 1-D ones (RepLoRA's
/// generators): the trainer steps them with their own rate.
#[derive(Clone, Debug)]
pub struct LrGroup {
    pub multiplier: f64,
    pub matrices: Vec<burn::module::ParamId>,
    pub vectors: Vec<burn::module::ParamId>,
}

/// Every trainable adapter tensor of a model, plus the config that built it.
#[derive(Module, Debug)]
pub struct AdapterSet {
    /// The adapted linears, in model order.
    #[module(skip)]
    pub targets: Vec<Target>,
    /// The method's tensors; `None` for no adapter (full fine-tuning, a probe).
    pub state: Option<MethodState>,
    #[module(skip)]
    pub config: AdapterConfig,
}

impl AdapterSet {
    /// Builds the adapters `config` asks for on the given linears.
    pub fn new(config: &AdapterConfig, linears: &[&AdaptedLinear]) -> Result<Self> {
        let targets = select_linears(config, linears)?;
        super::count::check_memory(config, &targets)?;
        let mut init = Init::new(config.seed, &linears[0].weight.device());
        let state = config.method.init(config, &targets, linears, &mut init)?;
        Ok(Self { targets, state: Some(state), config: config.clone() })
    }

    /// An adapter set with no targets (full fine-tuning keeps one so the model type is the same).
    pub fn empty() -> Self {
        Self { targets: vec![], state: None, config: AdapterConfig::default() }
    }

    /// This adapter's state if its method is `M` (e.g. RepLoRA's blocks and generators).
    pub fn state_of<M: Registered>(&self) -> Option<&M::State> {
        self.state.as_ref().and_then(M::state)
    }

    pub fn state_of_mut<M: Registered>(&mut self) -> Option<&mut M::State> {
        self.state.as_mut().and_then(M::state_mut)
    }

    /// The parameters the method trains at their own learning rate (RepLoRA's generators at
    /// `generator_lr_multiplier`), if any.
    pub fn lr_group(&self) -> Option<LrGroup> {
        self.state.as_ref().and_then(|s| s.lr_group(&self.config.method))
    }

    /// The method's 2-D parameters kept out of weight decay (the trainer exempts every 1-D one).
    pub fn decay_exempt(&self) -> Vec<burn::module::ParamId> {
        self.state.as_ref().map_or_else(Vec::new, |s| s.decay_exempt())
    }

    /// The deltas for one forward pass; `training` switches adapter dropout on.
    pub fn deltas(&self, training: bool) -> Deltas {
        let mut deltas = Deltas { training, ..Deltas::default() };
        if let Some(state) = &self.state {
            let pass = Pass { targets: &self.targets, dropout: self.config.lora_dropout };
            state.deltas(&self.config.method, &pass, &mut deltas);
        }
        deltas
    }

    /// The plain LoRA (or DoRA) adapter this one computes: RepLoRA's generated factors are
    /// evaluated once and stored as `A`, `B`; generators and seeds are dropped. Bottleneck
    /// adapters and prefixes have no such form.
    pub fn to_lora(&self) -> Result<Self> {
        self.config.method.method().check_mergeable("written as LoRA")?;
        let deltas = self.deltas(false);
        let low_rank: Vec<_> = self.targets.iter().map(|t| deltas.get(&t.path).expect("every target has a delta")).collect();
        let factors = |d: &&super::linear::LinearDelta| LoraFactors::from_values(&d.a, &d.b);
        let (method, state) = match low_rank.iter().all(|d| d.magnitude.is_some()) && !low_rank.is_empty() {
            true => {
                let targets = low_rank
                    .iter()
                    .map(|d| DoraTarget {
                        factors: factors(d),
                        magnitude: Param::from_tensor(d.magnitude.clone().expect("checked").detach()),
                    })
                    .collect();
                (Method::Dora, MethodState::Dora(DoraState { targets }))
            }
            false => {
                let targets = low_rank.iter().map(|d| LoraTarget { factors: factors(d) }).collect();
                (Method::Lora, MethodState::Lora(LoraState { targets }))
            }
        };
        let config = AdapterConfig { method: method.defaults(), ..self.config.clone() };
        Ok(Self { targets: self.targets.clone(), state: Some(state), config })
    }

    /// Number of trainable adapter parameters (counted from the tensors).
    pub fn trainable_params(&self) -> usize {
        self.num_params()
    }

    pub fn target_paths(&self) -> Vec<&str> {
        self.targets.iter().map(|t| t.path.as_str()).collect()
    }

    /// The method's settings if it is `M`.
    pub fn settings_of<M: Registered>(&self) -> Option<&M::Settings> {
        M::settings(&self.config.method)
    }

    /// The config's method.
    pub fn method(&self) -> &MethodConfig {
        &self.config.method
    }
}

/// Something applied to every adapter parameter together with its stable file name
/// (saving records them, loading replaces them).
pub trait NamedParams {
    fn param<const D: usize>(&mut self, name: &str, param: Param<Tensor<D>>) -> Result<Param<Tensor<D>>>;
}

impl AdapterSet {
    /// Passes every parameter through `v` under its file name (each method names its own:
    /// `<path>.lora_A`, `blocks.<i>.seed_A`, `prefix.embedding`, ...).
    pub fn map_named<V: NamedParams>(self, v: &mut V) -> Result<Self> {
        let state = self.state.map(|s| s.map_named(&self.targets, v)).transpose()?;
        Ok(Self { state, ..self })
    }
}
