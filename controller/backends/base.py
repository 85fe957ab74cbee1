"""The one small interface every runtime backend implements (process, docker, kubernetes).

Contract:
- ``start(spec)`` returns at once with a handle; the service may not be ready yet.
- ``wait_ready(handle, timeout=)`` returns when the service's readiness check passes,
  and raises ``ServiceStartError`` (with the service's last log lines) if it exits or
  the timeout passes. A failed start must be followed by ``stop``.
- ``stop(handle)`` is idempotent and leaves nothing behind.
- ``discover()`` lists the services this backend started, including those started by
  an earlier controller process, so a restarted controller can adopt them.
- ``memory_bytes(handle)`` is the service's resident memory, for memory budgets.
Services carry labels (model, cut, role, pipeline) so they can be found again.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from controller.backends.local import ServiceKind, ServiceStartError

__all__ = [
    "Backend",
    "ServiceHandle",
    "ServiceKind",
    "ServiceSpec",
    "ServiceStartError",
    "ServiceState",
]


class ServiceState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ServiceSpec:
    kind: ServiceKind
    name: str  # unique identity, e.g. "mobilenetv2-cut12-3fa9c0de-edge"
    settings: dict[str, str]  # service settings without the NEUKONFIG_<KIND>_ prefix
    labels: dict[str, str] = field(default_factory=dict)


# Settings that must not be written where others can read them back (labels,
# annotations, state files); the service still receives them in its environment.
SECRET_SETTINGS = frozenset({"internal_token"})


def spec_record(spec: ServiceSpec) -> dict[str, object]:
    """What a backend stores to find a service again: the spec, secrets left out."""
    settings = {k: v for k, v in spec.settings.items() if k not in SECRET_SETTINGS}
    return {"kind": spec.kind.value, "name": spec.name, "settings": settings, "labels": spec.labels}


def spec_from_record(record: dict[str, object]) -> ServiceSpec:
    return ServiceSpec(
        ServiceKind(record["kind"]),
        str(record["name"]),
        dict(record["settings"]),  # type: ignore[call-overload]
        dict(record["labels"]),  # type: ignore[call-overload]
    )


@dataclass
class ServiceHandle:
    spec: ServiceSpec
    url: str
    backend_id: str  # pid, container id or deployment name
    state: ServiceState = ServiceState.STARTING


class Backend(abc.ABC):
    name: str

    @abc.abstractmethod
    async def start(self, spec: ServiceSpec) -> ServiceHandle: ...

    @abc.abstractmethod
    async def wait_ready(self, handle: ServiceHandle, *, timeout: float) -> None: ...

    @abc.abstractmethod
    async def stop(self, handle: ServiceHandle) -> None: ...

    @abc.abstractmethod
    async def discover(self) -> list[ServiceHandle]: ...

    @abc.abstractmethod
    async def memory_bytes(self, handle: ServiceHandle) -> int | None: ...

    async def added_bytes(self, kind: ServiceKind) -> int | None:
        """What one more service of ``kind`` would add, where the backend knows better
        than the running ones' mean (None: it does not)."""
        return None

    async def close(self) -> None:
        """Release the backend's own resources; services keep running."""
        return None


async def poll_until_ready(
    http: httpx.AsyncClient,
    handle: ServiceHandle,
    *,
    timeout: float,
    problem: Callable[[], str | None],
    log_tail: Callable[[], str],
    poll_s: float = 0.05,
) -> None:
    """Poll the service's ready path until it answers 200; fail at once when ``problem()``
    (run in a thread: it may ask an engine) says it never will, or the ready answer says
    its load failed, or at the timeout."""
    deadline = time.monotonic() + timeout
    ready_url = handle.url + handle.spec.kind.ready_path
    while time.monotonic() < deadline:
        reason = await asyncio.to_thread(problem)
        if not reason:
            try:
                answer = await http.get(ready_url)
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code == 200:
                handle.state = ServiceState.READY
                return
            reason = _load_failure(answer)
        if reason:
            handle.state = ServiceState.FAILED
            raise ServiceStartError(f"{handle.spec.name} {reason}:\n{log_tail()}")
        await asyncio.sleep(poll_s)
    handle.state = ServiceState.FAILED
    raise ServiceStartError(f"{handle.spec.name} not ready after {timeout:g} s:\n{log_tail()}")


def _load_failure(answer: httpx.Response | None) -> str | None:
    """A partition's ready answer after its load failed for good (``{"state": "failed",
    "error": ...}``, ``serving.partition_host``) as a reason, else None."""
    try:
        body = answer.json() if answer is not None else None
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("state") == "failed" and body.get("error"):
        return f"failed to load: {body['error']}"
    return None
