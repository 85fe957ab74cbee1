"""The latency model against numbers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.planner import Planner
from neukonfig.errors import ProfileMismatchError
from neukonfig.units import parse_bandwidth, parse_duration
from tests.profile_cases import (
    P90_FACTOR,
    THREE_CUTS,
    Cost,
    manifest_for,
    planner_for,
    profile_for,
)

# Cut 1 by hand: 10 ms edge + (1 + 2) ms serialization + 20 ms RTT
#                + 125,000 B * 8 / 10 mbit = 100 ms transfer + 5 ms cloud = 138 ms.
HAND = (
    Cost(edge_s=0.0, cloud_s=0.050, frame_bytes=1_000_000, encode_s=0.004, decode_s=0.003),
    Cost(edge_s=0.010, cloud_s=0.005, frame_bytes=125_000, encode_s=0.001, decode_s=0.002),
    Cost(edge_s=0.300, cloud_s=0.0, frame_bytes=0),
)


def test_one_megabyte_at_eight_mbit_takes_one_second() -> None:
    planner = planner_for([Cost(0.0, 0.0, 1_000_000), Cost(0.0, 0.0, 0)])
    latencies = planner.predict(parse_bandwidth("8mbit"))
    assert latencies[0] == pytest.approx(1.0)
    assert latencies[1] == 0.0


def test_split_cut_adds_every_term() -> None:
    planner = planner_for(HAND)
    choice = planner.ranked(parse_bandwidth("10mbit"), parse_duration("20ms"))
    by_cut = {c.cut: c for c in choice}
    split = by_cut[1]
    assert split.latency_s == pytest.approx(0.138)
    assert split.breakdown.edge_s == pytest.approx(0.010)
    assert split.breakdown.serialization_s == pytest.approx(0.003)
    assert split.breakdown.rtt_s == pytest.approx(0.020)
    assert split.breakdown.transfer_s == pytest.approx(0.100)
    assert split.breakdown.cloud_s == pytest.approx(0.005)
    assert split.breakdown.total_s == pytest.approx(split.latency_s)


def test_all_cloud_has_no_edge_compute_and_all_edge_sends_nothing() -> None:
    planner = planner_for(HAND)
    ranked = {c.cut: c for c in planner.ranked(10e6, 0.020)}
    # Cut 0: 0 edge + 7 ms serialization + 20 ms RTT + 800 ms transfer + 50 ms cloud.
    assert ranked[0].breakdown.edge_s == 0.0
    assert ranked[0].latency_s == pytest.approx(0.877)
    # Cut 2: the edge alone; no RTT, no transfer, no serialization however slow the link.
    assert ranked[2].latency_s == pytest.approx(0.300)
    assert ranked[2].breakdown.rtt_s == 0.0
    assert ranked[2].breakdown.transfer_s == 0.0
    assert ranked[2].breakdown.serialization_s == 0.0


def test_best_and_ranking_follow_the_bandwidth() -> None:
    planner = planner_for(HAND)
    assert planner.best(10e6, 0.020).cut == 1  # 138 ms < 300 ms < 877 ms
    assert [c.cut for c in planner.ranked(10e6, 0.020)] == [1, 2, 0]
    # At 1 mbit the split needs 1 s of transfer: all-edge wins.
    assert planner.best(1e6, 0.020).cut == 2
    # With an infinite link and no RTT: cut 0 costs 4+3+50 ms, cut 1 costs 10+3+5 ms.
    fastest = planner.best(math.inf)
    assert fastest.cut == 1
    assert fastest.latency_s == pytest.approx(0.018)
    assert planner.predict(math.inf).tolist() == pytest.approx([0.057, 0.018, 0.300])


def test_ties_go_to_the_lowest_cut() -> None:
    planner = planner_for([Cost(0.0, 0.010, 0), Cost(0.005, 0.005, 0), Cost(0.010, 0.0, 0)])
    assert planner.best(1e6).cut == 0


def test_predict_and_latency_of_agree() -> None:
    planner = planner_for(THREE_CUTS)
    for bandwidth in (1e6, 10e6, 40e6, 1e9):
        latencies = planner.predict(bandwidth, 0.003)
        for position, cut in enumerate(planner.indices):
            assert planner.latency_of(cut, bandwidth, 0.003) == pytest.approx(latencies[position])


def test_lines_give_the_same_latency() -> None:
    planner = planner_for(HAND)
    intercepts, slopes = planner.lines(0.020)
    np.testing.assert_allclose(intercepts + slopes / 10e6, planner.predict(10e6, 0.020))
    assert slopes.tolist() == [8e6, 1e6, 0.0]


def test_p90_statistic_uses_the_p90_times() -> None:
    median = planner_for(HAND).predict(math.inf)
    p90 = planner_for(HAND, stat="p90").predict(math.inf)
    np.testing.assert_allclose(p90, median * P90_FACTOR)


def test_load_cost_is_both_sides() -> None:
    costs = [Cost(0.0, 0.01, 10, load_s=0.2), Cost(0.01, 0.0, 0, load_s=0.3)]
    planner = planner_for(costs)
    assert planner.load_s(0) == pytest.approx(0.2)  # the edge of cut 0 loads nothing
    assert planner.load_s(1) == pytest.approx(0.3)  # the cloud of cut N does not exist


@pytest.mark.parametrize("bandwidth", [0.0, -1.0, math.nan])
def test_bad_bandwidth_is_refused(bandwidth: float) -> None:
    with pytest.raises(ValueError, match="bandwidth"):
        planner_for(HAND).best(bandwidth)


@pytest.mark.parametrize("rtt", [-0.001, math.nan, math.inf])
def test_bad_rtt_is_refused(rtt: float) -> None:
    with pytest.raises(ValueError, match="rtt"):
        planner_for(HAND).best(1e6, rtt)


def test_unknown_cut_is_refused() -> None:
    with pytest.raises(ValueError, match="cut 9"):
        planner_for(HAND).latency_of(9, 1e6)


def test_profile_of_another_model_is_refused() -> None:
    other = profile_for(HAND, role="edge", sha256="cd" * 32)
    with pytest.raises(ProfileMismatchError, match="sha256 cdcdcdcdcdcd"):
        Planner.from_profiles(manifest_for(HAND), other, profile_for(HAND, role="cloud"))


def test_profile_of_the_wrong_role_is_refused() -> None:
    cloud = profile_for(HAND, role="cloud")
    with pytest.raises(ProfileMismatchError, match="no edge timings"):
        Planner.from_profiles(manifest_for(HAND), cloud, cloud)


def test_profile_missing_a_cut_is_refused() -> None:
    edge = profile_for(HAND, role="edge")
    edge = edge.model_copy(update={"cuts": edge.cuts[:2]})
    with pytest.raises(ProfileMismatchError, match="no timings for cut 2"):
        Planner.from_profiles(manifest_for(HAND), edge, profile_for(HAND, role="cloud"))


def test_planner_needs_matching_columns() -> None:
    manifest = manifest_for(HAND)
    with pytest.raises(ValueError, match="3 entries"):
        Planner(
            model="x",
            cuts=manifest.cuts,
            edge_s=[0.0, 0.0],
            cloud_s=[0.0] * 3,
            serialization_s=[0.0] * 3,
            frame_bytes=[0] * 3,
        )


def test_planner_arrays_are_read_only() -> None:
    planner = planner_for(HAND)
    with pytest.raises(ValueError, match="read-only"):
        planner.edge_s[1] = 0.0
