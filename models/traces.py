"""Synthetic bandwidth traces, and the naive rule that switch policies are judged against.

A trace is a list of ``(time_s, bandwidth_bps)`` estimates, as a controller would see
them; ``models.switch_policy.replay`` runs a policy over one. Noise is seeded.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from models.planner import Planner

Trace = list[tuple[float, float]]


def square_wave(
    *, high: float, low: float, half_period_s: float, periods: int, rate_hz: float
) -> Trace:
    """``high`` for ``half_period_s``, then ``low``, ``periods`` times."""
    samples = round(2 * periods * half_period_s * rate_hz)
    return [
        (i / rate_hz, high if int(i / rate_hz // half_period_s) % 2 == 0 else low)
        for i in range(samples)
    ]


def ramp(
    *,
    start: float,
    end: float,
    duration_s: float,
    rate_hz: float,
    noise: float = 0.0,
    seed: int = 0,
) -> Trace:
    """Geometric ramp from ``start`` to ``end``, times uniform noise in [1-noise, 1+noise]."""
    samples = round(duration_s * rate_hz)
    levels = np.geomspace(start, end, samples)
    jitter = np.random.default_rng(seed).uniform(1 - noise, 1 + noise, samples)
    return [(i / rate_hz, float(b)) for i, b in enumerate(levels * jitter)]


def noise_around(
    center: float, *, spread: float, samples: int, rate_hz: float, seed: int = 0
) -> Trace:
    """Independent estimates uniform in ``center * [1-spread, 1+spread]``."""
    factors = np.random.default_rng(seed).uniform(1 - spread, 1 + spread, samples)
    return [(i / rate_hz, center * float(f)) for i, f in enumerate(factors)]


def wander(
    center: float, *, amplitude: float, period_s: float, samples: int, rate_hz: float
) -> Trace:
    """A slow sine around ``center``: each side lasts longer than any short dwell."""
    return [
        (i / rate_hz, center * (1 + amplitude * float(np.sin(2 * np.pi * i / rate_hz / period_s))))
        for i in range(samples)
    ]


def naive_switches(planner: Planner, trace: Iterable[tuple[float, float]], *, start: int) -> int:
    """Moves made by following the planner's best cut on every estimate."""
    current, switches = start, 0
    for _time, bandwidth in trace:
        best = planner.best(bandwidth).cut
        switches += best != current
        current = best
    return switches
