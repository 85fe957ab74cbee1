from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models.graph import node_inputs
from models.partition import partition_model
from models.runtime import sample_input
from models.verify import verify_partitions
from neukonfig.errors import OutputDirConflictError, VerificationError
from neukonfig.manifest import CutKind, read_manifest
from tests.graphs import BRANCHY_CUTS


def run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_branchy_partitions_reproduce_the_full_model(branchy_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    manifest = partition_model(branchy_file, out)
    assert [cut.tensor for cut in manifest.cuts] == BRANCHY_CUTS
    feed = {"x": np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)}
    (expected,) = run(branchy_file, feed)
    for cut in manifest.cuts:
        if cut.kind is not CutKind.SPLIT:
            continue
        (middle,) = run(out / cut.head, feed)
        (actual,) = run(out / cut.tail, {cut.tensor: middle})
        np.testing.assert_allclose(actual, expected, rtol=1e-6)


def test_manifest_lists_relative_files_for_every_cut(branchy_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    partition_model(branchy_file, out, name="branchy")
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["model"]["name"] == "branchy"
    assert raw["num_cuts"] == len(BRANCHY_CUTS)
    first, last = raw["cuts"][0], raw["cuts"][-1]
    assert (first["kind"], first["head"], first["tail"]) == ("all_cloud", None, "full.onnx")
    assert (last["kind"], last["head"], last["tail"]) == ("all_edge", "full.onnx", None)
    for cut in raw["cuts"]:
        assert {"index", "tensor", "shape", "dtype", "bytes", "head", "tail"} <= cut.keys()
        for name in (cut["head"], cut["tail"]):
            assert name is None or (not Path(name).is_absolute() and (out / name).is_file())


def test_heads_and_tails_are_checkable_and_keep_only_what_they_use(
    zoo_file, tmp_path: Path
) -> None:
    out = tmp_path / "parts"
    manifest = partition_model(zoo_file("tiny"), out)
    for cut in manifest.cuts:
        if cut.kind is not CutKind.SPLIT:
            continue
        for name in (cut.head, cut.tail):
            onnx.checker.check_model(str(out / name), full_check=True)
            model = onnx.load(str(out / name), load_external_data=False)
            read = {i for node in model.graph.node for i in node_inputs(node)}
            assert {t.name for t in model.graph.initializer} <= read


def test_dynamic_batch_survives_the_cut(zoo_file, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    manifest = partition_model(zoo_file("tiny"), out, cuts="3")
    cut = manifest.cut(3)
    head = onnx.load(str(out / cut.head), load_external_data=False)
    tail = onnx.load(str(out / cut.tail), load_external_data=False)
    assert head.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert tail.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    feed = {"input": sample_input(manifest.model.inputs[0], batch=5, seed=0)}
    (middle,) = run(out / cut.head, feed)
    assert middle.shape[0] == 5


@pytest.mark.parametrize("name", ["tiny", "mobilenetv2"])
def test_every_cut_of_a_zoo_model_verifies(zoo_file, tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    manifest = partition_model(zoo_file(name), out)
    checks = verify_partitions(out, manifest)
    assert len(checks) == manifest.num_cuts - 2
    assert all(check.max_abs_error < 1e-3 for check in checks)


def test_weights_are_written_once_and_shared(zoo_file, tmp_path: Path) -> None:
    source = zoo_file("mobilenetv2")
    out = tmp_path / "parts"
    manifest = partition_model(source, out)
    weights = (out / "weights.bin").stat().st_size
    largest_graph = max(p.stat().st_size for p in out.glob("cut*.onnx"))
    assert manifest.weights == "weights.bin"
    assert weights < 1.1 * source.stat().st_size
    # Each head or tail holds graph structure and weight offsets, not weights.
    assert largest_graph < 0.01 * source.stat().st_size


def test_repartitioning_the_same_model_merges_cuts(zoo_file, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    partition_model(zoo_file("tiny"), out, cuts="1")
    manifest = partition_model(zoo_file("tiny"), out, cuts="2,3")
    assert [cut.index for cut in read_manifest(out).cuts] == [1, 2, 3]
    verify_partitions(out, manifest)


def test_a_different_models_directory_is_refused(
    zoo_file, branchy_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "parts"
    partition_model(branchy_file, out, cuts="1")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(OutputDirConflictError, match="different model"):
        partition_model(zoo_file("tiny"), out)
    assert sorted(p.name for p in out.iterdir()) == before


def test_verify_fails_loudly_on_a_wrong_tail(branchy_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    manifest = partition_model(branchy_file, out, cuts="3")
    tail = onnx.load(str(out / manifest.cut(3).tail))
    relu = next(node for node in tail.graph.node if node.op_type == "Relu")
    relu.op_type = "Sigmoid"
    onnx.save(tail, str(out / manifest.cut(3).tail))
    with pytest.raises(VerificationError, match="differs from the full model"):
        verify_partitions(out, manifest)


def test_adding_cuts_leaves_the_mapped_weights_file_in_place(zoo_file, tmp_path: Path) -> None:
    """Running heads map weights.bin; replacing it would make new heads map a second copy."""
    out = tmp_path / "parts"
    partition_model(zoo_file("mobilenetv2"), out, cuts="1")
    before = (out / "weights.bin").stat().st_ino
    manifest = partition_model(zoo_file("mobilenetv2"), out, cuts="5")
    assert (out / "weights.bin").stat().st_ino == before
    assert [cut.index for cut in manifest.cuts] == [1, 5]
    verify_partitions(out, manifest)
