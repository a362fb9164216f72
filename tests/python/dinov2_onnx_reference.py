"""The backbone features of an ONNX Dinov2 export, computed by onnxruntime: the output of the
final LayerNorm (`<prefix>/layernorm/Add_1`), made a graph output, with the input's height and
width made symbolic so that any multiple of the patch size runs.

usage: dinov2_onnx_reference.py MODEL.onnx PIXELS.safetensors OUT.safetensors
PIXELS holds `pixels_<size>` tensors [batch, 3, size, size]; OUT gets `hidden_<size>`.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file, save_file

model_path, pixels_path, out_path = sys.argv[1:4]
model = onnx.load(model_path)
graph = model.graph
image = graph.input[0]
for dim, name in zip(image.type.tensor_type.shape.dim[2:], ("height", "width")):
    dim.ClearField("dim_value")
    dim.dim_param = name
del graph.value_info[:]
target = next(n for n in graph.node if n.name.endswith("/layernorm/Add_1")).output[0]
del graph.output[:]
graph.output.extend([onnx.helper.make_tensor_value_info(target, onnx.TensorProto.FLOAT, None)])
options = ort.SessionOptions()
options.intra_op_num_threads = 2
session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
out = {}
for name, pixels in load_file(pixels_path).items():
    size = name.split("_")[1]
    out[f"hidden_{size}"] = np.ascontiguousarray(session.run(None, {image.name: pixels.astype(np.float32)})[0])
save_file(out, out_path)
print("ok", {k: v.shape for k, v in out.items()})
