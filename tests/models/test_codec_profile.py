"""Codec costs in the profile (sizes over the head's real outputs, encode on the edge,
decode on the cloud) and the lossy codecs' measured effect on the model's answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.codec_accuracy import cuts_worth_measuring, measure_accuracy, with_accuracy
from models.planner import CodecBudget, Planner
from models.profiler import profile_partitions
from models.runtime import Role
from neukonfig.codecs import Codec
from neukonfig.manifest import CutKind, read_manifest
from neukonfig.profiles import Profile

INT8, ZSTD, FP16 = Codec.parse("int8"), Codec.parse("zstd"), Codec.parse("fp16")


@pytest.fixture(scope="module")
def coded_profile(tiny_parts: Path) -> Profile:
    return profile_partitions(
        tiny_parts, roles=[Role.EDGE, Role.CLOUD], warmup=1, repeats=2, codecs=[INT8, ZSTD]
    )


def test_every_crossing_cut_has_the_cost_of_each_codec(coded_profile: Profile) -> None:
    for cut in coded_profile.cuts:
        if cut.kind is CutKind.ALL_EDGE:
            assert cut.codecs == []
            continue
        int8, zstd = cut.codec_cost("int8"), cut.codec_cost("zstd")
        assert int8 is not None, cut.index
        assert zstd is not None, cut.index
        # A quarter of the float32 bytes, plus headers, the side tensor and alignment.
        assert int8.frame_bytes <= cut.bytes / 4 + 256
        assert zstd.frame_bytes_min <= zstd.frame_bytes <= zstd.frame_bytes_max
        assert zstd.samples == 8
        assert int8.encode is not None
        assert int8.decode is not None


def test_a_relu_map_compresses_by_its_zeros_and_the_sizes_vary_with_the_input(
    coded_profile: Profile,
) -> None:
    """Cut 3 is stem.relu: about half zeros on the head's real outputs; random data of
    the same shape (what the plain wire costs use) would not compress at all."""
    relu = coded_profile.cut(3)
    assert relu is not None
    zstd = relu.codec_cost("zstd")
    assert zstd is not None
    assert zstd.frame_bytes < 0.7 * relu.frame_bytes
    assert zstd.frame_bytes_min < zstd.frame_bytes_max


def test_one_role_measures_its_own_side_of_a_codec(tiny_parts: Path) -> None:
    edge = profile_partitions(tiny_parts, roles=[Role.EDGE], warmup=1, repeats=2, codecs=[INT8])
    cost = edge.cuts[3].codec_cost("int8")
    assert cost is not None
    assert cost.encode is not None
    assert cost.decode is None


def test_lossy_codecs_move_the_answers_a_little_and_lossless_stacking_nothing(
    tiny_parts: Path, coded_profile: Profile
) -> None:
    codecs = [FP16, INT8, Codec.parse("int8+zstd"), ZSTD]
    measured = measure_accuracy(tiny_parts, codecs, inputs=40, batch=16)
    crossing = [cut.index for cut in coded_profile.cuts if cut.kind is not CutKind.ALL_EDGE]
    assert sorted(measured) == crossing
    for index, results in measured.items():
        fp16, int8, stacked = results  # zstd alone is exact: not measured
        assert [r.codec for r in results] == ["fp16", "int8", "int8+zstd"]
        assert all(r.inputs == 40 for r in results)
        assert 0 < fp16.max_relative_error < 1e-3, index
        assert 0 < int8.max_relative_error < 0.05, index
        assert fp16.max_relative_error < int8.max_relative_error, index
        assert int8.top1_agreement is not None
        assert int8.top1_agreement >= 0.9
        assert stacked.model_copy(update={"codec": "int8"}) == int8
    profile = with_accuracy(coded_profile, measured)
    found = profile.cuts[3].codec_accuracy("int8")
    assert found is not None
    assert found.inputs == 40


def test_no_lossy_codec_no_accuracy_run(tiny_parts: Path) -> None:
    assert measure_accuracy(tiny_parts, [ZSTD]) == {}


def test_measuring_only_where_a_codec_can_win_plans_the_same(
    tiny_parts: Path, coded_profile: Profile
) -> None:
    """Accuracy at every crossing cut, or at the cuts where a lossy codec ranks among the
    top three at the planned bandwidths: the budgeted planner ranks the same top three."""
    manifest = read_manifest(tiny_parts)
    bandwidths, top = [0.5e6, 5e6, 50e6], 3
    worth = cuts_worth_measuring(manifest, coded_profile, coded_profile, bandwidths, top)
    crossing = [cut.index for cut in coded_profile.cuts if cut.kind is not CutKind.ALL_EDGE]
    assert worth, "at 0.5 mbit a quarter of the bytes must rank among the best"
    assert set(worth) < set(crossing)
    everywhere = measure_accuracy(tiny_parts, [INT8], inputs=16)
    there = measure_accuracy(tiny_parts, [INT8], inputs=16, cuts=worth)
    assert sorted(there) == worth
    budget = CodecBudget(max_top1_disagreement=1.0)  # every measured int8 row allowed

    def plans(measured) -> list[list[str]]:
        profile = with_accuracy(coded_profile, measured)
        planner = Planner.from_profiles(manifest, profile, profile, budget=budget)
        return [[c.label for c in planner.ranked(bps)[:top]] for bps in bandwidths]

    assert plans(there) == plans(everywhere)
    assert any("/int8" in label for ranked in plans(there) for label in ranked)
