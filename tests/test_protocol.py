"""The internal protocol's parsing of what a peer sends."""

from __future__ import annotations

import pytest

from neukonfig.protocol import parse_arrival_tail


def test_an_arrival_tail_header_is_bytes_and_seconds() -> None:
    assert parse_arrival_tail("1300 0.002080000") == (1300, pytest.approx(0.00208))


@pytest.mark.parametrize(
    "value", [None, "", "garbage", "1 2 3", "x 0.1", "12", "-5 0.1", "5 -0.1", "5 nan"]
)
def test_a_missing_or_malformed_arrival_tail_is_untimed(value: str | None) -> None:
    assert parse_arrival_tail(value) == (0, 0.0)
