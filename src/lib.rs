//! replora: parameter-efficient fine-tuning (RepLoRA, LoRA, DoRA) of pre-trained transformers
//! on burn.
//!
//! - [`adapters`]: the methods, their injection into a model, merge/unmerge, materialization.
//! - [`formats`]: the native adapter format and Hugging Face PEFT import/export.
//! - [`models`]: model architectures whose linears take adapters.

pub mod adapters;
pub mod error;
pub mod formats;
pub mod models;

pub use error::{Error, Result};
