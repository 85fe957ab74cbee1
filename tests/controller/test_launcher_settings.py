"""What the launcher hands each partition service it starts."""

from __future__ import annotations

import pytest

from controller.backends.local import ServiceKind
from tests.controller.helpers import spec_launcher


def test_edge_partitions_get_the_queue_bound_the_controller_is_given() -> None:
    given = spec_launcher(edge_max_queue_wait_s=6.0)
    edge = given._spec(ServiceKind.EDGE_PARTITION, "p", 2, {})
    cloud = given._spec(ServiceKind.CLOUD_PARTITION, "p", 2, {})
    assert float(edge.settings["max_queue_wait_s"]) == pytest.approx(6.0)
    assert "max_queue_wait_s" not in cloud.settings


def test_without_a_queue_bound_the_edge_keeps_its_own() -> None:
    edge = spec_launcher()._spec(ServiceKind.EDGE_PARTITION, "p", 2, {})
    assert "max_queue_wait_s" not in edge.settings
