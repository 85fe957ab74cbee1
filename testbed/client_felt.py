"""What clients felt, computed from the probe client's records alone.

Pure functions over ``RequestRecord`` lists, shared by the tests (which assert bounds)
and the benchmarks (which report). Times are seconds on the probe client's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from testbed.probe_client import RequestRecord

# Requests that end this close before a flip, or start this close after, are neither
# steady nor across it.
FLIP_MARGIN_S = 0.1


@dataclass(frozen=True)
class FlipCost:
    """Latency of the requests in flight across each flip, against steady requests."""

    steady_median_s: float
    steady_p99_s: float
    # Per flip: the slowest request in flight at any moment of the flip (None: none was).
    slowest_across_s: list[float | None]

    @property
    def median_excess_s(self) -> float:
        """Over the flips, the median of (slowest request across it - steady median):
        robust to one noisy flip, and a stall of the gateway at every flip shows in full."""
        across = [s for s in self.slowest_across_s if s is not None]
        if not across:
            return 0.0
        return float(np.median(across)) - self.steady_median_s


def in_flight_during(record: RequestRecord, start_s: float, end_s: float) -> bool:
    return record.sent_s <= end_s and record.done_s >= start_s


def flip_cost(records: Sequence[RequestRecord], flips: Sequence[tuple[float, float]]) -> FlipCost:
    """``flips``: (start, end) of each flip on the client's clock, e.g. the admin call."""
    ok = [r for r in records if r.ok]
    steady = [
        r.latency_s
        for r in ok
        if not any(in_flight_during(r, a - FLIP_MARGIN_S, b + FLIP_MARGIN_S) for a, b in flips)
    ]
    if not steady:
        raise ValueError("no steady request between the flips: flip less often")
    slowest: list[float | None] = []
    for start, end in flips:
        across = [r.latency_s for r in ok if in_flight_during(r, start, end)]
        slowest.append(max(across) if across else None)
    return FlipCost(
        steady_median_s=float(np.median(steady)),
        steady_p99_s=float(np.percentile(steady, 99)),
        slowest_across_s=slowest,
    )
