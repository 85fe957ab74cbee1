"""Bandwidth crossover table: over which bandwidth ranges each cut is the fastest.

Each of the planner's rows is a line: a cut, or with a codec budget a (cut, codec) pair.

With ``x = 1 / bandwidth`` every cut's latency is a line, ``a_i + b_i * x`` (``a``: fixed
time including RTT, ``b``: bits sent). The best cut as a function of ``x`` is the lower
envelope of those lines, so its breakpoints are exact line intersections; no sampling.
Walking from the highest bandwidth down (smallest ``x`` up), the best line only ever
hands over to a line with fewer bits: the one it meets first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.planner import Planner

# Relative tolerance when comparing latencies and breakpoints that are computed from
# the same floats in different orders.
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class BandwidthRange:
    """``cut`` (with ``codec``) is the fastest for every bandwidth in [low_bps, high_bps]."""

    low_bps: float
    high_bps: float
    cut: int
    latency_at_low_s: float
    latency_at_high_s: float
    codec: str = "none"


def crossover_table(
    planner: Planner, *, low_bps: float, high_bps: float, rtt_s: float = 0.0
) -> list[BandwidthRange]:
    """Ranges of [low_bps, high_bps] where each cut is best, lowest bandwidth first."""
    if not 0 < low_bps < high_bps < float("inf"):
        raise ValueError(f"need 0 < low < high < inf, got {low_bps} and {high_bps}")
    intercepts, slopes = planner.lines(rtt_s)
    x_end = 1.0 / low_bps
    x = 1.0 / high_bps
    current = _best_at(intercepts, slopes, x)
    segments: list[tuple[float, float, int]] = []
    while True:
        handover = _next_handover(intercepts, slopes, current, x)
        if handover is None or handover[0] >= x_end:
            segments.append((x, x_end, current))
            break
        x_next, successor = handover
        if x_next > x:
            segments.append((x, x_next, current))
        x, current = x_next, successor
    return [_as_range(planner, intercepts, slopes, seg) for seg in reversed(segments)]


def _best_at(intercepts: np.ndarray, slopes: np.ndarray, x: float) -> int:
    """Lowest line at ``x``; among (near-)ties the flattest, which stays best as x grows."""
    values = intercepts + slopes * x
    lowest = values.min()
    tied = np.flatnonzero(values <= lowest + _TOLERANCE * max(abs(lowest), 1.0))
    return int(tied[np.argmin(slopes[tied])])


def _next_handover(
    intercepts: np.ndarray, slopes: np.ndarray, current: int, x: float
) -> tuple[float, int] | None:
    """Where a flatter line first drops below ``current`` at or after ``x``, and which."""
    flatter = np.flatnonzero(slopes < slopes[current])
    if flatter.size == 0:
        return None
    crossings = (intercepts[flatter] - intercepts[current]) / (slopes[current] - slopes[flatter])
    # A crossing a hair before x (rounding) is a tie at x: take it now.
    crossings = np.maximum(crossings, x)
    first = crossings.min()
    tied = flatter[crossings <= first * (1 + _TOLERANCE)]
    return float(first), int(tied[np.argmin(slopes[tied])])


def _as_range(
    planner: Planner,
    intercepts: np.ndarray,
    slopes: np.ndarray,
    segment: tuple[float, float, int],
) -> BandwidthRange:
    x_low, x_high, position = segment
    return BandwidthRange(
        low_bps=1.0 / x_high,
        high_bps=1.0 / x_low,
        cut=planner.indices[position],
        latency_at_low_s=float(intercepts[position] + slopes[position] * x_high),
        latency_at_high_s=float(intercepts[position] + slopes[position] * x_low),
        codec=planner.codecs[position],
    )
