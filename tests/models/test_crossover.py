from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.crossover import BandwidthRange, crossover_table
from models.planner import Planner
from tests.profile_cases import (
    LOWER_CROSSOVER_BPS,
    THREE_CUTS,
    UPPER_CROSSOVER_BPS,
    Cost,
    manifest_for,
    planner_for,
)


def test_two_cuts_cross_where_computed_by_hand() -> None:
    # All-edge 100 ms; all-cloud 20 ms + 1 Mbit: equal when 1e6 / B = 0.08 s -> 12.5 mbit.
    planner = planner_for([Cost(0.0, 0.020, 125_000), Cost(0.100, 0.0, 0)])
    table = crossover_table(planner, low_bps=1e6, high_bps=1e9)
    assert [r.cut for r in table] == [1, 0]
    assert table[0].low_bps == pytest.approx(1e6)
    assert table[0].high_bps == pytest.approx(12.5e6)
    assert table[1].low_bps == pytest.approx(12.5e6)
    assert table[1].high_bps == pytest.approx(1e9)
    assert table[1].latency_at_low_s == pytest.approx(0.100)
    assert table[1].latency_at_high_s == pytest.approx(0.021)


def test_three_cuts_and_rtt_moves_the_breakpoints() -> None:
    planner = planner_for(THREE_CUTS)
    table = crossover_table(planner, low_bps=1e6, high_bps=1e9)
    assert [r.cut for r in table] == [2, 1, 0]
    assert [r.high_bps for r in table[:2]] == pytest.approx(
        [LOWER_CROSSOVER_BPS, UPPER_CROSSOVER_BPS]
    )
    # 20 ms RTT hits both split cuts equally, so only the all-edge boundary moves:
    # 0.040 + 0.020 + 0.4e6 / B = 0.080 -> B = 20 mbit.
    with_rtt = crossover_table(planner, low_bps=1e6, high_bps=1e9, rtt_s=0.020)
    assert [r.high_bps for r in with_rtt[:2]] == pytest.approx([20e6, UPPER_CROSSOVER_BPS])


def test_a_range_inside_one_region_has_one_row() -> None:
    table = crossover_table(planner_for(THREE_CUTS), low_bps=11e6, high_bps=39e6)
    assert table == [
        BandwidthRange(
            low_bps=pytest.approx(11e6),
            high_bps=pytest.approx(39e6),
            cut=1,
            latency_at_low_s=pytest.approx(0.040 + 0.4e6 / 11e6),
            latency_at_high_s=pytest.approx(0.040 + 0.4e6 / 39e6),
        )
    ]


def test_dominated_cuts_never_appear() -> None:
    # Cut 1 is cut 2 made worse: more bytes and more time. It is never optimal.
    costs = [Cost(0.0, 0.01, 100_000), Cost(0.02, 0.02, 60_000), Cost(0.01, 0.02, 50_000)]
    costs.append(Cost(0.2, 0.0, 0))
    assert 1 not in [r.cut for r in crossover_table(planner_for(costs), low_bps=1, high_bps=1e12)]


@pytest.mark.parametrize("seed", range(5))
def test_table_agrees_with_brute_force(seed: int) -> None:
    planner = _random_planner(seed, cuts=60)
    low, high, rtt = 1e5, 1e10, 0.005
    table = crossover_table(planner, low_bps=low, high_bps=high, rtt_s=rtt)
    assert table[0].low_bps == pytest.approx(low)
    assert table[-1].high_bps == pytest.approx(high)
    for below, above in itertools.pairwise(table):
        assert below.high_bps == pytest.approx(above.low_bps)
        assert below.cut != above.cut
        # At a breakpoint both cuts predict the same latency.
        assert below.latency_at_high_s == pytest.approx(above.latency_at_low_s)
    for bandwidth in np.geomspace(low, high, 500):
        row = next(r for r in table if r.low_bps <= bandwidth <= r.high_bps * (1 + 1e-12))
        best = planner.best(bandwidth, rtt)
        assert planner.latency_of(row.cut, bandwidth, rtt) == pytest.approx(best.latency_s)


def test_bad_range_is_refused() -> None:
    with pytest.raises(ValueError, match="low < high"):
        crossover_table(planner_for(THREE_CUTS), low_bps=1e9, high_bps=1e6)


def _random_planner(seed: int, *, cuts: int) -> Planner:
    rng = np.random.default_rng(seed)
    edge = np.sort(rng.uniform(0, 0.2, cuts))
    edge[0] = 0.0
    cloud = np.sort(rng.uniform(0, 0.05, cuts))[::-1].copy()
    cloud[-1] = 0.0
    sent = rng.integers(1_000, 2_000_000, cuts)
    sent[-1] = 0
    costs = [
        Cost(float(e), float(c), int(b), encode_s=float(b) * 1e-10)
        for e, c, b in zip(edge, cloud, sent, strict=True)
    ]
    assert manifest_for(costs).num_cuts == cuts
    return planner_for(costs)
