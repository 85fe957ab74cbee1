"""torchvision ``vgg16`` (configuration "D", no BatchNorm) in eval mode.

Tensor names follow torchvision's module paths (``features.0``, ``classifier.6``...).
Two deliberate simplifications, neither of which changes parameters or outputs:

* ``AdaptiveAvgPool2d((7, 7))`` is omitted: the input is fixed at 224x224 (only the batch
  dimension is dynamic), so the last feature map is already 512x7x7 and the pool is an
  identity.
* Dropout layers are omitted, as in any eval-mode export.
"""

from __future__ import annotations

import onnx

from models.zoo._builder import GraphBuilder

# Output channels per conv layer; "M" is a 2x2/stride-2 max pool (torchvision cfg "D").
_CFG_D: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
)  # fmt: skip
_IMAGE_SIZE = 224
_NUM_CLASSES = 1000


def _features(b: GraphBuilder, x: str) -> tuple[str, int]:
    """The conv trunk; indices count torchvision's nn.Sequential slots (conv, relu, pool)."""
    channels, index = 3, 0
    for item in _CFG_D:
        if item == "M":
            x = b.maxpool(x, name=f"features.{index}", kernel=2, stride=2)
            index += 1
            continue
        out = int(item)
        x = b.conv(
            x,
            name=f"features.{index}",
            in_channels=channels,
            out_channels=out,
            kernel=3,
            padding=1,
            bias=True,
        )
        x = b.relu(x, name=f"features.{index + 1}")
        channels, index = out, index + 2
    return x, channels


def build_vgg16(*, seed: int = 0) -> onnx.ModelProto:
    """VGG-16: 13 conv + 3 linear layers, 138,357,544 parameters, input 3x224x224."""
    b = GraphBuilder(name="vgg16", seed=seed, input_shape=(3, _IMAGE_SIZE, _IMAGE_SIZE))
    x, channels = _features(b, b.input)
    x = b.flatten(x, name="flatten")
    x = b.gemm(x, name="classifier.0", in_features=channels * 7 * 7, out_features=4096)
    x = b.relu(x, name="classifier.1")
    x = b.gemm(x, name="classifier.3", in_features=4096, out_features=4096)
    x = b.relu(x, name="classifier.4")
    x = b.gemm(x, name="classifier.6", in_features=4096, out_features=_NUM_CLASSES, output="logits")
    return b.finish(
        x,
        num_classes=_NUM_CLASSES,
        doc="VGG-16 (torchvision vgg16, no BN), random seeded weights, 3x224x224 -> 1000.",
    )
