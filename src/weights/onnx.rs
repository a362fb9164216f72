//! Weights out of an ONNX model: its float initializers, and the graph nodes that consume them
//! (an exporter leaves a linear layer's weight anonymous, `onnx::MatMul_1966`, and only the
//! consuming node's name, `/encoder/layer.0/attention/attention/key/MatMul`, says what it is).
//!
//! The protobuf messages are decoded by `prost`; the structs below declare only the part of the
//! ONNX schema (onnx.proto, field numbers as published) that weights live in. Unknown fields
//! are skipped by the decoder.

use std::collections::BTreeMap;
use std::path::Path;

use super::HostTensor;
use crate::error::{Error, Result};

#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    double_data: Vec<f64>,
    /// 1: the data is in another file (not supported).
    #[prost(int32, tag = "14")]
    data_location: i32,
}

/// ONNX `TensorProto.DataType` values this reader converts to f32.
const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;
const BFLOAT16: i32 = 16;

/// A graph node that reads an initializer.
#[derive(Clone, Debug, PartialEq)]
pub struct Consumer {
    /// The node's name, e.g. `/backbone/encoder/layer.0/mlp/fc1/MatMul`.
    pub node: String,
    pub op_type: String,
}

/// The float initializers of an ONNX model and who consumes each.
#[derive(Debug)]
pub struct OnnxWeights {
    pub tensors: BTreeMap<String, HostTensor>,
    pub consumers: BTreeMap<String, Vec<Consumer>>,
}

/// Reads `path`'s float initializers (f32, f16, bf16 and f64 become f32; integer constants are
/// left out: they are shapes and indices, not weights).
pub fn read(path: &Path) -> Result<OnnxWeights> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let model: ModelProto = prost::Message::decode(bytes.as_slice()).map_err(|e| Error::format(path, format!("not an ONNX model: {e}")))?;
    let graph = model.graph.ok_or_else(|| Error::format(path, "the ONNX model has no graph"))?;
    let mut tensors = BTreeMap::new();
    for t in graph.initializer {
        if t.data_location == 1 {
            return Err(Error::format(path, format!("initializer {} keeps its data in an external file, which is not supported", t.name)));
        }
        if let Some(tensor) = to_host(&t).map_err(|m| Error::format(path, format!("initializer {}: {m}", t.name)))? {
            tensors.insert(t.name, tensor);
        }
    }
    let mut consumers: BTreeMap<String, Vec<Consumer>> = BTreeMap::new();
    for node in graph.node {
        for input in node.input.iter().filter(|i| tensors.contains_key(*i)) {
            consumers.entry(input.clone()).or_default().push(Consumer { node: node.name.clone(), op_type: node.op_type.clone() });
        }
    }
    Ok(OnnxWeights { tensors, consumers })
}

fn to_host(t: &TensorProto) -> std::result::Result<Option<HostTensor>, String> {
    let shape: Vec<usize> =
        t.dims.iter().map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}"))).collect::<std::result::Result<_, _>>()?;
    let count: usize = shape.iter().product();
    let raw = &t.raw_data;
    let data: Vec<f32> = match t.data_type {
        FLOAT if !raw.is_empty() => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        FLOAT => t.float_data.clone(),
        DOUBLE if !raw.is_empty() => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        DOUBLE => t.double_data.iter().map(|&v| v as f32).collect(),
        // Half-precision values in `int32_data` (no raw data) are not produced by exporters in use.
        FLOAT16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        BFLOAT16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return Ok(None),
    };
    if data.len() != count {
        return Err(format!("holds {} values for shape {shape:?} ({count} expected)", data.len()));
    }
    Ok(Some(HostTensor { shape, data }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn tensor(name: &str, dims: Vec<i64>, values: &[f32]) -> TensorProto {
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        TensorProto { dims, data_type: FLOAT, name: name.into(), raw_data, ..Default::default() }
    }

    #[test]
    fn reads_initializers_and_their_consumers() {
        let graph = GraphProto {
            node: vec![NodeProto { input: vec!["x".into(), "onnx::MatMul_7".into()], name: "/fc/MatMul".into(), op_type: "MatMul".into() }],
            initializer: vec![
                tensor("onnx::MatMul_7", vec![2, 3], &[1., 2., 3., 4., 5., 6.]),
                TensorProto { dims: vec![2], data_type: FLOAT, name: "b".into(), float_data: vec![0.5, -0.5], ..Default::default() },
                TensorProto { dims: vec![1], data_type: 7, name: "shape".into(), raw_data: vec![0; 8], ..Default::default() },
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, ModelProto { graph: Some(graph) }.encode_to_vec()).unwrap();
        let w = read(&path).unwrap();
        assert_eq!(w.tensors.keys().collect::<Vec<_>>(), ["b", "onnx::MatMul_7"], "the int64 constant is not a weight");
        assert_eq!(w.tensors["onnx::MatMul_7"].shape, [2, 3]);
        assert_eq!(w.tensors["onnx::MatMul_7"].data, [1., 2., 3., 4., 5., 6.]);
        assert_eq!(w.tensors["b"].data, [0.5, -0.5]);
        assert_eq!(w.consumers["onnx::MatMul_7"], [Consumer { node: "/fc/MatMul".into(), op_type: "MatMul".into() }]);
    }

    #[test]
    fn bad_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"\xff\xff\xff not protobuf").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("m.onnx") && e.contains("not an ONNX model"), "{e}");
        let short = GraphProto { initializer: vec![tensor("w", vec![4], &[1., 2.])], ..Default::default() };
        std::fs::write(&path, ModelProto { graph: Some(short) }.encode_to_vec()).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("initializer w") && e.contains("2 values for shape [4]"), "{e}");
    }
}
