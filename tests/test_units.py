from __future__ import annotations

import math

import pytest

from neukonfig.errors import InvalidUnitError, NeukonfigError
from neukonfig.units import (
    format_bandwidth,
    parse_bandwidth,
    parse_bandwidth_range,
    parse_bytes,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "bits_per_second"),
    [
        ("500kbit", 500e3),
        ("10mbit", 10e6),
        ("1gbit", 1e9),
        ("2tbit", 2e12),
        ("64bit", 64.0),
        ("10Mbit", 10e6),
        ("10MBIT", 10e6),
        (" 10 mbit ", 10e6),
        ("10mbit/s", 10e6),
        ("1.5mbit", 1.5e6),
        (".5gbit", 0.5e9),
        ("1e3kbit", 1e6),
        ("1kibit", 1024.0),
        ("1mibit", 1024.0**2),
        # tc's "bps" family is BYTES per second.
        ("1mbps", 8e6),
        ("125kbps", 1e6),
        ("1gbps", 8e9),
        ("100bps", 800.0),
        ("1kibps", 8192.0),
        # A number from code is bits per second.
        (1e6, 1e6),
        (1000, 1000.0),
    ],
)
def test_bandwidths(text: str | float, bits_per_second: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(bits_per_second, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("fast", "not understood"),
        ("10 parsecs", "not understood"),
        ("mbit", "not understood"),
        ("10mbit10", "not understood"),
        ("", "not understood"),
        ("nan", "not understood"),
        ("inf", "not understood"),
        ("1e999mbit", "finite"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("-5mbit", "greater than zero"),
        ("0mbit", "greater than zero"),
        # A string with no unit could mean bits, bytes or megabits: refused, not guessed.
        ("10", "has no unit"),
        ("2.5e6", "has no unit"),
        ("0kbit", "greater than zero"),
        (-1.0, "greater than zero"),
        (True, "not a number"),
    ],
)
def test_bad_bandwidths_are_refused_clearly(text: str | float, fragment: str) -> None:
    with pytest.raises(InvalidUnitError, match=fragment) as caught:
        parse_bandwidth(text)
    assert isinstance(caught.value, NeukonfigError)
    if fragment == "not understood":
        # The message teaches the accepted units, including the bytes trap.
        assert "mbit" in caught.value.message
        assert "BYTES" in caught.value.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20ms", 0.020),
        ("20 MS", 0.020),
        ("1.5s", 1.5),
        ("2sec", 2.0),
        ("500us", 500e-6),
        ("500µs", 500e-6),
        ("250usec", 250e-6),
        ("10msec", 0.010),
        ("0", 0.0),
        ("0ms", 0.0),
        ("0.25", 0.25),
        (0.1, 0.1),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("-1ms", "negative"), ("20 minutes", "not understood"), ("soon", "not understood")],
)
def test_bad_durations(text: str, fragment: str) -> None:
    with pytest.raises(InvalidUnitError, match=fragment):
        parse_duration(text)


def test_bandwidth_range() -> None:
    assert parse_bandwidth_range("1mbit:1gbit") == (1e6, 1e9)
    for bad in ("1gbit:1mbit", "1mbit:1mbit", "1mbit", "1mbit:2mbit:3mbit", "1mbit:fast"):
        with pytest.raises(InvalidUnitError):
            parse_bandwidth_range(bad)


@pytest.mark.parametrize(
    ("bits_per_second", "text"),
    [
        (10e6, "10mbit"),
        (3.214e6, "3.21mbit"),
        (500e3, "500kbit"),
        (1e9, "1gbit"),
        (999.96e3, "1mbit"),
        (12.0, "12bit"),
        (2.5e12, "2.5tbit"),
        (math.inf, "inf"),
    ],
)
def test_format_bandwidth(bits_per_second: float, text: str) -> None:
    assert format_bandwidth(bits_per_second) == text


@pytest.mark.parametrize("value", [1.0, 999.0, 1234.5, 6.1538e6, 40e6, 0.77e9, 3.3e12])
def test_formatted_bandwidth_parses_back_within_rounding(value: float) -> None:
    assert parse_bandwidth(format_bandwidth(value)) == pytest.approx(value, rel=5e-3)


@pytest.mark.parametrize(
    ("text", "size"), [("2GiB", 2 * 2**30), ("512MiB", 512 * 2**20), ("1.5GB", 1.5e9), (4096, 4096)]
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize(("text", "fragment"), [("2", "has no unit"), ("lots", "not understood")])
def test_bad_sizes_are_refused_clearly(text: str, fragment: str) -> None:
    with pytest.raises(InvalidUnitError, match=fragment):
        parse_bytes(text)
