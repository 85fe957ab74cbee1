"""Which cuts to keep warm for ``switch_standby``: the cuts the planner would pick if
the bandwidth moved from where it is now, nearest moves first."""

from __future__ import annotations

import numpy as np

from models.planner import Planner

# Bandwidth multiples to consider, nearest first: halving or doubling is likelier
# than a 16x swing.
FACTORS = sorted(np.geomspace(1 / 16, 16, 17), key=lambda f: abs(np.log(f)))


def likely_cuts(
    planner: Planner, *, bandwidth_bps: float, rtt_s: float, current: int, count: int
) -> list[int]:
    chosen: list[int] = []
    for factor in FACTORS:
        cut = planner.best(bandwidth_bps * float(factor), rtt_s).cut
        if cut != current and cut not in chosen:
            chosen.append(cut)
        if len(chosen) == count:
            break
    return chosen
