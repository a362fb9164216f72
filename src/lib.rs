//! replora: parameter-efficient fine-tuning (RepLoRA, LoRA, DoRA) of pre-trained transformers
//! on burn.
//!
//! - [`adapters`]: the methods, their injection into a model, merge/unmerge, materialization.
//! - [`formats`]: adapter files: the native format and Hugging Face PEFT import/export.
//! - [`weights`]: model-weight I/O (safetensors, GGUF, the shared parameter reader); [`files`]:
//!   atomic writes and JSON.
//! - [`models`]: model architectures whose linears take adapters.
//! - [`data`]: datasets, splits, tokenization; [`assets`]: `replora fetch`.
//! - [`training`]: the fine-tuning loop; [`classify`]: text classification end to end.
//! - [`simulate`]: the estimation-rate simulation of the paper's theory.
//! - [`kernels`]: fused CPU kernels (GELU, SiLU, softmax) with their own backward passes.
//! - [`rundir`]: run and output directories that hold earlier results; [`validate`]: setting ranges.
//! - [`cli`]: the `replora` command line.

pub mod adapters;
pub mod assets;
pub mod bench;
pub mod classify;
pub mod cli;
pub mod data;
pub mod error;
pub mod files;
pub mod formats;
pub mod generate;
pub mod interop;
pub mod kernels;
pub mod lm;
pub mod models;
pub mod rundir;
pub mod simulate;
pub mod training;
pub mod validate;
pub mod weights;

pub use error::{Error, Result};
