"""Partitions optimized offline for this machine (models.optimized): same answers, and
every rewritten weight stored once and mapped by every session that holds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import models.optimized
from models.optimized import STORE_FILE, find_store, optimize_partitions
from models.partition import partition_model
from models.runtime import Role, load_partition
from neukonfig.manifest import CutKind
from tests.graphs import conv_chain_model

CONV_WEIGHT_BYTES = 256 * 256 * 3 * 3 * 4


@pytest.fixture
def chain_parts(tmp_path: Path) -> Path:
    source = tmp_path / "chain.onnx"
    onnx.save(conv_chain_model(), str(source))
    partition_model(source, tmp_path / "parts", name="chain")
    return tmp_path / "parts"


@pytest.fixture
def tiny_copy(zoo_file, tmp_path: Path) -> Path:
    """The tiny model's partitions of this test alone (a store changes how they load)."""
    partition_model(zoo_file("tiny"), tmp_path / "tiny", name="tiny")
    return tmp_path / "tiny"


def _every_side(directory: Path):
    manifest = load_partition(directory, 0, Role.CLOUD).manifest
    for cut in manifest.cuts:
        if cut.head:
            yield cut.index, Role.EDGE
        if cut.kind is not CutKind.ALL_EDGE:
            yield cut.index, Role.CLOUD


@pytest.mark.parametrize("parts", ["tiny_copy", "chain_parts"])
def test_optimized_partitions_answer_bit_for_bit_as_the_originals(parts: str, request) -> None:
    directory: Path = request.getfixturevalue(parts)
    sides = list(_every_side(directory))
    originals = [load_partition(directory, cut, role, share_weights=True) for cut, role in sides]
    assert not any(partition.optimized for partition in originals)
    optimize_partitions(directory)
    rng = np.random.default_rng(7)
    for (cut, role), original in zip(sides, originals, strict=True):
        optimized = load_partition(directory, cut, role, share_weights=True)
        assert optimized.optimized, (cut, role)
        feeds = {
            t.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in t.shape]).astype(
                np.float32
            )
            for t in original.inputs
        }
        expected, got = original.run(feeds), optimized.run(feeds)
        assert list(got) == list(expected), (cut, role)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{cut} {role}")


def test_each_rewritten_weight_is_stored_once_and_mapped_by_every_session(
    chain_parts: Path,
) -> None:
    store = optimize_partitions(chain_parts)
    # 3 convolutions, each held by up to 5 heads and tails: written once each.
    size = (store.path / "weights.bin").stat().st_size
    assert 3 * CONV_WEIGHT_BYTES <= size < 4 * CONV_WEIGHT_BYTES, size
    sessions = [
        load_partition(chain_parts, c, r, share_weights=True) for c, r in _every_side(chain_parts)
    ]
    mapped = _mapped_files()
    assert str(store.path / "weights.bin") in mapped, mapped
    del sessions


def test_without_a_store_onnxruntime_keeps_private_copies_of_the_weights(
    chain_parts: Path,
) -> None:
    """The case the store exists for: at the default level no conv weight stays mapped."""
    sessions = [
        load_partition(chain_parts, c, r, share_weights=True) for c, r in _every_side(chain_parts)
    ]
    assert not any(name.startswith(str(chain_parts)) for name in _mapped_files())
    del sessions


def test_a_store_for_other_partitions_or_another_machine_is_not_used(
    chain_parts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    optimize_partitions(chain_parts)
    assert load_partition(chain_parts, 2, Role.EDGE, share_weights=True).optimized
    assert not load_partition(chain_parts, 2, Role.EDGE).optimized  # the profiler's way

    weights = chain_parts / "weights.bin"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # as re-partitioning does
    assert find_store(chain_parts) is None
    assert not load_partition(chain_parts, 2, Role.EDGE, share_weights=True).optimized
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert find_store(chain_parts) is not None

    monkeypatch.setattr(models.optimized, "machine_tag", lambda: "another-machine")
    assert not load_partition(chain_parts, 2, Role.EDGE, share_weights=True).optimized


def test_optimizing_again_keeps_a_current_store(chain_parts: Path) -> None:
    first = optimize_partitions(chain_parts)
    written = (first.path / STORE_FILE).stat().st_mtime_ns
    again = optimize_partitions(chain_parts)
    assert again == first
    assert (again.path / STORE_FILE).stat().st_mtime_ns == written
    assert not list(first.path.parent.glob(".*")), "no work directory left behind"


def _mapped_files() -> set[str]:
    lines = Path("/proc/self/maps").read_text().splitlines()
    return {line.split(maxsplit=5)[-1] for line in lines if len(line.split()) == 6}


def test_a_partition_service_looks_stores_up_without_importing_onnx() -> None:
    """Only prepare writes a store; importing onnx would cost every partition service
    seconds of start-up on a slow edge CPU."""
    check = "import sys, models.runtime; print(sorted(m for m in sys.modules if m == 'onnx'))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
