"""What the docker compose tests share: waits, and the client that checks every answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from neukonfig.manifest import read_manifest
from testbed.probe_client import ProbeCase, ProbeClient, reference_cases


class ControllerApi:
    """The controller's read-only API, for a stack under test whose ``controller`` is the
    controller's base URL."""

    controller: str

    def state(self) -> dict[str, object]:
        return httpx.get(f"{self.controller}/v1/state", timeout=5).json()

    def switches(self) -> list[dict[str, object]]:
        return httpx.get(f"{self.controller}/v1/history", timeout=5).json()["switches"]


def wait_serving(
    gateway: str, state: Callable[[], dict[str, object]], logs: Callable[[], str], timeout: float
) -> None:
    """Until the gateway is ready and the controller has an active cut; else fail with
    the stack's logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{gateway}/v2/health/ready", timeout=2).status_code == 200
            if ready and state()["current_cut"] is not None:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"the stack did not serve within {timeout:g} s:\n{logs()}")


def volume_cases(data: Path, model: str) -> list[ProbeCase]:
    """Seeded inputs and the original model's answers, from a data volume's own model file
    (``data``: the volume's mount point on this host)."""
    manifest = read_manifest(data / "partitions")
    return reference_cases(data / f"{model}.onnx", manifest.model.inputs[0])


def probe(gateway: str, model: str, cases: list[ProbeCase], rate: float) -> ProbeClient:
    """The open-loop client, on the gateway's OIP infer path."""
    url = f"{gateway}/v2/models/{model}/infer"
    return ProbeClient(url=url, input_name="input", cases=cases, rate_per_s=rate)


def wait_for_state(
    state: Callable[[], dict[str, object]],
    wanted: Callable[[dict[str, object]], bool],
    what: str,
    timeout: float,
) -> int:
    """The active cut, once the controller's state is ``wanted`` and no switch is under
    way; else fail, naming ``what`` and the last state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = state()
        if wanted(current) and not current["switching"]:
            return int(current["current_cut"])  # type: ignore[call-overload]
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout:g} s: {state()}")


def wait_for_cut(
    state: Callable[[], dict[str, object]],
    wanted: Callable[[int | None], bool],
    what: str,
    timeout: float,
) -> int:
    """``wait_for_state`` on the active cut alone."""
    return wait_for_state(state, lambda current: wanted(current["current_cut"]), what, timeout)  # type: ignore[arg-type]
