"""``tiny``: a small branchy CNN (3x32x32 -> 10 classes, ~19k parameters) for fast tests.

It packs every topology a partitioner has to get right into a graph that builds and runs in
milliseconds, in this order:

1. stem: ``stem.conv`` -> ``stem.bn`` -> ``stem.relu``
2. residual block: two Conv+BN with an identity skip from ``stem.relu`` into ``res.add``
3. inception block: three parallel branches reading ``res.relu`` (a tensor with three
   consumers that is *not* a skip), joined by ``inception.concat``:
   1x1 conv | 1x1 reduce -> 3x3 conv | 3x3 max pool (stride 1) -> 1x1 conv
4. ``pool`` : 2x2 max pool downsample
5. dense block (DenseNet-style, BN-ReLU-Conv layers): layer 1 reads ``pool``, layer 2 reads
   ``Concat(pool, layer 1)``, the block output is ``Concat(pool, layer 1, layer 2)``
6. head: BN -> ReLU -> GlobalAveragePool -> Flatten -> Gemm -> ``logits``

Valid single-tensor cut points (T is valid iff the nodes T depends on and all other nodes
communicate only through T), in graph order — the same list as :data:`VALID_CUTS`::

    stem.conv  stem.bn  stem.relu                  (plain chain)
    res.add  res.relu                              (residual block output, skip joined)
    inception.concat                               (inception block output)
    pool                                           (plain chain)
    dense.concat  head.bn  head.relu  avgpool  flatten   (dense block output, then chain)

Every other intermediate tensor is inside a block and is crossed by a skip or a parallel
branch: e.g. ``res.conv1`` (the skip carries ``stem.relu`` past it), any ``inception.b*``
tensor (the sibling branches), ``dense.0.conv`` (``pool`` is concatenated again later).
``input`` and ``logits`` are trivially valid but give an empty head or tail.
"""

from __future__ import annotations

import onnx

from models.zoo._builder import GraphBuilder

VALID_CUTS: tuple[str, ...] = (
    "stem.conv",
    "stem.bn",
    "stem.relu",
    "res.add",
    "res.relu",
    "inception.concat",
    "pool",
    "dense.concat",
    "head.bn",
    "head.relu",
    "avgpool",
    "flatten",
)

_IMAGE_SIZE = 32
_NUM_CLASSES = 10
_WIDTH = 16
_BRANCH = 8
_GROWTH = 16
_DENSE_LAYERS = 2


def _stem(b: GraphBuilder, x: str) -> str:
    x = b.conv(x, name="stem.conv", in_channels=3, out_channels=_WIDTH, kernel=3, padding=1)
    x = b.batchnorm(x, name="stem.bn", channels=_WIDTH)
    return b.relu(x, name="stem.relu")


def _residual(b: GraphBuilder, x: str) -> str:
    y = b.conv(x, name="res.conv1", in_channels=_WIDTH, out_channels=_WIDTH, kernel=3, padding=1)
    y = b.batchnorm(y, name="res.bn1", channels=_WIDTH)
    y = b.relu(y, name="res.relu1")
    y = b.conv(y, name="res.conv2", in_channels=_WIDTH, out_channels=_WIDTH, kernel=3, padding=1)
    y = b.batchnorm(y, name="res.bn2", channels=_WIDTH)
    y = b.add(y, x, name="res.add")
    return b.relu(y, name="res.relu")


def _conv_relu(b: GraphBuilder, x: str, *, name: str, cin: int, cout: int, kernel: int) -> str:
    x = b.conv(
        x,
        name=f"{name}.conv",
        in_channels=cin,
        out_channels=cout,
        kernel=kernel,
        padding=kernel // 2,
        bias=True,
    )
    return b.relu(x, name=f"{name}.relu")


def _inception(b: GraphBuilder, x: str) -> tuple[str, int]:
    b1 = _conv_relu(b, x, name="inception.b1", cin=_WIDTH, cout=_BRANCH, kernel=1)
    b2 = _conv_relu(b, x, name="inception.b2.reduce", cin=_WIDTH, cout=_BRANCH, kernel=1)
    b2 = _conv_relu(b, b2, name="inception.b2", cin=_BRANCH, cout=2 * _BRANCH, kernel=3)
    b3 = b.maxpool(x, name="inception.b3.pool", kernel=3, stride=1, padding=1)
    b3 = _conv_relu(b, b3, name="inception.b3", cin=_WIDTH, cout=_BRANCH, kernel=1)
    return b.concat([b1, b2, b3], name="inception.concat"), 4 * _BRANCH


def _dense(b: GraphBuilder, x: str, channels: int) -> tuple[str, int]:
    features = [x]
    for i in range(_DENSE_LAYERS):
        cin = channels + i * _GROWTH
        y = features[0] if i == 0 else b.concat(features, name=f"dense.{i}.concat")
        y = b.batchnorm(y, name=f"dense.{i}.bn", channels=cin)
        y = b.relu(y, name=f"dense.{i}.relu")
        y = b.conv(
            y, name=f"dense.{i}.conv", in_channels=cin, out_channels=_GROWTH, kernel=3, padding=1
        )
        features.append(y)
    return b.concat(features, name="dense.concat"), channels + _DENSE_LAYERS * _GROWTH


def build_tiny(*, seed: int = 0) -> onnx.ModelProto:
    """Branchy test CNN: residual, inception and dense blocks, input 3x32x32, 10 classes."""
    b = GraphBuilder(name="tiny", seed=seed, input_shape=(3, _IMAGE_SIZE, _IMAGE_SIZE))
    x = _residual(b, _stem(b, b.input))
    x, channels = _inception(b, x)
    x = b.maxpool(x, name="pool", kernel=2, stride=2)
    x, channels = _dense(b, x, channels)
    x = b.batchnorm(x, name="head.bn", channels=channels)
    x = b.relu(x, name="head.relu")
    x = b.global_avgpool(x, name="avgpool")
    x = b.flatten(x, name="flatten")
    x = b.gemm(x, name="fc", in_features=channels, out_features=_NUM_CLASSES, output="logits")
    return b.finish(
        x,
        num_classes=_NUM_CLASSES,
        doc="tiny: branchy test CNN (residual, inception, dense blocks), 3x32x32 -> 10.",
    )
