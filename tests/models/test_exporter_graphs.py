"""Cut points on graphs from real exporters (see tests/fixtures/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from models.cuts import find_cuts
from models.graph import GraphIndex
from models.onnx_io import load_model
from models.partition import partition_model
from models.verify import verify_partitions
from tests.oracle import brute_force_cuts

FIXTURES = Path(__file__).parent.parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected_cuts.json").read_text())


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_cuts_match_the_hand_worked_answer(fixture: str) -> None:
    model = load_model(FIXTURES / fixture)
    internal = [cut.tensor for cut in find_cuts(GraphIndex(model.proto))[1:-1]]
    assert internal == EXPECTED[fixture]
    assert internal == brute_force_cuts(onnx.load(str(FIXTURES / fixture)))


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_every_cut_reproduces_the_exported_model(fixture: str, tmp_path: Path) -> None:
    manifest = partition_model(FIXTURES / fixture, tmp_path / "parts")
    checks = verify_partitions(tmp_path / "parts", manifest)
    assert len(checks) == len(EXPECTED[fixture])


def test_paddle_style_constants_are_copied_not_crossed(tmp_path: Path) -> None:
    """Constants defined at the start and read at the end must not block the cuts between."""
    manifest = partition_model(FIXTURES / "paddle_style.onnx", tmp_path / "parts")
    middle = manifest.cuts[len(manifest.cuts) // 2]
    head = onnx.load(str(tmp_path / "parts" / middle.head), load_external_data=False)
    tail = onnx.load(str(tmp_path / "parts" / middle.tail), load_external_data=False)
    head_constants = {n.output[0] for n in head.graph.node if n.op_type == "Constant"}
    tail_constants = {n.output[0] for n in tail.graph.node if n.op_type == "Constant"}
    assert head_constants & tail_constants, "a shared constant should be copied to both sides"
    assert len(head.graph.input) == len(tail.graph.input) == 1
