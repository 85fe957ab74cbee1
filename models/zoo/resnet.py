"""torchvision ``resnet50`` (Bottleneck v1.5: stride on the 3x3 conv) in eval mode.

Tensor names follow torchvision's module paths (``layer2.0.conv2``,
``layer3.0.downsample.1``...). torchvision reuses one ``relu`` module three times per
block; here the three ReLUs are ``relu1``..``relu3`` so every tensor has its own name.
"""

from __future__ import annotations

import onnx

from models.zoo._builder import GraphBuilder

_EXPANSION = 4
# (bottleneck width, blocks, first stride) for layer1..layer4.
_STAGES: tuple[tuple[int, int, int], ...] = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
# Scale of each block's last BN (bn3). With random weights BN does not renormalise, so
# identity + full-strength branch roughly doubles the activation variance per block (x5000
# after 16 blocks). Trained ResNets learn small residual branches; torchvision's
# zero_init_residual sets bn3.weight to 0. A small but non-zero gain keeps every branch
# live and the logits O(1)-O(100).
_RESIDUAL_GAIN = 0.3
_IMAGE_SIZE = 224
_NUM_CLASSES = 1000


def _conv_bn(
    b: GraphBuilder,
    x: str,
    *,
    conv: str,
    bn: str,
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    gain: float = 1.0,
) -> str:
    x = b.conv(
        x,
        name=conv,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel=kernel,
        stride=stride,
        padding=(kernel - 1) // 2,
    )
    return b.batchnorm(x, name=bn, channels=out_channels, gain=gain)


def _bottleneck(
    b: GraphBuilder, x: str, *, name: str, in_channels: int, width: int, stride: int
) -> str:
    out_channels = width * _EXPANSION
    y = b.relu(
        _conv_bn(
            b,
            x,
            conv=f"{name}.conv1",
            bn=f"{name}.bn1",
            in_channels=in_channels,
            out_channels=width,
            kernel=1,
        ),
        name=f"{name}.relu1",
    )
    # v1.5: the stride sits on the 3x3 conv, not on conv1 as in the original paper.
    y = b.relu(
        _conv_bn(
            b,
            y,
            conv=f"{name}.conv2",
            bn=f"{name}.bn2",
            in_channels=width,
            out_channels=width,
            kernel=3,
            stride=stride,
        ),
        name=f"{name}.relu2",
    )
    y = _conv_bn(
        b,
        y,
        conv=f"{name}.conv3",
        bn=f"{name}.bn3",
        in_channels=width,
        out_channels=out_channels,
        kernel=1,
        gain=_RESIDUAL_GAIN,
    )
    identity = x
    if stride != 1 or in_channels != out_channels:
        identity = _conv_bn(
            b,
            x,
            conv=f"{name}.downsample.0",
            bn=f"{name}.downsample.1",
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=1,
            stride=stride,
        )
    y = b.add(y, identity, name=f"{name}.add")
    return b.relu(y, name=f"{name}.relu3")


def build_resnet50(*, seed: int = 0) -> onnx.ModelProto:
    """ResNet-50: 53 conv + 1 linear layer, 25,557,032 parameters, input 3x224x224."""
    b = GraphBuilder(name="resnet50", seed=seed, input_shape=(3, _IMAGE_SIZE, _IMAGE_SIZE))
    x = _conv_bn(
        b, b.input, conv="conv1", bn="bn1", in_channels=3, out_channels=64, kernel=7, stride=2
    )
    x = b.relu(x, name="relu")
    x = b.maxpool(x, name="maxpool", kernel=3, stride=2, padding=1)
    channels = 64
    for stage, (width, blocks, stride) in enumerate(_STAGES, start=1):
        for i in range(blocks):
            x = _bottleneck(
                b,
                x,
                name=f"layer{stage}.{i}",
                in_channels=channels,
                width=width,
                stride=stride if i == 0 else 1,
            )
            channels = width * _EXPANSION
    x = b.global_avgpool(x, name="avgpool")
    x = b.flatten(x, name="flatten")
    x = b.gemm(x, name="fc", in_features=channels, out_features=_NUM_CLASSES, output="logits")
    return b.finish(
        x,
        num_classes=_NUM_CLASSES,
        doc="ResNet-50 (torchvision resnet50, v1.5), random seeded weights, 3x224x224 -> 1000.",
    )
