#!/usr/bin/python3
"""Write the two tiny ONNX graphs of analyze's batch tests, each with its
bundle.yaml, under analyze/testdata/batch-quirks/ (weights fixed, no torch):

    extra-fixed1/  detect; images [batch,3,8,8] (any batch), but
                   orig_target_sizes int64 [1,2]: the batch fixed on the
                   extra input only, a common export slip
    baked1/        classify; pixel_values [batch,3,8,8] (any batch), but a
                   Reshape to [1,192] inside: only batch 1 runs

Run with Debian's python3-onnx:  /usr/bin/python3 models/train/make_batch_quirks.py
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "analyze", "testdata", "batch-quirks")
rng = np.random.default_rng(20261207)


def save(name, graph, bundle):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="patchline-test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(d, "model.onnx"))
    with open(os.path.join(d, "bundle.yaml"), "w") as f:
        f.write(bundle)


def const(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


# extra-fixed1: scores = mean(images) + 0*sum(sizes); boxes = flat(images)·W; labels = 0.
images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])
sizes = helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, [1, 2])
nodes = [
    helper.make_node("Flatten", ["images"], ["flat"], axis=1),
    helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
    helper.make_node("Cast", ["orig_target_sizes"], ["sizes_f"], to=TensorProto.FLOAT),
    helper.make_node("ReduceSum", ["sizes_f"], ["sizes_sum"], keepdims=1),
    helper.make_node("Mul", ["sizes_sum", "zero"], ["sizes_zero"]),
    helper.make_node("Add", ["mean", "sizes_zero"], ["scores"]),
    helper.make_node("MatMul", ["flat", "w_box"], ["box2"]),
    helper.make_node("Unsqueeze", ["box2", "axis1"], ["boxes"]),
    helper.make_node("Mul", ["mean", "zero"], ["zeros"]),
    helper.make_node("Cast", ["zeros"], ["labels"], to=TensorProto.INT64),
]
graph = helper.make_graph(
    nodes, "extra_fixed1", [images, sizes],
    [
        helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch", 1]),
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 1, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1]),
    ],
    initializer=[
        const("zero", np.float32(0)),
        const("w_box", (rng.random((192, 4)) / 192).astype(np.float32)),
        const("axis1", np.array([1], dtype=np.int64)),
    ],
)
save("extra-fixed1", graph, """name: extra-fixed1
task: detect
onnx: model.onnx
input:
  kind: pixels
  name: images
  width: 8
  height: 8
  patch_size: 4
  resize: stretch
  scale: 0.00392156862745098
  extra:
    - name: orig_target_sizes
      value: input_size
outputs: {labels: labels, boxes: boxes, scores: scores, box_format: xyxy_input}
score_threshold: 0
labels: [thing]
""")

# baked1: logits = reshape(pixel_values, [1,192])·W.
pixels = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 8, 8])
graph = helper.make_graph(
    [
        helper.make_node("Reshape", ["pixel_values", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ],
    "baked1", [pixels],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
    initializer=[
        const("shape", np.array([1, 192], dtype=np.int64)),
        const("w", rng.standard_normal((192, 2)).astype(np.float32)),
    ],
)
save("baked1", graph, """name: baked1
task: classify
onnx: model.onnx
input:
  kind: pixels
  name: pixel_values
  width: 8
  height: 8
  patch_size: 4
  resize: stretch
  scale: 0.00392156862745098
outputs: {logits: logits}
top_k: 1
labels: [a, b]
""")
