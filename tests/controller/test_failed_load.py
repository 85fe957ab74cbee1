"""A partition whose model fails to load is refused at once with the reason, by any
backend: the ready answer names the failure, so no start waits out its timeout."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from controller.backends.base import ServiceSpec, ServiceStartError
from controller.backends.hosted import HostedBackend
from controller.backends.local import ServiceKind
from controller.backends.process import ProcessBackend
from neukonfig.manifest import read_manifest

START_TIMEOUT_S = 90.0  # what a start may take on a loaded machine; a refusal takes far less


@pytest.fixture
def broken_parts(tiny_parts: Path, tmp_path: Path) -> Path:
    """tiny's partitions with cut 3's head cut short: the service starts, its load fails."""
    parts = tmp_path / "parts"
    shutil.copytree(tiny_parts, parts)
    head = read_manifest(parts).cuts[3].head
    assert head is not None
    (parts / head).write_bytes(b"not an onnx graph")
    return parts


@pytest.mark.parametrize("hosted", [False, True], ids=["process", "hosted"])
def test_a_failed_load_is_refused_at_once_with_its_reason(
    broken_parts: Path, tmp_path: Path, hosted: bool
) -> None:
    backend = ProcessBackend(state_dir=tmp_path / "state")
    if hosted:
        backend = HostedBackend(backend, model="tiny", start_timeout_s=START_TIMEOUT_S)
    spec = ServiceSpec(
        ServiceKind.EDGE_PARTITION,
        "tiny-cut3-broken-edge",
        {"partition_dir": str(broken_parts), "cut": "3"},
    )

    async def start() -> tuple[str, float]:
        handle = await backend.start(spec)
        began = time.monotonic()
        try:
            await backend.wait_ready(handle, timeout=START_TIMEOUT_S)
        except ServiceStartError as error:
            return error.message, time.monotonic() - began
        finally:
            await backend.stop(handle)
            await backend.close()
        raise AssertionError("a broken head was reported ready")

    message, waited_s = asyncio.run(start())
    assert "failed to load" in message, message
    assert waited_s < START_TIMEOUT_S / 3, f"waited {waited_s:.1f} s for a failed load"
