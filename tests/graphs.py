"""Hand-built ONNX graphs whose right answers are known, for unit tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "hand_made", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8)
    onnx.checker.check_model(model)
    return model


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(value))


def branchy_model() -> onnx.ModelProto:
    """Every structure that confuses a chain-minded partitioner, in one small graph.

    x -> r0 -> a -> {b1, b2} -> c (inception) -> d -> e, d+e -> f (residual) -> *k -> g
    -> Shape/Gather/Unsqueeze/Concat/Reshape(g) -> h -> dense block -> out.
    A dead node reads x, and constant k is defined first but read late.
    Valid internal cuts, in order: r0, a, c, d, f, g, h.
    """
    relu = lambda src, dst: helper.make_node("Relu", [src], [dst], name=dst)  # noqa: E731
    nodes = [
        _const("k", np.array(0.5, dtype=np.float32)),
        relu("x", "dead"),
        relu("x", "r0"),
        relu("r0", "a"),
        relu("a", "b1"),
        helper.make_node("Neg", ["a"], ["b2"], name="b2"),
        helper.make_node("Sum", ["b1", "b2"], ["c"], name="c"),
        relu("c", "d"),
        relu("d", "e"),
        helper.make_node("Add", ["d", "e"], ["f"], name="f"),
        helper.make_node("Mul", ["f", "k"], ["g"], name="g"),
        helper.make_node("Shape", ["g"], ["s"], name="s"),
        _const("zero", np.array(0, dtype=np.int64)),
        helper.make_node("Gather", ["s", "zero"], ["batch"], name="batch"),
        _const("axes", np.array([0], dtype=np.int64)),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"], name="batch1"),
        _const("minus_one", np.array([-1], dtype=np.int64)),
        helper.make_node("Concat", ["batch1", "minus_one"], ["shape"], name="shape", axis=0),
        helper.make_node("Reshape", ["g", "shape"], ["h"], name="h"),
        relu("h", "l1"),
        helper.make_node("Concat", ["h", "l1"], ["m1"], name="m1", axis=1),
        relu("m1", "l2"),
        helper.make_node("Concat", ["h", "l1", "l2"], ["out"], name="out", axis=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 16])
    return _model(nodes, [x], [out])


BRANCHY_CUTS = ["x", "r0", "a", "c", "d", "f", "g", "h", None]


def two_input_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("a", "b")]
    return _model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])


def random_dag_model(choices: list[tuple[int, int, int]], *, width: int = 4) -> onnx.ModelProto:
    """A DAG of elementwise ops. Each choice (i, j, kind) adds one node reading earlier
    tensors i and j (indices modulo the tensors so far); kind picks Relu(i), Sum(i, j),
    Sum(i, constant) or a dead Relu that nothing reads. The last tensor is the output."""
    tensors = ["x"]
    nodes: list[onnx.NodeProto] = [_const("c0", np.ones(width, dtype=np.float32))]
    for number, (i, j, kind) in enumerate(choices):
        first, second = tensors[i % len(tensors)], tensors[j % len(tensors)]
        name = f"t{number}"
        if kind % 4 == 0:
            nodes.append(helper.make_node("Relu", [first], [name], name=name))
        elif kind % 4 == 1 and first != second:
            nodes.append(helper.make_node("Sum", [first, second], [name], name=name))
        elif kind % 4 == 3:
            nodes.append(helper.make_node("Relu", [first], [f"dead{number}"], name=f"dead{number}"))
            continue
        else:
            nodes.append(helper.make_node("Sum", [first, "c0"], [name], name=name))
        tensors.append(name)
    if len(tensors) == 1:
        nodes.append(helper.make_node("Relu", ["x"], ["t_only"], name="t_only"))
        tensors.append("t_only")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info(tensors[-1], TensorProto.FLOAT, ["batch", width])
    return _model(nodes, [x], [y])


def conv_chain_model(*, channels: int = 256, layers: int = 3) -> onnx.ModelProto:
    """Conv -> Relu, ``layers`` times, each Conv weight ``channels``² x 3 x 3 floats
    (2.25 MiB at 256: big enough that onnxruntime maps it from a file, where it can).
    onnxruntime rewrites such weights at its default level (NCHWc on x86)."""
    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "x"
    for layer in range(layers):
        weight = rng.standard_normal((channels, channels, 3, 3), dtype=np.float32) * 0.02
        weights.append(numpy_helper.from_array(weight, f"w{layer}"))
        conv = helper.make_node(
            "Conv", [previous, f"w{layer}"], [f"c{layer}"], pads=[1, 1, 1, 1], name=f"c{layer}"
        )
        nodes += [conv, helper.make_node("Relu", [f"c{layer}"], [f"r{layer}"], name=f"r{layer}")]
        previous = f"r{layer}"
    shape = [1, channels, 8, 8]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    outputs = [helper.make_tensor_value_info(previous, TensorProto.FLOAT, shape)]
    return _model(nodes, inputs, outputs, weights)
