"""Tests for the seeded, code-built model zoo (models/zoo)."""

from __future__ import annotations

import collections
import gc
from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import models.zoo.tiny as tiny_module
from models.zoo import ZOO_MODELS, build_model, count_parameters
from models.zoo.tiny import VALID_CUTS
from neukonfig.errors import UnknownModelError

# name -> (input CHW, classes, parameters, Conv nodes, Gemm nodes, Add nodes); torchvision's
# numbers for the three classics.
EXPECTED: dict[str, tuple[tuple[int, int, int], int, int, int, int, int]] = {
    "tiny": ((3, 32, 32), 10, 19_170, 9, 1, 1),
    "mobilenetv2": ((3, 224, 224), 1000, 3_504_872, 52, 1, 10),
    "resnet50": ((3, 224, 224), 1000, 25_557_032, 53, 1, 16),
    "vgg16": ((3, 224, 224), 1000, 138_357_544, 13, 3, 0),
}

Shape = list[int | str]


# -- helpers ---------------------------------------------------------------------------


def _op_counts(model: onnx.ModelProto) -> collections.Counter[str]:
    return collections.Counter(node.op_type for node in model.graph.node)


def _dims(value: onnx.ValueInfoProto) -> Shape:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """Shapes of every tensor per onnx shape inference, run on a weight-less skeleton.

    The weights are redeclared as typed graph inputs so inference sees their shapes
    without serialising 550 MB of vgg16 weights twice more.
    """
    skeleton = onnx.ModelProto(ir_version=model.ir_version)
    skeleton.opset_import.extend(model.opset_import)
    graph = skeleton.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.input.extend(
        onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        for init in model.graph.initializer
    )
    inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=True).graph
    return {v.name: _dims(v) for v in [*inferred.value_info, *inferred.output]}


def _forward(model: onnx.ModelProto, batch: int) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return _run(session, model.graph.name, batch)


def _run(session: ort.InferenceSession, name: str, batch: int) -> np.ndarray:
    chw = EXPECTED[name][0]
    x = np.random.default_rng(0).standard_normal((batch, *chw), dtype=np.float32)
    (logits,) = session.run(["logits"], {"input": x})
    return logits


def _assert_sane_logits(logits: np.ndarray, batch: int, classes: int) -> None:
    assert logits.shape == (batch, classes)
    assert logits.dtype == np.float32
    assert np.isfinite(logits).all()
    assert logits.std() > 0
    # Seeded weights are scaled to keep activations O(1)-O(100): no explosion, no vanishing.
    assert 1e-2 < np.abs(logits).max() < 1e3
    if batch > 1:
        assert not np.allclose(logits[0], logits[1])


def _assert_interface(model: onnx.ModelProto, name: str) -> None:
    chw, classes, *_ = EXPECTED[name]
    graph = model.graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]
    assert _dims(graph.input[0]) == ["batch", *chw]
    assert _dims(graph.output[0]) == ["batch", classes]
    for value in (graph.input[0], graph.output[0]):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.producer_name == "neukonfig-zoo"
    assert model.doc_string
    assert "\n" not in model.doc_string
    props = {p.key: p.value for p in model.metadata_props}
    assert props == {"neukonfig.zoo": name, "neukonfig.seed": "0"}


def _assert_structure(model: onnx.ModelProto, name: str) -> None:
    _, _, params, convs, gemms, adds = EXPECTED[name]
    assert count_parameters(model) == params
    ops = _op_counts(model)
    assert (ops["Conv"], ops["Gemm"], ops["Add"]) == (convs, gemms, adds)
    assert ops["Dropout"] == 0


def _assert_topological_and_unique(model: onnx.ModelProto) -> None:
    graph = model.graph
    names = [node.name for node in graph.node]
    assert all(names)
    assert len(set(names)) == len(names)
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for node in graph.node:
        missing = [t for t in node.input if t and t not in known]
        assert not missing, f"{node.name} reads {missing} before they are produced"
        assert not known & set(node.output), f"{node.name} redefines a tensor"
        known.update(node.output)


def _valid_cuts(model: onnx.ModelProto) -> list[str]:
    """Brute-force single-tensor cuts: T's ancestors talk to the rest only through T."""
    graph = model.graph
    producer = {
        out: i for i, node in enumerate(graph.node) for out in node.input[:0] or node.output
    }
    graph_inputs = {i.name for i in graph.input}
    valid = []
    for index, node in enumerate(graph.node):
        tensor = node.output[0]
        if tensor in {o.name for o in graph.output}:
            continue
        ancestors, stack = set(), [index]
        while stack:
            current = stack.pop()
            if current not in ancestors:
                ancestors.add(current)
                stack.extend(producer[t] for t in graph.node[current].input if t in producer)
        crossing = {
            t
            for i, other in enumerate(graph.node)
            if i not in ancestors
            for t in other.input
            if t != tensor and (t in graph_inputs or producer.get(t) in ancestors)
        }
        if not crossing:
            valid.append(tensor)
    return valid


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> onnx.ModelProto:
    return build_model("tiny")


@pytest.fixture(scope="module")
def mobilenetv2() -> onnx.ModelProto:
    return build_model("mobilenetv2")


@pytest.fixture(params=["tiny", "mobilenetv2"])
def fast_model(
    request: pytest.FixtureRequest, tiny: onnx.ModelProto, mobilenetv2: onnx.ModelProto
) -> tuple[str, onnx.ModelProto]:
    return request.param, {"tiny": tiny, "mobilenetv2": mobilenetv2}[request.param]


# -- API -------------------------------------------------------------------------------


def test_zoo_models_lists_all_four() -> None:
    assert ZOO_MODELS == ("tiny", "mobilenetv2", "resnet50", "vgg16")


def test_unknown_name_raises_unknown_model_error() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown zoo model 'alexnet'.*tiny"):
        build_model("alexnet")


def test_same_seed_is_byte_identical_and_seed_matters() -> None:
    first = build_model("tiny", seed=7).SerializeToString()
    assert build_model("tiny", seed=7).SerializeToString() == first
    other = build_model("tiny", seed=8)
    assert other.SerializeToString() != first
    assert {p.key: p.value for p in other.metadata_props}["neukonfig.seed"] == "8"


def test_count_parameters_ignores_initializer_names(tiny: onnx.ModelProto) -> None:
    renamed = onnx.ModelProto()
    renamed.CopyFrom(tiny)
    mapping = {init.name: f"w{i}" for i, init in enumerate(renamed.graph.initializer)}
    for init in renamed.graph.initializer:
        init.name = mapping[init.name]
    for node in renamed.graph.node:
        node.input[:] = [mapping.get(t, t) for t in node.input]
    assert count_parameters(renamed) == count_parameters(tiny) == EXPECTED["tiny"][2]


def test_count_parameters_excludes_only_bn_running_stats(tiny: onnx.ModelProto) -> None:
    total = sum(int(np.prod(init.dims)) for init in tiny.graph.initializer)
    bn_channels = sum(
        int(np.prod(init.dims))
        for node in tiny.graph.node
        if node.op_type == "BatchNormalization"
        for init in tiny.graph.initializer
        if init.name == node.input[1]
    )
    assert count_parameters(tiny) == total - 2 * bn_channels


# -- fast models -----------------------------------------------------------------------


def test_fast_model_checks_and_interface(fast_model: tuple[str, onnx.ModelProto]) -> None:
    name, model = fast_model
    onnx.checker.check_model(model, full_check=True)
    _assert_interface(model, name)
    _assert_structure(model, name)
    _assert_topological_and_unique(model)


def test_fast_model_runs_on_onnxruntime(fast_model: tuple[str, onnx.ModelProto]) -> None:
    name, model = fast_model
    _assert_sane_logits(_forward(model, batch=2), batch=2, classes=EXPECTED[name][1])


def test_weights_are_float32_and_bn_variance_positive(
    fast_model: tuple[str, onnx.ModelProto],
) -> None:
    _, model = fast_model
    inits = {init.name: init for init in model.graph.initializer}
    assert {init.data_type for init in inits.values()} == {onnx.TensorProto.FLOAT}
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            assert (onnx.numpy_helper.to_array(inits[node.input[4]]) > 0).all()


def test_tiny_intermediate_shapes(tiny: onnx.ModelProto) -> None:
    shapes = _inferred_shapes(tiny)
    assert shapes["stem.relu"] == ["batch", 16, 32, 32]
    assert shapes["res.add"] == ["batch", 16, 32, 32]
    assert shapes["inception.concat"] == ["batch", 32, 32, 32]
    assert shapes["pool"] == ["batch", 32, 16, 16]
    assert shapes["dense.1.concat"] == ["batch", 48, 16, 16]
    assert shapes["dense.concat"] == ["batch", 64, 16, 16]
    assert shapes["logits"] == ["batch", 10]


def test_tiny_topology(tiny: onnx.ModelProto) -> None:
    ops = [node.op_type for node in tiny.graph.node]
    # Stem first, then residual Add < inception Concat < dense Concats < head.
    assert ops[:3] == ["Conv", "BatchNormalization", "Relu"]
    assert ops[-3:] == ["GlobalAveragePool", "Flatten", "Gemm"]
    order = [node.name for node in tiny.graph.node]
    blocks = ["res.add", "inception.concat", "dense.1.concat", "dense.concat"]
    assert [order.index(b) for b in blocks] == sorted(order.index(b) for b in blocks)
    assert ops.count("MaxPool") == 2
    consumers = collections.Counter(t for node in tiny.graph.node for t in node.input)
    assert consumers["res.relu"] == 3  # the three inception branches


def test_tiny_valid_cuts_match_brute_force(tiny: onnx.ModelProto) -> None:
    assert _valid_cuts(tiny) == list(VALID_CUTS)
    assert all(cut in (tiny_module.__doc__ or "") for cut in VALID_CUTS)


def test_mobilenetv2_intermediate_shapes(mobilenetv2: onnx.ModelProto) -> None:
    shapes = _inferred_shapes(mobilenetv2)
    assert shapes["features.0.2"] == ["batch", 32, 112, 112]
    assert shapes["features.3.add"] == ["batch", 24, 56, 56]
    assert shapes["features.17.conv.3"] == ["batch", 320, 7, 7]
    assert shapes["features.18.2"] == ["batch", 1280, 7, 7]
    assert shapes["flatten"][1] == 1280


def test_mobilenetv2_relu6_bounds_are_constants(mobilenetv2: onnx.ModelProto) -> None:
    inits = {init.name for init in mobilenetv2.graph.initializer}
    clips = [node for node in mobilenetv2.graph.node if node.op_type == "Clip"]
    assert len(clips) == 35
    assert not any(set(node.input[1:]) & inits for node in clips)


# -- big models (slow) -----------------------------------------------------------------


@pytest.fixture
def collect_after() -> Iterator[None]:
    yield
    gc.collect()  # let the next slow test start without the last one's 0.5 GB proto


@pytest.mark.slow
@pytest.mark.usefixtures("collect_after")
def test_resnet50() -> None:
    model = build_model("resnet50")
    onnx.checker.check_model(model, full_check=True)
    _assert_interface(model, "resnet50")
    _assert_structure(model, "resnet50")
    _assert_topological_and_unique(model)
    shapes = _inferred_shapes(model)
    assert shapes["layer1.2.relu3"] == ["batch", 256, 56, 56]
    assert shapes["layer2.3.relu3"] == ["batch", 512, 28, 28]
    assert shapes["layer3.5.relu3"] == ["batch", 1024, 14, 14]
    assert shapes["layer4.2.relu3"] == ["batch", 2048, 7, 7]
    _assert_sane_logits(_forward(model, batch=1), batch=1, classes=1000)


@pytest.mark.slow
@pytest.mark.usefixtures("collect_after")
def test_vgg16() -> None:
    model = build_model("vgg16")
    _assert_interface(model, "vgg16")
    _assert_structure(model, "vgg16")
    _assert_topological_and_unique(model)
    assert _op_counts(model)["MaxPool"] == 5
    assert _inferred_shapes(model)["flatten"][1] == 25_088
    # One serialised copy serves both checker and session; drop the proto before either.
    blob = model.SerializeToString()
    del model
    onnx.checker.check_model(blob, full_check=True)
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    del blob
    logits = _run(session, "vgg16", batch=1)
    del session
    _assert_sane_logits(logits, batch=1, classes=1000)
