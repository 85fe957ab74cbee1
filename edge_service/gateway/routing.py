"""The routing pointer and the pipelines it can point at.

Everything here runs on the gateway's one event loop. A request reads the pointer
and enters that pipeline with no ``await`` in between, so it is bound to exactly
one pipeline; a switch is one assignment, so no request ever sees half a switch.
A retired pipeline takes no new requests and is closed once its in-flight
requests finish (or the drain bound passes).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
import uuid
from dataclasses import dataclass, field

from neukonfig.errors import ConflictError, NeukonfigError, NotReadyError, OverloadedError
from neukonfig.metrics import Metrics
from neukonfig.peer_client import PeerClient

PAUSE_STRATEGY = "pause_resume"


class PipelineState(str, enum.Enum):
    STANDBY = "standby"  # registered and ready, not receiving requests
    ACTIVE = "active"  # the routing pointer's target
    DRAINING = "draining"  # retired, finishing in-flight requests
    RETIRED = "retired"  # drained (or timed out) and closed


class DrainOutcome(str, enum.Enum):
    DRAINED = "drained"
    TIMED_OUT = "timed_out"


class UnknownPipelineError(NeukonfigError):
    status_code = 404


@dataclass(eq=False)
class Pipeline:
    """An edge partition + cloud partition pair for one cut, reached through ``client``."""

    id: str
    model: str
    cut: int
    edge_url: str
    cloud_url: str | None
    client: PeerClient
    codec: str = "none"  # what its edge codes the crossing tensor with
    state: PipelineState = PipelineState.STANDBY
    in_flight: int = 0
    served: int = 0
    registered_unix: float = field(default_factory=time.time)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        self.served += 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> DrainOutcome:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:  # not the builtin on Python 3.10
            return DrainOutcome.TIMED_OUT
        return DrainOutcome.DRAINED

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "model": self.model,
            "cut": self.cut,
            "codec": self.codec,
            "edge_url": self.edge_url,
            "cloud_url": self.cloud_url,
            "state": self.state.value,
            "in_flight": self.in_flight,
            "served": self.served,
        }


@dataclass(frozen=True)
class SwitchResult:
    previous: str | None
    active: str | None
    strategy: str
    # Admission unavailability: how long the pointer was empty before this flip, so that
    # an arriving request could not be admitted at once. Exactly 0.0 when it never was;
    # the time of the assignment itself is not unavailability (DESIGN.md, downtime).
    unavailable_seconds: float


class RoutingTable:
    """Owns the pipelines and the pointer. The controller changes it only through here."""

    def __init__(self, metrics: Metrics, *, model: str) -> None:
        self.metrics = metrics
        self.model = model
        self.pipelines: dict[str, Pipeline] = {}
        self.active: Pipeline | None = None
        self._pointer_set = asyncio.Event()
        # Set while paused after serving; the gateway's start (no pipeline yet) is not a
        # pause and not a switch.
        self._paused_since: float | None = None
        self._has_served = False
        self.unavailable_seconds_total = 0.0

    def add(self, pipeline: Pipeline) -> Pipeline:
        if pipeline.id in self.pipelines:
            raise ConflictError(f"pipeline {pipeline.id!r} is already registered")
        self.pipelines[pipeline.id] = pipeline
        return pipeline

    def get(self, pipeline_id: str) -> Pipeline:
        try:
            return self.pipelines[pipeline_id]
        except KeyError:
            raise UnknownPipelineError(f"no pipeline {pipeline_id!r} is registered") from None

    def switch(self, pipeline_id: str | None, *, strategy: str) -> SwitchResult:
        """Point at ``pipeline_id`` (None pauses serving). One assignment, no await."""
        target = self.get(pipeline_id) if pipeline_id is not None else None
        if target is not None and target.state not in (PipelineState.STANDBY, PipelineState.ACTIVE):
            raise ConflictError(f"pipeline {target.id!r} is {target.state.value}")
        previous = self.active
        self.active = target
        unavailable = self._account_unavailability(target, time.perf_counter())
        if previous is not None and previous is not target:
            previous.state = PipelineState.STANDBY
        if target is None:
            self._pointer_set.clear()
        else:
            target.state = PipelineState.ACTIVE
            self._pointer_set.set()
            self.metrics.current_cut.labels(self.model).set(target.cut)
            if self._has_served:  # the first pointer starts serving: it is not a switch
                self.metrics.switches.labels(strategy).inc()
                self.metrics.switch_downtime.labels(strategy).observe(unavailable)
            self._has_served = True
        return SwitchResult(
            previous=previous.id if previous else None,
            active=target.id if target else None,
            strategy=strategy,
            unavailable_seconds=unavailable,
        )

    def _account_unavailability(self, target: Pipeline | None, now: float) -> float:
        if target is None:
            if self._paused_since is None and self._has_served:
                self._paused_since = now
            return 0.0
        if self._paused_since is None:
            return 0.0
        unavailable = now - self._paused_since
        self.unavailable_seconds_total += unavailable
        self._paused_since = None
        return unavailable

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self.pipelines.values())

    def admit(self, *, max_in_flight: int) -> None:
        """Refuse at once past the bound on requests in flight through this gateway."""
        if self.in_flight >= max_in_flight:
            raise OverloadedError(
                f"the gateway is overloaded: {self.in_flight} requests in flight, its bound "
                f"is {max_in_flight}",
                retry_after_s=1.0,
            )

    async def acquire(self, *, wait_timeout: float) -> Pipeline:
        """Bind a new request to the active pipeline, waiting (bounded) while paused."""
        if self.active is None:
            try:
                await asyncio.wait_for(self._pointer_set.wait(), wait_timeout)
            except asyncio.TimeoutError:  # not the builtin on Python 3.10
                raise NotReadyError(
                    f"no active pipeline for model {self.model!r} after {wait_timeout:g} s"
                ) from None
        pipeline = self.active
        if pipeline is None:  # paused again between the wake-up and now
            return await self.acquire(wait_timeout=wait_timeout)
        pipeline.enter()
        self.metrics.in_flight.labels(pipeline.id).set(pipeline.in_flight)
        return pipeline

    def acquire_other(self, failed: Pipeline) -> Pipeline | None:
        """For one retry of a request ``failed`` never answered: the active pipeline if the
        pointer has moved on, else a ready standby (any cut: it serves the same model), or
        None. Bound like ``acquire``'s, so a drain waits for it."""
        candidates = [self.active, *self.pipelines.values()]
        ready = (PipelineState.ACTIVE, PipelineState.STANDBY)
        other = next(
            (p for p in candidates if p is not None and p is not failed and p.state in ready),
            None,
        )
        if other is not None:
            other.enter()
            self.metrics.in_flight.labels(other.id).set(other.in_flight)
        return other

    def release(self, pipeline: Pipeline) -> None:
        pipeline.leave()
        self.metrics.in_flight.labels(pipeline.id).set(pipeline.in_flight)

    async def retire(self, pipeline_id: str, *, drain_timeout: float) -> dict[str, object]:
        """Stop routing to a non-active pipeline, wait for its in-flight requests, close it."""
        pipeline = self.get(pipeline_id)
        if pipeline is self.active:
            raise ConflictError(f"pipeline {pipeline_id!r} is active; switch away from it first")
        pipeline.state = PipelineState.DRAINING
        started = time.perf_counter()
        in_flight_at_start = pipeline.in_flight
        outcome = await pipeline.wait_idle(drain_timeout)
        left = pipeline.in_flight
        pipeline.state = PipelineState.RETIRED
        del self.pipelines[pipeline_id]
        with contextlib.suppress(KeyError):  # never served a request: no gauge child
            self.metrics.in_flight.remove(pipeline_id)
        await pipeline.client.aclose()
        return {
            "id": pipeline_id,
            "outcome": outcome.value,
            "in_flight_at_start": in_flight_at_start,
            "in_flight_left": left,
            "waited_seconds": time.perf_counter() - started,
        }

    def describe(self) -> dict[str, object]:
        return {
            "model": self.model,
            "active": self.active.id if self.active else None,
            "pipelines": [p.describe() for p in self.pipelines.values()],
            "unavailable_seconds_total": self.unavailable_seconds_total,
        }


def new_pipeline_id(cut: int) -> str:
    return f"cut{cut}-{uuid.uuid4().hex[:8]}"
