"""A tiny model whose best cut really moves with bandwidth, a gateway, a shaped link."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.backends.local import LocalService
from models.prepare import Prepared
from testbed.faults import HIGH
from testbed.faults import slow_edge_tiny as slow_edge_tiny_model
from testbed.shaped_link import ShapedLink
from tests.controller.helpers import gateway_for


@pytest.fixture(scope="session")
def slow_edge_tiny(zoo_file, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """The tiny model, partitioned, with the slow-edge head timings as its profiles."""
    return slow_edge_tiny_model(zoo_file("tiny"), tmp_path_factory.mktemp("slow-edge-tiny"))


@pytest.fixture
def token() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def gateway(slow_edge_tiny: Prepared, token: str, tmp_path: Path) -> Iterator[LocalService]:
    with gateway_for(slow_edge_tiny, token, tmp_path / "gateway.log") as service:
        yield service


@pytest.fixture
def link() -> Iterator[ShapedLink]:
    shaped = ShapedLink(rate_bps=HIGH).start_in_thread()
    try:
        yield shaped
    finally:
        shaped.stop()
