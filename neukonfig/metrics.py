"""Prometheus metrics, named once for every service (prefix ``neukonfig_``).

Each app gets its own ``CollectorRegistry`` so that several apps can live in one
test process; a service exposes it at ``/metrics``. Families a service does not use
simply have no samples there.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "Stage"]

# 100 µs (a pointer flip, loopback hop) up to 30 s (a cold VGG16 start over a slow link).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Stage(str, enum.Enum):
    EDGE_COMPUTE = "edge_compute"
    TRANSFER = "transfer"
    CLOUD_COMPUTE = "cloud_compute"
    END_TO_END = "end_to_end"


@dataclass
class Metrics:
    service: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "neukonfig_requests", "Inference requests by outcome", ["service", "status"], registry=r
        )
        self.stage_latency = Histogram(
            "neukonfig_stage_latency_seconds",
            "Latency of each stage of an inference request",
            ["service", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "neukonfig_in_flight_requests",
            "Requests in flight per pipeline",
            ["pipeline"],
            registry=r,
        )
        self.current_cut = Gauge(
            "neukonfig_current_cut", "Cut index of the active pipeline", ["model"], registry=r
        )
        self.switches = Counter(
            "neukonfig_switches", "Repartitioning switches by strategy", ["strategy"], registry=r
        )
        self.switch_downtime = Histogram(
            "neukonfig_switch_downtime_seconds",
            "Admission unavailability per switch: how long the routing pointer was empty "
            "(0 when it never was; the gateway's start is not a switch)",
            ["strategy"],
            buckets=(0.0, 1e-6, 1e-5, *LATENCY_BUCKETS),
            registry=r,
        )
        # labels() costs 0.7 µs (a lock, a tuple, a dict lookup) and the gateway makes five
        # such calls a request. Children are cached on first use, so a stage or status that
        # never happened still has no sample.
        self._stage_children: dict[Stage, Histogram] = {}
        self._status_children: dict[int | str, Counter] = {}

    # Families without labels always have a sample, so these are registered on first use:
    # a gateway exports no bandwidth estimate and a cloud partition no transfer bytes.
    @functools.cached_property
    def bandwidth(self) -> Gauge:
        return Gauge(
            "neukonfig_bandwidth_estimate_bits_per_second",
            "Current edge-to-cloud bandwidth estimate",
            registry=self.registry,
        )

    @functools.cached_property
    def transfer_bytes(self) -> Counter:
        return Counter(
            "neukonfig_transfer_bytes",
            "Bytes sent across the edge-cloud link",
            registry=self.registry,
        )

    @functools.cached_property
    def fallbacks(self) -> Counter:
        return Counter(
            "neukonfig_fallbacks",
            "Requests the edge answered with its own copy of the tail, by reason: "
            "cloud-down (the cloud gave no usable answer), cloud-late (far later than usual: "
            "a hung cloud or a collapsed link) or link-backlog (finishing on the edge was "
            "sooner than through the backed-up link)",
            ["reason"],
            registry=self.registry,
        )

    def start_switch_series(self, strategies: list[str]) -> None:
        """Zero series for every strategy, so that the first switch of each is an increase
        Prometheus can see (a series' first sample is not)."""
        for strategy in strategies:
            self.switches.labels(strategy)
            self.switch_downtime.labels(strategy)

    def observe_stage(self, stage: Stage, seconds: float) -> None:
        child = self._stage_children.get(stage)
        if child is None:
            child = self.stage_latency.labels(self.service, stage.value)
            self._stage_children[stage] = child
        child.observe(seconds)

    def count_request(self, status: int | str) -> None:
        child = self._status_children.get(status)
        if child is None:
            child = self.requests.labels(self.service, str(status))
            self._status_children[status] = child
        child.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
