"""A tiny imperative ONNX graph builder for the model zoo.

Each helper appends one PyTorch-eval-style node (plus its seeded weights) and returns the
name of the tensor it produced, so the architectures read like a ``forward()``. Nodes are
appended in call order, which keeps the graph topologically sorted by construction.

The graph is written straight into the ``ModelProto`` that :meth:`GraphBuilder.finish`
returns: with vgg16's 138M parameters, every ``make_graph``/``make_model`` style copy of
the initializers would cost another ~550 MB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# IR 8 rather than onnx's current default, so older onnxruntime builds (e.g. on a Raspberry
# Pi edge device) still load the models; opset 17 is valid under IR 8.
IR_VERSION = 8
PRODUCER = "neukonfig-zoo"
BATCH_DIM = "batch"
# PyTorch's BatchNorm2d default; ONNX's default is the same but saying it keeps exports honest.
BN_EPSILON = 1e-5
BIAS_STD = 0.01


class GraphBuilder:
    """Accumulates nodes and seeded initializers for one single-input, single-output model."""

    def __init__(
        self,
        *,
        name: str,
        seed: int,
        input_shape: Sequence[int],
        input_name: str = "input",
    ) -> None:
        """Start the graph ``name`` with one float input of shape ``["batch", *input_shape]``.

        All weights are drawn, in call order, from one ``numpy.random.Generator`` seeded with
        ``seed``, so the same calls always produce a byte-identical model.
        """
        self._rng = np.random.default_rng(seed)
        self._seed = seed
        self._model = onnx.ModelProto()
        self._graph = self._model.graph
        self._graph.name = name
        self._taken: set[str] = set()
        self.input = self._claim(input_name)
        self._graph.input.append(
            helper.make_tensor_value_info(self.input, TensorProto.FLOAT, [BATCH_DIM, *input_shape])
        )

    # -- naming and weights ------------------------------------------------------------

    def _claim(self, name: str) -> str:
        """Reserve ``name`` (or ``name_1``, ``name_2``, ...) so no two tensors/nodes collide."""
        candidate, suffix = name, 0
        while candidate in self._taken:
            suffix += 1
            candidate = f"{name}_{suffix}"
        self._taken.add(candidate)
        return candidate

    def _initializer(self, name: str, array: np.ndarray) -> str:
        tensor_name = self._claim(name)
        # append() copies the proto; the temporary from from_array is freed right after,
        # so only one copy of each weight outlives this call.
        self._graph.initializer.append(numpy_helper.from_array(array, tensor_name))
        return tensor_name

    def _normal(self, shape: tuple[int, ...], std: float, mean: float = 0.0) -> np.ndarray:
        # float32 straight from the generator: a float64 draw for vgg16's fc1 alone is 800 MB.
        array = self._rng.standard_normal(shape, dtype=np.float32)
        array *= np.float32(std)
        if mean:
            array += np.float32(mean)
        return array

    def _he_weight(self, name: str, shape: tuple[int, ...], fan_in: int) -> str:
        # Kaiming-normal for ReLU nets keeps activation magnitudes roughly constant with depth.
        return self._initializer(name, self._normal(shape, math.sqrt(2.0 / fan_in)))

    def _node(
        self,
        op_type: str,
        inputs: Sequence[str],
        *,
        name: str,
        output: str | None = None,
        **attrs: object,
    ) -> str:
        """Append a node; its single output tensor is ``output`` or else the node's name."""
        node_name = self._claim(name)
        tensor = self._claim(output) if output else node_name
        self._graph.node.append(
            helper.make_node(op_type, list(inputs), [tensor], name=node_name, **attrs)
        )
        return tensor

    # -- layers ------------------------------------------------------------------------

    def conv(
        self,
        x: str,
        *,
        name: str,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = False,
    ) -> str:
        """2-D convolution with a square kernel; ``bias=False`` when a BatchNorm follows."""
        fan_in = in_channels // groups * kernel * kernel
        shape = (out_channels, in_channels // groups, kernel, kernel)
        inputs = [x, self._he_weight(f"{name}.weight", shape, fan_in)]
        if bias:
            bias_values = self._normal((out_channels,), BIAS_STD)
            inputs.append(self._initializer(f"{name}.bias", bias_values))
        return self._node(
            "Conv",
            inputs,
            name=name,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[padding] * 4,
            dilations=[1, 1],
            group=groups,
        )

    def batchnorm(self, x: str, *, name: str, channels: int, gain: float = 1.0) -> str:
        """Inference-mode BatchNormalization with plausible 'trained' statistics.

        The scale is ``gain * (1 + 0.1 N(0, 1))``; a ``gain`` below 1 damps a residual branch.
        """
        n = (channels,)
        scale = self._initializer(f"{name}.weight", self._normal(n, 0.1 * gain, mean=gain))
        bias = self._initializer(f"{name}.bias", self._normal(n, 0.1))
        mean = self._initializer(f"{name}.running_mean", self._normal(n, 0.1))
        # Variance must stay positive or the normalisation produces NaNs.
        var = self._rng.uniform(0.5, 1.5, size=n).astype(np.float32)
        var_name = self._initializer(f"{name}.running_var", var)
        return self._node(
            "BatchNormalization", [x, scale, bias, mean, var_name], name=name, epsilon=BN_EPSILON
        )

    def relu(self, x: str, *, name: str) -> str:
        return self._node("Relu", [x], name=name)

    def relu6(self, x: str, *, name: str) -> str:
        """ReLU6 as opset-17 Clip.

        The bounds are Constant nodes, not initializers, so that count_parameters only ever
        sees learnable weights, and each Clip owns its bounds, so no constant tensor is
        shared across a potential cut point.
        """
        low = self._constant(f"{name}.min", 0.0)
        high = self._constant(f"{name}.max", 6.0)
        return self._node("Clip", [x, low, high], name=name)

    def _constant(self, name: str, value: float) -> str:
        tensor = numpy_helper.from_array(np.array(value, dtype=np.float32))
        return self._node("Constant", [], name=name, value=tensor)

    def maxpool(self, x: str, *, name: str, kernel: int, stride: int, padding: int = 0) -> str:
        return self._node(
            "MaxPool",
            [x],
            name=name,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[padding] * 4,
        )

    def global_avgpool(self, x: str, *, name: str) -> str:
        return self._node("GlobalAveragePool", [x], name=name)

    def add(self, a: str, b: str, *, name: str) -> str:
        return self._node("Add", [a, b], name=name)

    def concat(self, inputs: Sequence[str], *, name: str, axis: int = 1) -> str:
        return self._node("Concat", inputs, name=name, axis=axis)

    def flatten(self, x: str, *, name: str) -> str:
        return self._node("Flatten", [x], name=name, axis=1)

    def gemm(
        self,
        x: str,
        *,
        name: str,
        in_features: int,
        out_features: int,
        output: str | None = None,
    ) -> str:
        """torch.nn.Linear: weight stored (out, in) and applied with transB=1, as torch exports.

        ``output`` names the result tensor when it must differ from the node (e.g. 'logits').
        """
        weight = self._he_weight(f"{name}.weight", (out_features, in_features), in_features)
        bias = self._initializer(f"{name}.bias", self._normal((out_features,), BIAS_STD))
        return self._node("Gemm", [x, weight, bias], name=name, output=output, transB=1)

    # -- result ------------------------------------------------------------------------

    def finish(
        self,
        output: str,
        *,
        num_classes: int,
        doc: str,
    ) -> onnx.ModelProto:
        """Declare ``output`` as the graph output and stamp opset/IR/producer/metadata."""
        self._graph.output.append(
            helper.make_tensor_value_info(output, TensorProto.FLOAT, [BATCH_DIM, num_classes])
        )
        model = self._model
        model.ir_version = IR_VERSION
        model.producer_name = PRODUCER
        model.doc_string = doc
        model.opset_import.append(helper.make_opsetid("", OPSET))
        helper.set_model_props(
            model, {"neukonfig.zoo": self._graph.name, "neukonfig.seed": str(self._seed)}
        )
        return model
