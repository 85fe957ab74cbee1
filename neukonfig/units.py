"""Bandwidths and durations as users write them, in ``tc``'s conventions.

The same strings configure link shaping (``tc ... rate 10mbit delay 20ms``), so they
mean here exactly what they mean to ``tc``:

- ``bit kbit mbit gbit tbit``: bits per second, decimal (``10mbit`` = 10,000,000 bit/s);
  ``kibit mibit gibit tibit`` are the binary (1024) forms. ``/s`` may follow
  (``10mbit/s``).
- ``bps kbps mbps gbps tbps``: **bytes** per second, as in ``tc`` (``1mbps`` = 8 mbit/s,
  not 1 mbit/s); ``kibps ... tibps`` are the binary forms.
- A bandwidth written without a unit is refused: ``10`` could mean bits, bytes or
  megabits, and a wrong guess silently plans for a link a million times slower.
  Numbers passed from code (``int``/``float``) are bits per second.
- Durations: ``s sec``, ``ms msec``, ``us usec µs``; a plain number is seconds.

Units are case-insensitive. Bandwidths must be positive and finite; durations must be
zero or positive and finite.
"""

from __future__ import annotations

import math
import re

from neukonfig.errors import InvalidUnitError

_BIT_UNITS: dict[str, float] = {
    "bit": 1.0,
    "kbit": 1e3,
    "mbit": 1e6,
    "gbit": 1e9,
    "tbit": 1e12,
    "kibit": 2.0**10,
    "mibit": 2.0**20,
    "gibit": 2.0**30,
    "tibit": 2.0**40,
}
# tc's "bps" family counts bytes, so every factor carries the 8 bits of a byte.
_BYTE_UNITS: dict[str, float] = {
    "bps": 8.0,
    "kbps": 8e3,
    "mbps": 8e6,
    "gbps": 8e9,
    "tbps": 8e12,
    "kibps": 8 * 2.0**10,
    "mibps": 8 * 2.0**20,
    "gibps": 8 * 2.0**30,
    "tibps": 8 * 2.0**40,
}
BANDWIDTH_UNITS: dict[str, float] = {
    **_BIT_UNITS,
    **{f"{unit}/s": factor for unit, factor in _BIT_UNITS.items()},
    **_BYTE_UNITS,
}
DURATION_UNITS: dict[str, float] = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "ms": 1e-3,
    "msec": 1e-3,
    "msecs": 1e-3,
    "us": 1e-6,
    "usec": 1e-6,
    "usecs": 1e-6,
    "µs": 1e-6,
}

BANDWIDTH_HELP = (
    "bit, kbit, mbit, gbit, tbit (bits/s, decimal), kibit..tibit (binary), "
    "or bps, kbps, mbps, gbps, tbps (BYTES/s, as in tc), e.g. 10mbit"
)
DURATION_HELP = "us, ms or s; a plain number is seconds"

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([a-zµ/]*)$")


def parse_bandwidth(text: str | float) -> float:
    """``"10mbit"`` -> 1e7 (bits per second). Raises InvalidUnitError on anything else."""
    value = _parse(text, BANDWIDTH_UNITS, what="bandwidth", accepted=BANDWIDTH_HELP)
    if value <= 0:
        raise InvalidUnitError(f"bandwidth {text!r} must be greater than zero")
    return value


def parse_duration(text: str | float) -> float:
    """``"20ms"`` -> 0.02 (seconds). Zero is allowed (no delay)."""
    value = _parse(text, DURATION_UNITS, what="duration", accepted=DURATION_HELP)
    if value < 0:
        raise InvalidUnitError(f"duration {text!r} must not be negative")
    return value


def parse_share(text: str | float) -> float:
    """``"0.5%"`` or ``"0.005"`` -> 0.005: a share between 0 and 1."""
    raw = str(text).strip()
    percent = raw.endswith("%")
    try:
        value = float(raw.rstrip("%")) / (100 if percent else 1)
    except ValueError:
        raise InvalidUnitError(f"{text!r} is not a share (e.g. 0.5% or 0.005)") from None
    if not 0 <= value <= 1:
        raise InvalidUnitError(f"{text!r} is not between 0 and 100%")
    return value


def parse_bandwidth_range(text: str) -> tuple[float, float]:
    """``"1mbit:1gbit"`` -> (1e6, 1e9), low before high."""
    parts = str(text).split(":")
    if len(parts) != 2:
        raise InvalidUnitError(
            f"bandwidth range {text!r} must look like LOW:HIGH, e.g. 1mbit:1gbit"
        )
    low, high = (parse_bandwidth(part) for part in parts)
    if not low < high:
        raise InvalidUnitError(f"bandwidth range {text!r}: LOW must be below HIGH")
    return low, high


def format_bandwidth(bits_per_second: float) -> str:
    """1e7 -> ``"10mbit"``, 3.21e6 -> ``"3.21mbit"``: three significant digits, tc units."""
    if not math.isfinite(bits_per_second):
        return "inf"
    units = (("tbit", 1e12), ("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0))
    for position, (unit, scale) in enumerate(units):
        if bits_per_second >= scale or unit == "bit":
            text = f"{bits_per_second / scale:.3g}"
            # 999.7 kbit rounds to "1e+03": say 1mbit instead.
            if float(text) >= 1000 and position > 0:
                larger, larger_scale = units[position - 1]
                return f"{bits_per_second / larger_scale:.3g}{larger}"
            return f"{text}{unit}"
    raise AssertionError("unreachable: 'bit' always matches")


def _parse(text: str | float, units: dict[str, float], *, what: str, accepted: str) -> float:
    if isinstance(text, bool):
        raise InvalidUnitError(f"{what} {text!r} is not a number with a unit; use {accepted}")
    if isinstance(text, int | float):
        number, factor = float(text), 1.0
    else:
        match = _QUANTITY.match(text.strip().lower())
        if match is not None and not match.group(2) and "" not in units:
            raise InvalidUnitError(
                f"{what} {text!r} has no unit; write it with one, e.g. {text.strip()}mbit "
                f"({accepted})"
            )
        if match is None or match.group(2) not in units:
            raise InvalidUnitError(f"{what} {text!r} is not understood; use {accepted}")
        number, factor = float(match.group(1)), units[match.group(2)]
    value = number * factor
    if not math.isfinite(value):
        raise InvalidUnitError(f"{what} {text!r} must be a finite number")
    return value


def parse_schedule(text: str | None) -> list[tuple[float, float]]:
    """``50mbit@0,5mbit@20`` -> [(0.0, 50e6), (20.0, 5e6)]: link rates by time, sorted."""
    if not text:
        return []
    steps = []
    for item in text.split(","):
        rate, _, at = item.strip().partition("@")
        if not at:
            raise InvalidUnitError(
                f"schedule entry {item!r} must look like RATE@SECONDS, e.g. 5mbit@20"
            )
        steps.append((parse_duration(at), parse_bandwidth(rate)))
    return sorted(steps)


_BYTE_SIZES: dict[str, float] = {
    "b": 1.0,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "kib": 2.0**10,
    "mib": 2.0**20,
    "gib": 2.0**30,
}
BYTES_HELP = "B, KB, MB, GB (decimal) or KiB, MiB, GiB (binary), e.g. 2GiB"


def parse_bytes(text: str | int) -> int:
    """``2GiB`` -> 2147483648. A size written without a unit is refused, as a bandwidth is."""
    value = _parse(text, _BYTE_SIZES, what="size", accepted=BYTES_HELP)
    if value < 1:
        raise InvalidUnitError(f"size {text!r} must be at least one byte")
    return int(value)
