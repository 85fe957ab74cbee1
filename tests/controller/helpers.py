"""What the controller tests share: settings for the slow-edge tiny model, a request
body, and waits on the controller's own state (never fixed sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from controller.backends.local import LocalService, ServiceKind
from controller.core import Controller
from controller.history import Outcome, SwitchRecord
from controller.pipelines import DirectLink, PipelineLauncher
from controller.settings import ControllerSettings
from models.prepare import Prepared
from testbed.probe_client import binary_infer_body

# Bounds for waits: generous enough for a loaded 2-core machine (a pipeline start
# there can take 10-20 s), short enough that a real hang fails the test.
SWITCH_TIMEOUT_S = 90.0


def settings_for(
    prepared: Prepared, gateway: LocalService, token: str, state_dir: Path, **extra: object
) -> ControllerSettings:
    values: dict[str, object] = {
        "partition_dir": prepared.partitions,
        "model_name": "tiny",
        "gateway_url": gateway.url,
        "admin_token": token,
        "edge_profile": prepared.edge_profile,
        "cloud_profile": prepared.cloud_profile,
        "state_dir": state_dir,
        "initial_bandwidth": "50mbit",
        "dwell_s": 0.5,
        "start_timeout_s": 60,
        "stop_services_on_exit": True,
    }
    return ControllerSettings(**{**values, **extra})


def controller_process_settings(
    prepared: Prepared, gateway_url: str, token: str, state: Path, **more: str
) -> dict[str, str]:
    """Settings of a ``python -m controller`` process on the slow-edge tiny model."""
    return {
        "partition_dir": str(prepared.partitions),
        "model_name": "tiny",
        "gateway_url": gateway_url,
        "admin_token": token,
        "edge_profile": str(prepared.edge_profile),
        "cloud_profile": str(prepared.cloud_profile),
        "state_dir": str(state),
        "strategy": "switch_standby",
        "auto": "false",
        "max_standby": "1",
        **more,
    }


@contextlib.contextmanager
def gateway_for(prepared: Prepared, token: str, log: Path) -> Iterator[LocalService]:
    """A gateway process for ``prepared``'s tiny model, stopped on the way out."""
    service = LocalService(
        ServiceKind.GATEWAY,
        {"partition_dir": str(prepared.partitions), "model_name": "tiny", "admin_token": token},
        log,
    ).start()
    try:
        yield service.wait_ready()
    finally:
        service.stop()


def request_body() -> tuple[bytes, dict[str, str]]:
    batch = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    return binary_infer_body("input", batch)


async def wait_until(condition: Callable[[], object], *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return bool(condition())


async def wait_for_switches(
    controller: Controller, count: int, *, timeout: float = SWITCH_TIMEOUT_S
) -> list[SwitchRecord]:
    """Wait until ``count`` switches have *finished* (not merely begun), and return them."""

    def finished() -> bool:
        history = list(controller.history)
        return len(history) >= count and all(r.outcome is not Outcome.IN_PROGRESS for r in history)

    done = await wait_until(finished, timeout=timeout)
    assert done, f"{count} finished switches within {timeout:g} s: {controller.state()}"
    return list(controller.history)


def metric_samples(exposition: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of ``name`` in a Prometheus text exposition, by its sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def switch_counts(exposition: str) -> dict[str, tuple[float, float]]:
    """Per strategy: (switches counted, switch-downtime observations), nonzero only."""
    switches = metric_samples(exposition, "neukonfig_switches_total")
    observed = metric_samples(exposition, "neukonfig_switch_downtime_seconds_count")
    counts = {}
    for labels in {**switches, **observed}:
        strategy = dict(labels)["strategy"]
        pair = (switches.get(labels, 0.0), observed.get(labels, 0.0))
        if any(pair):
            counts[strategy] = pair
    return counts


def spec_launcher(**overrides: object) -> PipelineLauncher:
    """A launcher only for its spec building, never started (no backend)."""
    fields: dict[str, object] = {
        "backend": None,
        "link": DirectLink(),  # partitions reach their cloud directly
        "partition_dir": Path("/data/partitions"),
        "model": "mobilenetv2",
        "last_cut": 20,
        "edge_threads": 1,
        "cloud_threads": None,
        "start_timeout_s": 60.0,
    }
    return PipelineLauncher(**{**fields, **overrides})  # type: ignore[arg-type]
