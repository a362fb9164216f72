//! Model-weight I/O: safetensors files as named host tensors, GGUF files, and the one
//! [`Reader`] every architecture loads its parameters through.

pub mod gguf;
pub mod onnx;
pub mod reader;
pub mod tensors;

pub use reader::Reader;
pub use tensors::HostTensor;
