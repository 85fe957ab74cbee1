"""The planner over (cut, codec) pairs: lossless codecs always, lossy ones only within a
measured accuracy budget, and nothing new without a budget at all."""

from __future__ import annotations

import pytest

from models.crossover import crossover_table
from models.planner import CodecBudget, Planner
from neukonfig.profiles import CodecAccuracy, CodecCost, Profile
from tests.profile_cases import THREE_CUTS, manifest_for, profile_for, timing

MBIT = 1e6


def _with_codecs(profile: Profile, *, int8_agreement: float | None) -> Profile:
    """Cut 1 (50 kB plain) gets zstd (40 kB, 0.5 + 0.5 ms) and int8 (12.5 kB, 1 + 1 ms)."""
    costs = [
        CodecCost(
            codec=name,
            frame_bytes=size,
            frame_bytes_min=size,
            frame_bytes_max=size,
            samples=8,
            encode=timing(seconds),
            decode=timing(seconds),
        )
        for name, size, seconds in (("zstd", 40_000, 0.0005), ("int8", 12_500, 0.001))
    ]
    accuracy = (
        []
        if int8_agreement is None
        else [
            CodecAccuracy(
                codec="int8",
                inputs=256,
                max_relative_error=0.01,
                top1_agreement=int8_agreement,
                top5_agreement=1.0,
            )
        ]
    )
    cuts = list(profile.cuts)
    cuts[1] = cuts[1].model_copy(update={"codecs": costs, "accuracy": accuracy})
    return profile.model_copy(update={"cuts": cuts})


def _planner(budget: CodecBudget | None, *, int8_agreement: float | None = 0.996) -> Planner:
    return Planner.from_profiles(
        manifest_for(THREE_CUTS),
        _with_codecs(profile_for(THREE_CUTS, role="edge"), int8_agreement=int8_agreement),
        _with_codecs(profile_for(THREE_CUTS, role="cloud"), int8_agreement=int8_agreement),
        budget=budget,
    )


def test_without_a_budget_the_plan_is_the_plain_one() -> None:
    planner = _planner(None)
    assert set(planner.codecs) == {"none"}
    assert planner.best(5 * MBIT).cut == 2, "all-edge below 10 mbit, as without codecs"


def test_a_lossy_codec_within_the_budget_wins_where_the_link_dominates() -> None:
    """At 5 mbit: cut 1 plain 120 ms, with zstd 105 ms, all-edge 80 ms, with int8 62 ms."""
    best = _planner(CodecBudget(max_top1_disagreement=0.005)).best(5 * MBIT)
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
    planner = _planner(budget, int8_agreement=agreement)
    assert "int8" not in planner.codecs
    assert "zstd" in planner.codecs, "lossless codecs are always allowed"
    for bandwidth in (0.5, 5, 20, 100):
        assert planner.best(bandwidth * MBIT).codec != "int8"


def test_the_crossover_table_names_the_codec_of_each_range() -> None:
    planner = _planner(CodecBudget(max_top1_disagreement=0.01))
    ranges = crossover_table(planner, low_bps=1 * MBIT, high_bps=100 * MBIT)
    assert (ranges[0].cut, ranges[0].codec) == (2, "none"), "all-edge at 1 mbit"
    assert (1, "int8") in [(r.cut, r.codec) for r in ranges]
    assert (ranges[-1].cut, ranges[-1].codec) == (0, "none")
