"""What the launcher hands each partition service it starts."""

from __future__ import annotations

import pytest

from controller.backends.base import ServiceHandle
from controller.backends.local import ServiceKind
from controller.pipelines import pipelines_from_services
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


def test_a_coded_pipeline_tells_its_edge_the_codec_and_is_recognised_when_adopted() -> None:
    launcher = spec_launcher()
    labels = {"neukonfig.pipeline": "p", "neukonfig.cut": "2", "neukonfig.codec": "int8+zstd"}
    edge = launcher._spec(ServiceKind.EDGE_PARTITION, "p", 2, labels)
    cloud = launcher._spec(ServiceKind.CLOUD_PARTITION, "p", 2, labels)
    assert edge.settings["codec"] == "int8+zstd"
    assert "codec" not in cloud.settings, "the cloud decodes whatever a frame names"
    handles = [
        ServiceHandle(spec, f"http://127.0.0.1:{n}", str(n)) for n, spec in enumerate([edge, cloud])
    ]
    (adopted,) = pipelines_from_services(handles).values()
    assert (adopted.cut, adopted.codec) == (2, "int8+zstd")
    assert adopted.describe()["codec"] == "int8+zstd"


def test_a_plain_pipeline_sets_no_codec() -> None:
    edge = spec_launcher()._spec(ServiceKind.EDGE_PARTITION, "p", 2, {"neukonfig.codec": "none"})
    assert "codec" not in edge.settings
