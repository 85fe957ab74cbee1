"""A real stack for the monitoring tests: ``neukonfig up --model tiny`` as a user runs it,
with its own demo traffic, stopped with Ctrl-C afterwards."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from controller.backends.local import free_port

READY_LINE = "Ctrl-C stops everything"
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Stack:
    gateway: str  # host:port, as Prometheus scrapes it
    controller: str
    workdir: Path

    @property
    def gateway_url(self) -> str:
        return f"http://{self.gateway}"

    @property
    def controller_url(self) -> str:
        return f"http://{self.controller}"

    @property
    def token(self) -> str:
        return (self.workdir / "admin-token").read_text().strip()


def _wait_for_ready_line(up: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if READY_LINE in text:
            return
        if up.poll() is not None:
            raise RuntimeError(f"neukonfig up exited with {up.returncode}:\n{text}")
        time.sleep(0.2)
    raise RuntimeError(f"neukonfig up not serving after {START_TIMEOUT_S:g} s:\n{text}")


def _stop(up: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a user stops it; then kill, by PID, whatever it left behind."""
    if up.poll() is not None:
        return
    children = psutil.Process(up.pid).children(recursive=True)
    up.send_signal(signal.SIGINT)
    try:
        up.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        up.kill()
        up.wait(timeout=STOP_TIMEOUT_S)
    for child in children:
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            child.kill()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Gateway, partitions (switch_standby: an active and a standby pipeline), probe target
    and controller on loopback, with 10 requests/s of demo traffic. With an edge 30 times
    slower and loopback's gigabits the planner keeps the input cut 0, which has a cloud
    partition: then every stage (edge compute, transfer, cloud compute) has samples."""
    workdir = tmp_path_factory.mktemp("monitoring") / "up"
    gateway_port, controller_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "cli", "up", "--model", "tiny", "--workdir", str(workdir),
        "--gateway-port", str(gateway_port), "--controller-port", str(controller_port),
        "--profile-repeats", "1", "--edge-slowdown", "30", "--initial-bandwidth", "1gbit",
        "--traffic", "10",
    ]  # fmt: skip
    log = workdir.parent / "up.log"
    with log.open("wb") as out:  # a file, not a pipe: nobody reads its status lines
        up = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_ready_line(up, log)
        yield Stack(f"127.0.0.1:{gateway_port}", f"127.0.0.1:{controller_port}", workdir)
    finally:
        _stop(up)
