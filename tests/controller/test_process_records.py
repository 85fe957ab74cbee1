"""The process backend's records: a restarted controller adopts exactly its own services,
and stops those a crash left half-recorded, on real processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from controller.backends.base import ServiceSpec, spec_record
from controller.backends.local import MARKER_VARIABLE, ServiceKind
from controller.backends.process import ProcessBackend
from neukonfig.files import TEMPORARY_PREFIX

SPEC = ServiceSpec(ServiceKind.EDGE_PARTITION, "tiny-cut3-0a1b2c3d-edge", {"cut": "3"})


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = (tmp_path / "state").resolve()
    path.mkdir()
    return path


@pytest.fixture
def service_for(state: Path) -> Iterator:
    """Start a long-lived process carrying a record's marker, as the backend's services do."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        marker = str(state / f"{name}.json")
        process = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"],
            env={**os.environ, MARKER_VARIABLE: marker},
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)


def discover(state: Path) -> list:
    async def run() -> list:
        backend = ProcessBackend(state_dir=state)
        try:
            return await backend.discover()
        finally:
            await backend.close()

    return asyncio.run(run())


def full_record(pid: int) -> dict:
    process = psutil.Process(pid)
    return {
        "pid": pid,
        "create_time": process.create_time(),
        "url": "http://127.0.0.1:1",
        **spec_record(SPEC),
    }


def running(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is None


def test_a_recorded_service_of_ours_is_adopted(state, service_for):
    process = service_for(SPEC.name)
    (state / f"{SPEC.name}.json").write_text(json.dumps(full_record(process.pid)))
    [handle] = discover(state)
    assert handle.backend_id == str(process.pid)
    assert handle.spec == SPEC
    assert running(process)


def test_a_record_cut_short_mid_write_stops_its_service(state, service_for):
    """A controller killed while rewriting a record leaves half a file: the process it
    started is still found, by its marker, and stopped."""
    process = service_for(SPEC.name)
    whole = json.dumps(full_record(process.pid))
    (state / f"{SPEC.name}.json").write_text(whole[: len(whole) // 2])
    assert discover(state) == []
    assert process.wait(timeout=30) is not None
    assert not (state / f"{SPEC.name}.json").exists()


def test_a_record_of_intent_stops_the_service_started_for_it(state, service_for):
    process = service_for(SPEC.name)
    (state / f"{SPEC.name}.json").write_text(json.dumps({"pid": None, **spec_record(SPEC)}))
    assert discover(state) == []
    assert process.wait(timeout=30) is not None


def test_a_pid_now_a_strangers_is_neither_adopted_nor_stopped(state):
    """A record whose pid (and start time) is a process that does not carry the marker:
    this test's own process stands in for the stranger."""
    (state / f"{SPEC.name}.json").write_text(json.dumps(full_record(os.getpid())))
    assert discover(state) == []
    assert not (state / f"{SPEC.name}.json").exists()


def test_a_temporary_file_left_by_a_crash_is_removed(state):
    leftover = state / f"{TEMPORARY_PREFIX}abc123"
    leftover.write_text('{"pid": 1')
    assert discover(state) == []
    assert not leftover.exists()
