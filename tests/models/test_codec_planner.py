"""The planner over (cut, codec) pairs: lossless codecs always, lossy ones only within a
measured accuracy budget, and nothing new without a budget at all."""

from __future__ import annotations

import pytest

from models.codec_accuracy import accuracy_where_it_matters
from models.crossover import crossover_table
from models.planner import CodecBudget, Option, Planner
from models.switch_policy import Decision, Reason, SwitchPolicy, replay
from neukonfig.profiles import CodecAccuracy, CodecCost, Profile
from tests.profile_cases import Cost, codec_planner, manifest_for, profile_for, timing

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


FOUR_CUTS = (
    Cost(edge_s=0.0, cloud_s=0.010, frame_bytes=200_000),
    Cost(edge_s=0.030, cloud_s=0.010, frame_bytes=50_000),
    Cost(edge_s=0.035, cloud_s=0.010, frame_bytes=48_000),
    Cost(edge_s=0.080, cloud_s=0.0, frame_bytes=0),
)


def _int8_at(profile: Profile, cuts: tuple[int, ...]) -> Profile:
    """int8 at ``cuts``: a quarter of the plain frame, 1 ms to encode and 1 to decode."""
    coded = list(profile.cuts)
    for index in cuts:
        size = coded[index].frame_bytes // 4
        cost = CodecCost(
            codec="int8",
            frame_bytes=size,
            frame_bytes_min=size,
            frame_bytes_max=size,
            samples=8,
            encode=timing(0.001),
            decode=timing(0.001),
        )
        coded[index] = coded[index].model_copy(update={"codecs": [cost]})
    return profile.model_copy(update={"cuts": coded})


def test_a_refused_codec_sends_the_accuracy_measuring_on_to_the_next_cut() -> None:
    """At 5 mbit, were int8 accurate enough: 1/int8 62 ms, 2/int8 66.2 ms, all-edge 80 ms.
    int8 at cut 1, the first worth measuring, moves 2% of top-1s (over a 1% budget);
    2/int8, within it, still beats all-edge, so cut 2 is measured next, and planned."""
    manifest = manifest_for(FOUR_CUTS)
    edge, cloud = (_int8_at(profile_for(FOUR_CUTS, role=r), (1, 2)) for r in ("edge", "cloud"))
    asked: list[list[int]] = []

    def measure(cuts: list[int]) -> dict[int, list[CodecAccuracy]]:
        asked.append(cuts)
        return {
            cut: [CodecAccuracy(codec="int8", inputs=256, max_relative_error=0.01,
                                top1_agreement=0.98 if cut == 1 else 1.0, top5_agreement=1.0)]
            for cut in cuts
        }  # fmt: skip

    budget = CodecBudget(max_top1_disagreement=0.01)
    profile, measured = accuracy_where_it_matters(
        manifest, (edge, cloud), budget, measure=measure, bandwidths=[5 * MBIT], top=1
    )
    assert asked == [[1], [2]]
    assert measured == [1, 2]
    planned = Planner.from_profiles(manifest, profile, cloud, budget=budget).best(5 * MBIT)
    assert planned.label == "2/int8"
    assert planned.latency_s == pytest.approx(0.0662)
