"""The standby choice on a hand-made profile with known crossovers: cut 0 (all-cloud)
above 40 mbit, cut 1 from 10 to 40 mbit, cut 2 (all-edge) below 10 mbit."""

from __future__ import annotations

from controller.standby import likely_cuts
from tests.profile_cases import THREE_CUTS, planner_for


def test_the_cut_for_a_large_drop_outranks_a_small_move() -> None:
    planner = planner_for(THREE_CUTS)
    # At 50 mbit on cut 0: a drop below 10 mbit makes cut 0 far slower than cut 2; a dip
    # to 30 mbit makes it only a little slower than cut 1.
    assert likely_cuts(planner, bandwidth_bps=50e6, rtt_s=0.0, current=0, count=1) == [2]
    assert likely_cuts(planner, bandwidth_bps=50e6, rtt_s=0.0, current=0, count=2) == [2, 1]


def test_after_a_drop_the_cut_just_left_stays_warm() -> None:
    planner = planner_for(THREE_CUTS)
    assert likely_cuts(planner, bandwidth_bps=5e6, rtt_s=0.0, current=2, count=1) == [0]


def test_no_room_keeps_nothing_warm() -> None:
    planner = planner_for(THREE_CUTS)
    assert likely_cuts(planner, bandwidth_bps=50e6, rtt_s=0.0, current=0, count=0) == []
