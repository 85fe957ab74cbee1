"""What the launcher hands each partition service it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.backends.local import ServiceKind
from controller.pipelines import DirectLink, PipelineLauncher


def launcher(**extra: object) -> PipelineLauncher:
    return PipelineLauncher(
        backend=None,  # type: ignore[arg-type]  # specs only: nothing is started
        link=DirectLink(),
        partition_dir=Path("parts"),
        model="tiny",
        last_cut=13,
        edge_threads=1,
        cloud_threads=None,
        start_timeout_s=5.0,
        **extra,  # type: ignore[arg-type]
    )


def test_edge_partitions_get_the_queue_bound_the_controller_is_given() -> None:
    given = launcher(edge_max_queue_wait_s=6.0)
    edge = given._spec(ServiceKind.EDGE_PARTITION, "p", 2, {})
    cloud = given._spec(ServiceKind.CLOUD_PARTITION, "p", 2, {})
    assert float(edge.settings["max_queue_wait_s"]) == pytest.approx(6.0)
    assert "max_queue_wait_s" not in cloud.settings


def test_without_a_queue_bound_the_edge_keeps_its_own() -> None:
    edge = launcher()._spec(ServiceKind.EDGE_PARTITION, "p", 2, {})
    assert "max_queue_wait_s" not in edge.settings
