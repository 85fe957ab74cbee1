"""The standby choice on a hand-made profile with known crossovers: cut 0 (all-cloud)
above 40 mbit, cut 1 from 10 to 40 mbit, cut 2 (all-edge) below 10 mbit."""

from __future__ import annotations

from controller.standby import SeenBandwidths, likely_cuts
from models.planner import CodecBudget, Option, Planner
from tests.profile_cases import THREE_CUTS, codec_planner, planner_for


def warm_cuts(planner: Planner, **where: object) -> list[int]:
    """The cuts of ``likely_cuts``'s options (this profile has no codec rows)."""
    options = likely_cuts(planner, **where)  # type: ignore[arg-type]
    assert all(option.codec == "none" for option in options)
    return [option.cut for option in options]


def test_the_cut_for_a_large_drop_outranks_a_small_move() -> None:
    planner = planner_for(THREE_CUTS)
    # At 50 mbit on cut 0: a drop below 10 mbit makes cut 0 far slower than cut 2; a dip
    # to 30 mbit makes it only a little slower than cut 1.
    assert warm_cuts(planner, bandwidth_bps=50e6, rtt_s=0.0, current=0, count=1) == [2]
    assert warm_cuts(planner, bandwidth_bps=50e6, rtt_s=0.0, current=0, count=2) == [2, 1]


def test_after_a_drop_the_cut_just_left_stays_warm() -> None:
    planner = planner_for(THREE_CUTS)
    assert warm_cuts(planner, bandwidth_bps=5e6, rtt_s=0.0, current=2, count=1) == [0]


def test_no_room_keeps_nothing_warm() -> None:
    planner = planner_for(THREE_CUTS)
    assert warm_cuts(planner, bandwidth_bps=50e6, rtt_s=0.0, current=0, count=0) == []


def test_a_bandwidth_the_link_has_been_at_comes_before_the_sweep() -> None:
    """Back at 50 mbit after ten seconds at 15: the sweep alone keeps the cut for a big
    drop (cut 2) warm; the link has shown 15 mbit, so cut 1 comes first."""
    planner = planner_for(THREE_CUTS)
    seen = [50e6] * 10 + [15e6] * 10
    assert warm_cuts(planner, bandwidth_bps=50e6, rtt_s=0.0, current=0, count=1) == [2]
    assert warm_cuts(planner, bandwidth_bps=50e6, rtt_s=0.0, current=0, count=1, seen=seen) == [1]
    assert warm_cuts(planner, bandwidth_bps=50e6, rtt_s=0.0, current=0, count=2, seen=seen) == [
        1,
        2,
    ]


def test_a_moment_near_a_crossover_is_not_where_the_link_has_been() -> None:
    planner = planner_for(THREE_CUTS)
    seen = [50e6] * 30 + [15e6] * 2  # two seconds at 15 mbit
    assert warm_cuts(planner, bandwidth_bps=50e6, rtt_s=0.0, current=0, count=1, seen=seen) == [2]


def test_seen_bandwidths_keep_one_a_second_for_the_last_minutes() -> None:
    seen = SeenBandwidths(horizon_s=60, every_s=1)
    for tenth in range(1000):  # 100 s of ticks every 0.1 s
        seen.add(tenth / 10, float(tenth))
    values = seen.values()
    assert 59 <= len(values) <= 61
    assert values[-1] >= 980  # the newest kept, the oldest gone
    assert values[0] >= 380


def test_with_a_codec_budget_options_are_warmed_not_cuts() -> None:
    """At 50 mbit on cut 0, a drop makes 1/int8 the best (from about 2.4 to 40 mbit); on
    plain cut 1 at 20 mbit, 1/int8 is another option of the same cut, worth warming."""
    planner = codec_planner(CodecBudget(max_top1_disagreement=0.01))
    near = {"rtt_s": 0.0, "count": 2}
    assert likely_cuts(planner, bandwidth_bps=50e6, current=0, **near)[0] == Option(1, "int8")
    at_20 = likely_cuts(planner, bandwidth_bps=20e6, current=Option(1), **near)
    assert Option(1, "int8") in at_20
    assert Option(1) not in likely_cuts(planner, bandwidth_bps=20e6, current=Option(1), **near)
