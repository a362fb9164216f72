//! Adapters: the methods (LoRA, DoRA, RepLoRA, Houlsby bottlenecks, prefix tuning; each a
//! plug-in in [`methods`]), their injection into a model, and merging.

pub mod base_weight;
pub mod config;
pub mod count;
pub mod diagnostics;
pub mod frozen_blocks;
pub mod init;
pub mod linear;
pub mod methods;
pub mod peft_model;
pub mod set;
pub mod target;

pub use methods::{bottleneck, dora, lora, prefix, replora};

pub use base_weight::BaseWeight;
pub use bottleneck::{BottleneckConfig, Houlsby};
pub use config::{Activation, AdapterConfig, LoraInit, TargetModules};
pub use count::{ParamReport, closed_form, ppt};
pub use dora::Dora;
pub use frozen_blocks::FrozenBlocks;
pub use linear::{AdaptedLinear, Deltas, FusedRows, LinearDelta, fused_blocks, put_linears};
pub use lora::Lora;
pub use methods::{AdapterMethod, Method, MethodConfig, MethodState, Sites};
pub use peft_model::{Adaptable, PeftModel, convert_linears, widening_note};
pub use prefix::{PrefixConfig, PrefixTuning};
pub use replora::{OutputScale, RepLora, RepLoraConfig, SeedInit, SeedKind};
pub use set::{AdapterSet, LrGroup};
pub use target::{Target, select_linears, select_targets, select_targets_fused};
