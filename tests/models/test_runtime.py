from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.partition import partition_model
from models.runtime import Role, load_partition, warm_up
from neukonfig.errors import CutNotFoundError


@pytest.fixture(scope="module")
def tiny_parts(zoo_file, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-parts")
    partition_model(zoo_file("tiny"), out)
    return out


def test_edge_then_cloud_equals_the_full_model_at_every_cut(tiny_parts: Path) -> None:
    full = load_partition(tiny_parts, 0, Role.CLOUD)
    feeds = {"input": np.random.default_rng(3).standard_normal((2, 3, 32, 32), dtype=np.float32)}
    expected = full.run(feeds)
    last = full.manifest.num_cuts - 1
    for index in range(last + 1):
        edge = load_partition(tiny_parts, index, Role.EDGE)
        middle = edge.run(feeds)
        if index == last:
            result = middle
        else:
            assert [t.name for t in load_partition(tiny_parts, index, Role.CLOUD).inputs] == list(
                middle
            )
            result = load_partition(tiny_parts, index, Role.CLOUD).run(middle)
        np.testing.assert_allclose(result["logits"], expected["logits"], rtol=1e-4, atol=1e-5)


def test_cut_zero_edge_passes_the_input_through(tiny_parts: Path) -> None:
    edge = load_partition(tiny_parts, 0, Role.EDGE)
    assert edge.session is None
    assert edge.outputs == ["input"]


def test_all_edge_cut_has_no_cloud_side(tiny_parts: Path) -> None:
    last = load_partition(tiny_parts, 0, Role.EDGE).manifest.num_cuts - 1
    with pytest.raises(CutNotFoundError, match="all-edge"):
        load_partition(tiny_parts, last, Role.CLOUD)


def test_warm_up_runs_a_seeded_inference(tiny_parts: Path) -> None:
    outputs = warm_up(load_partition(tiny_parts, 3, Role.CLOUD, threads=1))
    assert outputs["logits"].shape == (1, 10)
