"""What clients felt, computed from the probe client's records alone.

Pure functions over ``RequestRecord`` lists, shared by the tests (which assert bounds)
and the benchmarks (which report). Times are seconds on the probe client's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from testbed.probe_client import RequestRecord

# What served a request: its cut, or CUT/CODEC when a codec crossed (RequestRecord.option).
Served = int | str | None

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


# -- per bandwidth change ----------------------------------------------------------------

REACTION_WINDOW_S = 10.0  # requests sent this long after a change are "the reaction"
SETTLE_SHARE = 0.5  # the settled cut serves the last half of the phase: its steady state
FIRST_ON_NEW = 20  # requests on a new pipeline whose latency shows cold starts


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def settled_cut(records: Sequence[RequestRecord], start_s: float, end_s: float) -> Served:
    """The cut (``RequestRecord.option``: with its codec, if one crossed) that answered
    most requests sent in the last half of [start, end)."""
    tail_start = start_s + (end_s - start_s) * (1 - SETTLE_SHARE)
    cuts = [r.option for r in records if r.ok and tail_start <= r.sent_s < end_s]
    if not cuts:
        return None
    return max(set(cuts), key=cuts.count)


def steady_latencies(
    records: Sequence[RequestRecord], cut: Served, start_s: float, end_s: float
) -> list[float]:
    """Latencies at ``cut`` in the last half of [start, end), after any reaction."""
    tail_start = start_s + (end_s - start_s) * (1 - SETTLE_SHARE)
    return [
        r.latency_s for r in records if r.ok and r.option == cut and tail_start <= r.sent_s < end_s
    ]


def change_reaction(
    records: Sequence[RequestRecord], change_s: float, phase_end_s: float, cut_before: Served
) -> dict[str, object]:
    """What one bandwidth change cost clients, DESIGN.md's measure 3.

    - ``to_right_cut_s``: from the change to the first *completed* request on the cut the
      phase settles on (0 when that cut was already serving: nothing had to move);
    - p99 and max of requests *sent* in the ``REACTION_WINDOW_S`` after the change,
      against the steady p99 of the settled cut;
    - excess request-seconds: latency above the settled cut's steady median, summed over
      every request sent in the phase (failures count with their time to fail).
    """
    cut = settled_cut(records, change_s, phase_end_s)
    steady = steady_latencies(records, cut, change_s, phase_end_s)
    steady_median, steady_p99 = _percentile(steady, 50), _percentile(steady, 99)
    window = [
        r for r in records if change_s <= r.sent_s < min(change_s + REACTION_WINDOW_S, phase_end_s)
    ]
    window_latency = [r.latency_s for r in window]
    first = next(
        (r.done_s for r in sorted(records, key=lambda r: r.done_s)
         if r.ok and r.option == cut and r.done_s >= change_s),
        None,
    )  # fmt: skip
    moved = cut != cut_before
    phase = [r for r in records if change_s <= r.sent_s < phase_end_s]
    excess = (
        sum(max(0.0, r.latency_s - steady_median) for r in phase)
        if steady_median is not None
        else None
    )
    p99 = _percentile(window_latency, 99)
    return {
        "change_s": change_s,
        "cut_before": cut_before,
        "settled_cut": cut,
        "moved": moved,
        "to_right_cut_s": _rounded((first - change_s) if moved and first is not None else 0.0)
        if cut is not None
        else None,
        "window_p99_s": _rounded(p99),
        "window_max_s": _rounded(max(window_latency, default=0.0)),
        "steady_p99_s": _rounded(steady_p99),
        "steady_median_s": _rounded(steady_median),
        "p99_over_steady": _rounded(p99 / steady_p99 if p99 and steady_p99 else None, 2),
        "excess_request_s": _rounded(excess, 3),
        "failed": sum(1 for r in phase if not r.ok),
    }


def reactions(
    records: Sequence[RequestRecord], schedule_s: Sequence[float], duration_s: float
) -> list[dict[str, object]]:
    """``change_reaction`` for every change of a schedule (its times after the first)."""
    out = []
    bounds = [*schedule_s, duration_s]
    cut_before = settled_cut(records, bounds[0], bounds[1]) if len(bounds) > 1 else None
    for index in range(1, len(bounds) - 1):
        reaction = change_reaction(records, bounds[index], bounds[index + 1], cut_before)
        out.append(reaction)
        cut_before = reaction["settled_cut"]  # type: ignore[assignment]
    return out


# -- per switch --------------------------------------------------------------------------


def switch_cost(
    records: Sequence[RequestRecord], flip_s: float, to_cut: Served, steady_median_s: float | None
) -> dict[str, object]:
    """The switch's own cost, apart from the link: the requests in flight across the flip
    and the first ``FIRST_ON_NEW`` on the new cut, against its steady median."""
    across = [r.latency_s for r in records if r.ok and r.sent_s <= flip_s <= r.done_s]
    first_new = [
        r.latency_s for r in records if r.ok and r.option == to_cut and r.sent_s >= flip_s
    ][:FIRST_ON_NEW]
    return {
        "flip_s": _rounded(flip_s, 3),
        "in_flight_across": len(across),
        "in_flight_max_s": _rounded(max(across, default=0.0)),
        "first_on_new_p50_s": _rounded(_percentile(first_new, 50)),
        "first_on_new_max_s": _rounded(max(first_new, default=0.0)),
        "new_steady_median_s": _rounded(steady_median_s),
    }
