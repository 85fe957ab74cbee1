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


def test_sessions_on_a_shared_arena_answer_as_sessions_on_their_own(tiny_parts: Path) -> None:
    """Sessions taking activations from the process's one arena (run one after the other,
    so each reuses what the others freed) answer exactly as sessions with their own
    arenas, and ask onnxruntime for the environment's allocator."""
    batch = np.random.default_rng(3).standard_normal((1, 3, 32, 32), dtype=np.float32)

    def pipeline(cut: int, *, shared_arena: bool):
        head = load_partition(tiny_parts, cut, Role.EDGE, shared_arena=shared_arena)
        tail = load_partition(tiny_parts, cut, Role.CLOUD, shared_arena=shared_arena)
        return head, tail

    for cut in (3, 6):
        own_head, own_tail = pipeline(cut, shared_arena=False)
        expected = own_tail.run(own_head.run({"input": batch}))["logits"]
        head, tail = pipeline(cut, shared_arena=True)
        assert head.session is not None
        options = head.session.get_session_options()
        assert options.get_session_config_entry("session.use_env_allocators") == "1"
        for _ in range(2):
            np.testing.assert_array_equal(tail.run(head.run({"input": batch}))["logits"], expected)
