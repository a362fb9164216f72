//! replora: parameter-efficient fine-tuning (RepLoRA, LoRA, DoRA) of pre-trained transformers
//! on burn.
//!
//! - [`adapters`]: the methods, their injection into a model, merge/unmerge, materialization.
//! - [`models`]: pre-trained architectures (one file each) behind one contract and registry.
//! - [`tasks`]: what a run learns and how it is scored (classification, multiple choice), one
//!   [`tasks::Task`] each; [`run`]: the lifecycle every task shares (train, resume, evaluate,
//!   predict, export, merge, compare) and its results tables.
//!   [`layout`]: every file and folder of a run directory.
//! - [`training`]: the training loop, its schedule, metrics and resumable checkpoints.
//! - [`data`]: datasets, splits, tokenization; [`assets`]: `replora fetch`.
//! - [`formats`]: adapter files (the native format, Hugging Face PEFT import/export);
//!   [`weights`]: model-weight I/O (safetensors, GGUF, the shared parameter reader); [`files`]:
//!   atomic writes and JSON.
//! - [`generate`]: text generation; [`interop`]: raw outputs for checks against other tools.
//! - [`kernels`]: fused CPU kernels (GELU, SiLU, softmax) with their own backward passes;
//!   [`quantization`]: GGUF block-quantized matrices a frozen base weight may stay in.
//! - [`validate`]: setting ranges; [`device`]: which device computes (`--device`, the GPU
//!   backends' cargo features).
//! - [`choice`]: closed sets of named values (`--pooling cls`); [`progress`]: progress bars a
//!   front end draws.
//! - [`apps`]: the command line, the benchmark harness and the theory simulation (feature `cli`,
//!   on by default; `default-features = false` leaves them and clap, indicatif and plotters out).

pub mod adapters;
#[cfg(feature = "cli")]
pub mod apps;
pub mod assets;
pub mod choice;
pub mod data;
pub mod device;
pub mod error;
pub mod files;
pub mod formats;
pub mod generate;
pub mod interop;
pub mod kernels;
pub mod layout;
pub mod memory;
pub mod models;
pub mod precision;
pub mod progress;
pub mod quantization;
pub mod run;
pub mod tasks;
pub mod training;
pub mod validate;
pub mod weights;

pub use error::{Error, Result};
