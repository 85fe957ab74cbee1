"""Which cuts to keep warm for ``switch_standby``: the ones that would save the most if
the bandwidth moved. A "cut" here is a planner ``Option`` (with a codec budget, a cut
and the codec its tensor is sent with).

- **Where it has been** comes first. The bandwidths the controller estimated over the
  last minutes (``SeenBandwidths``, one a second): a cut that was the best one for at
  least ``SEEN_MIN_S`` of them is warm before any other, most saving first. A link that
  went 50 -> 15 -> 50 mbit is likelier to go to 15 again than to any bandwidth it never
  showed; one second near a crossover is not enough to count.
- **Anywhere near** fills the rest. For bandwidths from 1/16 to 16 times the current
  estimate (evenly in log scale, each as likely as the next), the planner names the best
  cut; a standby for that cut saves what the current cut would lose there. A cut's score
  is that saving summed over the bandwidths where it is the best one, so the cut for a
  10x drop (where staying put costs the most) outranks the cut for a 10% wobble, and the
  cut just left, the likeliest return, stays warm.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from models.planner import Option, Planner

FACTORS = np.geomspace(1 / 16, 16, 33)
SEEN_HORIZON_S = 300.0  # "the last minutes"
SEEN_EVERY_S = 1.0  # one estimate a second is plenty to know where the link has been
SEEN_MIN_S = 5.0  # a cut the link favoured this long (in SEEN_EVERY_S samples) was "seen"


class SeenBandwidths:
    """The estimates of the last ``horizon_s``, at most one per ``every_s``."""

    def __init__(self, *, horizon_s: float = SEEN_HORIZON_S, every_s: float = SEEN_EVERY_S):
        self.horizon_s = horizon_s
        self.every_s = every_s
        self._seen: deque[tuple[float, float]] = deque()  # (monotonic s, bits/s)

    def add(self, now_s: float, bandwidth_bps: float) -> None:
        if self._seen and now_s - self._seen[-1][0] < self.every_s:
            return
        self._seen.append((now_s, bandwidth_bps))
        while self._seen and self._seen[0][0] < now_s - self.horizon_s:
            self._seen.popleft()

    def values(self) -> list[float]:
        return [bandwidth for _, bandwidth in self._seen]


def likely_cuts(
    planner: Planner,
    *,
    bandwidth_bps: float,
    rtt_s: float,
    current: int | Option,
    count: int,
    seen: Sequence[float] = (),
) -> list[Option]:
    """The ``count`` options other than ``current`` to keep warm: those the ``seen``
    bandwidths favoured first, then the sweep around ``bandwidth_bps``'s."""
    current = Option.of(current)
    seen_savings, seen_counts = _savings(planner, seen, rtt_s, current)
    often = SEEN_MIN_S / SEEN_EVERY_S
    ranked = _by_score({c: s for c, s in seen_savings.items() if seen_counts[c] >= often})
    sweep = [bandwidth_bps * float(factor) for factor in FACTORS]
    ranked += [c for c in _by_score(_savings(planner, sweep, rtt_s, current)[0]) if c not in ranked]
    return ranked[:count]


def _savings(
    planner: Planner, bandwidths: Sequence[float], rtt_s: float, current: Option
) -> tuple[dict[Option, float], dict[Option, int]]:
    """Per option other than ``current``: what it saves over ``current``, summed over
    the bandwidths where it is the best option, and how many those are."""
    savings: dict[Option, float] = {}
    counts: dict[Option, int] = {}
    for bandwidth in bandwidths:
        best = planner.best(bandwidth, rtt_s)
        if best.option == current:
            continue
        saving = planner.latency_of(current, bandwidth, rtt_s) - best.latency_s
        savings[best.option] = savings.get(best.option, 0.0) + saving
        counts[best.option] = counts.get(best.option, 0) + 1
    return savings, counts


def _by_score(scores: dict[Option, float]) -> list[Option]:
    return sorted(scores, key=lambda option: (-scores[option], option))
