"""The neukonfig model zoo: classic image classifiers built in code with seeded weights.

Every model is an eval-mode graph shaped like a PyTorch ONNX export without BN folding
(Conv + BatchNormalization + Relu, no Dropout), opset 17, IR version 8, one float input
``input`` of shape ``["batch", C, H, W]`` and one output ``logits`` of shape
``["batch", num_classes]``. Architectures, parameter counts and tensor shapes match
torchvision; the weights are random but seeded and scaled so activations stay O(1)-O(100).
Nothing is downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import onnx

from models.zoo.mobilenet import build_mobilenetv2
from models.zoo.resnet import build_resnet50
from models.zoo.tiny import build_tiny
from models.zoo.vgg import build_vgg16
from neukonfig.errors import UnknownModelError

__all__ = ["ZOO_MODELS", "build_model", "count_parameters"]

_BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "tiny": build_tiny,
    "mobilenetv2": build_mobilenetv2,
    "resnet50": build_resnet50,
    "vgg16": build_vgg16,
}
ZOO_MODELS: tuple[str, ...] = tuple(_BUILDERS)

# BatchNormalization inputs: X, scale, B, input_mean, input_var. Running statistics are
# buffers, not learnable parameters, in torchvision's count.
_BN_RUNNING_STATS = (3, 4)


def build_model(name: str, *, seed: int = 0) -> onnx.ModelProto:
    """Build zoo model ``name`` with weights drawn from a generator seeded with ``seed``."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown zoo model {name!r}; choose one of: {', '.join(ZOO_MODELS)}"
        ) from None
    return builder(seed=seed)


def count_parameters(model: onnx.ModelProto) -> int:
    """Learnable parameters as torchvision counts them.

    All initializer elements except BatchNormalization running mean/variance, which are
    found from the BN nodes' inputs rather than from naming conventions.
    """
    graph = model.graph
    running_stats = {
        node.input[i]
        for node in graph.node
        if node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx")
        for i in _BN_RUNNING_STATS
        if i < len(node.input)
    }
    return sum(math.prod(init.dims) for init in graph.initializer if init.name not in running_stats)
