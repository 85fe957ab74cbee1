"""A tiny model whose best cut really moves with bandwidth, a gateway, a shaped link."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.backends.local import LocalService, ServiceKind
from models.partition import partition_model
from models.profiler import profile_partitions
from models.runtime import Role
from neukonfig.profiles import TimingStats, write_profile
from testbed.shaped_link import ShapedLink

# tiny computes in microseconds, so on its own the best cut would never move. The edge
# profile below stands in for a slow edge: every head costs SLOW_HEAD_S, the all-edge
# cut more. Then at 50 mbit shipping the 12 KiB input (cut 0, ~2 ms) wins, and at
# 2 mbit (49 ms for the input) the 256-byte cut 11 after the pooling wins (cut 12,
# just as small, gets a slower head so that the answer is unique).
SLOW_HEAD_S = 0.010
ALL_EDGE_S = 0.030
HIGH, LOW = 50e6, 2e6
CUT_AT_HIGH, CUT_AT_LOW = 0, 11


def _timing(seconds: float) -> TimingStats:
    return TimingStats(median_s=seconds, p90_s=seconds, min_s=seconds, max_s=seconds, samples=2)


@pytest.fixture(scope="session")
def slow_edge_tiny(zoo_file, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(partition dir, edge profile, cloud profile) with the slow-edge head timings."""
    work = tmp_path_factory.mktemp("slow-edge-tiny")
    parts = work / "parts"
    manifest = partition_model(zoo_file("tiny"), parts, name="tiny")
    last = manifest.num_cuts - 1
    measured = profile_partitions(
        parts, roles=[Role.EDGE, Role.CLOUD], threads=1, warmup=1, repeats=2
    )
    cuts = []
    for cut in measured.cuts:
        head = cut.head
        if head is not None and head.compute is not None:
            slow = ALL_EDGE_S if cut.index == last else SLOW_HEAD_S + 0.001 * (cut.index > 11)
            head = head.model_copy(update={"compute": _timing(slow)})
        cuts.append(cut.model_copy(update={"head": head}))
    profile = measured.model_copy(update={"cuts": cuts})
    write_profile(work / "edge.json", profile)
    write_profile(work / "cloud.json", profile)
    return parts, work / "edge.json", work / "cloud.json"


@pytest.fixture
def token() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def gateway(slow_edge_tiny, token: str, tmp_path: Path) -> Iterator[LocalService]:
    parts, _, _ = slow_edge_tiny
    service = LocalService(
        ServiceKind.GATEWAY,
        {"partition_dir": str(parts), "model_name": "tiny", "admin_token": token},
        tmp_path / "gateway.log",
    ).start()
    try:
        yield service.wait_ready()
    finally:
        service.stop()


@pytest.fixture
def link() -> Iterator[ShapedLink]:
    shaped = ShapedLink(rate_bps=HIGH).start_in_thread()
    try:
        yield shaped
    finally:
        shaped.stop()
