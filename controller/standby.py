"""Which cuts to keep warm for ``switch_standby``: the ones that would save the most if
the bandwidth moved.

For bandwidths from 1/16 to 16 times the current estimate (evenly in log scale, each as
likely as the next), the planner names the best cut; a standby for that cut saves what
the current cut would lose there. A cut's score is that saving summed over the
bandwidths where it is the best one, so the cut for a 10x drop (where staying put costs
the most) outranks the cut for a 10% wobble, and the cut just left, the likeliest
return, stays warm.
"""

from __future__ import annotations

import numpy as np

from models.planner import Planner

FACTORS = np.geomspace(1 / 16, 16, 33)


def likely_cuts(
    planner: Planner, *, bandwidth_bps: float, rtt_s: float, current: int, count: int
) -> list[int]:
    scores: dict[int, float] = {}
    for factor in FACTORS:
        bandwidth = bandwidth_bps * float(factor)
        best = planner.best(bandwidth, rtt_s)
        if best.cut == current:
            continue
        saving = planner.latency_of(current, bandwidth, rtt_s) - best.latency_s
        scores[best.cut] = scores.get(best.cut, 0.0) + saving
    ranked = sorted(scores, key=lambda cut: (-scores[cut], cut))
    return ranked[:count]
