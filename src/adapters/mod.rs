//! Adapter methods (LoRA, DoRA, RepLoRA, Houlsby bottlenecks, prefix tuning), their injection
//! into a model, and merging.

pub mod bottleneck;
pub mod config;
pub mod count;
pub mod diagnostics;
pub mod init;
pub mod linear;
pub mod lora;
pub mod peft_model;
pub mod prefix;
pub mod replora;
pub mod set;
pub mod target;

pub use bottleneck::BottleneckConfig;
pub use config::{Activation, AdapterConfig, LoraInit, Method, OutputScale, RepLoraConfig, SeedInit, SeedKind, TargetModules};
pub use count::{ParamReport, closed_form, ppt};
pub use linear::{AdaptedLinear, Deltas, LinearDelta};
pub use peft_model::{Adaptable, PeftModel};
pub use prefix::PrefixConfig;
pub use set::AdapterSet;
pub use target::{Target, select_targets};
