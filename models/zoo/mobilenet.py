"""torchvision ``mobilenet_v2`` (width multiplier 1.0) in eval mode.

Tensor names follow torchvision's module paths: ``features.{i}.conv.{j}`` inside the
inverted residual blocks, ``features.{i}.{j}`` for the Conv-BN-ReLU6 stacks. ReLU6 is a
``Clip(0, 6)``; Dropout before the classifier is omitted (eval mode).
"""

from __future__ import annotations

import onnx

from models.zoo._builder import GraphBuilder

# (expansion t, output channels c, repeats n, first stride s), as in the paper / torchvision.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280
_IMAGE_SIZE = 224
_NUM_CLASSES = 1000


def _conv_bn_relu6(
    b: GraphBuilder,
    x: str,
    *,
    name: str,
    in_channels: int,
    out_channels: int,
    kernel: int = 3,
    stride: int = 1,
    groups: int = 1,
) -> str:
    """torchvision's Conv2dNormActivation: slots .0 conv, .1 BN, .2 ReLU6."""
    x = b.conv(
        x,
        name=f"{name}.0",
        in_channels=in_channels,
        out_channels=out_channels,
        kernel=kernel,
        stride=stride,
        padding=(kernel - 1) // 2,
        groups=groups,
    )
    x = b.batchnorm(x, name=f"{name}.1", channels=out_channels)
    return b.relu6(x, name=f"{name}.2")


def _inverted_residual(
    b: GraphBuilder, x: str, *, name: str, in_channels: int, out_channels: int, stride: int, t: int
) -> str:
    hidden = in_channels * t
    y, slot = x, 0
    if t != 1:
        y = _conv_bn_relu6(
            b, y, name=f"{name}.conv.0", in_channels=in_channels, out_channels=hidden, kernel=1
        )
        slot = 1
    y = _conv_bn_relu6(
        b,
        y,
        name=f"{name}.conv.{slot}",
        in_channels=hidden,
        out_channels=hidden,
        stride=stride,
        groups=hidden,
    )
    # Linear bottleneck: no activation after the projection, as in the paper.
    y = b.conv(
        y,
        name=f"{name}.conv.{slot + 1}",
        in_channels=hidden,
        out_channels=out_channels,
        kernel=1,
    )
    y = b.batchnorm(y, name=f"{name}.conv.{slot + 2}", channels=out_channels)
    if stride == 1 and in_channels == out_channels:
        y = b.add(x, y, name=f"{name}.add")
    return y


def build_mobilenetv2(*, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 1.0: 52 conv + 1 linear layer, 3,504,872 parameters, input 3x224x224."""
    b = GraphBuilder(name="mobilenetv2", seed=seed, input_shape=(3, _IMAGE_SIZE, _IMAGE_SIZE))
    x = _conv_bn_relu6(
        b, b.input, name="features.0", in_channels=3, out_channels=_STEM_CHANNELS, stride=2
    )
    channels, index = _STEM_CHANNELS, 1
    for t, c, n, s in _SETTINGS:
        for i in range(n):
            x = _inverted_residual(
                b,
                x,
                name=f"features.{index}",
                in_channels=channels,
                out_channels=c,
                stride=s if i == 0 else 1,
                t=t,
            )
            channels, index = c, index + 1
    x = _conv_bn_relu6(
        b, x, name=f"features.{index}", in_channels=channels, out_channels=_LAST_CHANNELS, kernel=1
    )
    x = b.global_avgpool(x, name="avgpool")
    x = b.flatten(x, name="flatten")
    x = b.gemm(
        x,
        name="classifier.1",
        in_features=_LAST_CHANNELS,
        out_features=_NUM_CLASSES,
        output="logits",
    )
    return b.finish(
        x,
        num_classes=_NUM_CLASSES,
        doc="MobileNetV2 1.0 (torchvision mobilenet_v2), random seeded weights, 3x224x224 -> 1000.",
    )
