"""The planner over (cut, codec) pairs: lossless codecs always, lossy ones only within a
measured accuracy budget, and nothing new without a budget at all."""

from __future__ import annotations

import pytest

from models.crossover import crossover_table
from models.planner import CodecBudget, Option
from models.switch_policy import Decision, Reason, SwitchPolicy, replay
from tests.profile_cases import codec_planner

MBIT = 1e6


def test_without_a_budget_the_plan_is_the_plain_one() -> None:
    planner = codec_planner(None)
    assert set(planner.codecs) == {"none"}
    assert planner.best(5 * MBIT).cut == 2, "all-edge below 10 mbit, as without codecs"


def test_a_lossy_codec_within_the_budget_wins_where_the_link_dominates() -> None:
    """At 5 mbit: cut 1 plain 120 ms, with zstd 105 ms, all-edge 80 ms, with int8 62 ms."""
    best = codec_planner(CodecBudget(max_top1_disagreement=0.005)).best(5 * MBIT)
    assert (best.cut, best.codec) == (1, "int8")
    assert best.latency_s == pytest.approx(0.062)
    assert best.breakdown.serialization_s == pytest.approx(0.002)


@pytest.mark.parametrize(
    ("budget", "agreement"),
    [(CodecBudget(), 0.996), (CodecBudget(0.003), 0.996), (CodecBudget(0.5), None)],
    ids=["lossless only", "over budget", "accuracy not measured"],
)
def test_a_lossy_codec_is_never_picked_outside_a_measured_budget(
    budget: CodecBudget, agreement: float | None
) -> None:
    planner = codec_planner(budget, int8_agreement=agreement)
    assert "int8" not in planner.codecs
    assert "zstd" in planner.codecs, "lossless codecs are always allowed"
    for bandwidth in (0.5, 5, 20, 100):
        assert planner.best(bandwidth * MBIT).codec != "int8"


def test_the_crossover_table_names_the_codec_of_each_range() -> None:
    planner = codec_planner(CodecBudget(max_top1_disagreement=0.01))
    ranges = crossover_table(planner, low_bps=1 * MBIT, high_bps=100 * MBIT)
    assert (ranges[0].cut, ranges[0].codec) == (2, "none"), "all-edge at 1 mbit"
    assert (1, "int8") in [(r.cut, r.codec) for r in ranges]
    assert (ranges[-1].cut, ranges[-1].codec) == (0, "none")


def test_the_policy_moves_between_two_codecs_of_one_cut() -> None:
    """At 20 mbit plain cut 1 takes 60 ms and 1/int8 47 ms: the same cut, another option."""
    policy = SwitchPolicy(codec_planner(CodecBudget(max_top1_disagreement=0.01)))
    decisions = [
        policy.decide(current=Option(1), bandwidth_bps=20 * MBIT, now_s=step * 0.5)
        for step in range(5)  # the default dwell: 2 s and 3 estimates
    ]
    assert decisions[-1].decision is Decision.SWITCH, decisions[-1].detail
    assert decisions[-1].best == Option(1, "int8")
    assert "cut 1/int8 beats cut 1 by 13.00 ms" in decisions[-1].detail
    kept = policy.decide(current=Option(1, "int8"), bandwidth_bps=20 * MBIT, now_s=4.0)
    assert kept.reason is Reason.CURRENT_IS_BEST


def test_a_drop_moves_cut_and_codec_together() -> None:
    policy = SwitchPolicy(codec_planner(CodecBudget(max_top1_disagreement=0.01)))
    trace = [(t / 10, 50 * MBIT) for t in range(50)] + [(5 + t / 10, 5 * MBIT) for t in range(50)]
    events = replay(policy, trace, start_cut=0)
    assert [(e.source, e.target) for e in events] == [(Option(0), Option(1, "int8"))]
