from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.partition import partition_model
from models.planner import Planner
from models.profiler import loaded_cuts, profile_partitions, summarize
from models.runtime import Role
from neukonfig.manifest import CutKind, read_manifest
from neukonfig.profiles import Profile, read_profile, write_profile


@pytest.fixture(scope="module")
def tiny_parts(zoo_file, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-parts")
    partition_model(zoo_file("tiny"), out)
    return out


@pytest.fixture(scope="module")
def edge_profile(tiny_parts: Path) -> Profile:
    return profile_partitions(tiny_parts, roles=[Role.EDGE], threads=1, warmup=1, repeats=3)


@pytest.fixture(scope="module")
def cloud_profile(tiny_parts: Path) -> Profile:
    return profile_partitions(tiny_parts, roles=[Role.CLOUD], warmup=1, repeats=3)


def test_every_cut_is_measured_where_it_runs(tiny_parts: Path, edge_profile: Profile) -> None:
    manifest = read_manifest(tiny_parts)
    assert [cut.index for cut in edge_profile.cuts] == [cut.index for cut in manifest.cuts]
    assert edge_profile.model.sha256 == manifest.model.sha256
    for spec, cut in zip(manifest.cuts, edge_profile.cuts, strict=True):
        assert cut.bytes == spec.bytes
        assert cut.tail is None  # the cloud role was not profiled
        assert cut.head is not None
        if spec.kind is CutKind.ALL_CLOUD:
            assert cut.head.compute is None  # the edge forwards the raw input
            assert cut.head.load_s == 0
            continue
        assert cut.head.file == spec.head
        assert cut.head.load_s > 0
        assert cut.head.first_run_s > 0
        stats = cut.head.compute
        assert stats is not None
        assert stats.samples == 3
        assert 0 < stats.min_s <= stats.median_s <= stats.p90_s <= stats.max_s


def test_wire_costs_are_measured_for_every_crossing_tensor(edge_profile: Profile) -> None:
    for cut in edge_profile.cuts:
        if cut.kind is CutKind.ALL_EDGE:
            assert (cut.frame_bytes, cut.encode, cut.decode) == (0, None, None)
            continue
        # A frame is the tensor plus a small header, padded to a 64-byte boundary.
        assert cut.bytes < cut.frame_bytes <= cut.bytes + 256
        assert cut.encode is not None
        assert cut.decode is not None
        assert 0 < cut.encode.median_s <= cut.encode.p90_s
        assert 0 < cut.decode.median_s <= cut.decode.p90_s


def test_cloud_role_measures_tails_and_all_edge_has_none(cloud_profile: Profile) -> None:
    assert cloud_profile.roles == ["cloud"]
    assert cloud_profile.threads is None
    assert not cloud_profile.emulated_edge
    *crossing, last = cloud_profile.cuts
    assert last.kind is CutKind.ALL_EDGE
    assert last.tail is None
    for cut in crossing:
        assert cut.head is None
        assert cut.tail is not None
        assert cut.tail.compute is not None
        assert cut.tail.compute.median_s > 0


def test_one_thread_on_a_bigger_machine_is_recorded_as_emulated_edge(
    edge_profile: Profile,
) -> None:
    assert edge_profile.roles == ["edge"]
    assert edge_profile.threads == 1
    assert edge_profile.machine.cpu_count >= 1
    # On a one-core machine one thread is all there is: nothing is emulated.
    assert edge_profile.emulated_edge is (edge_profile.machine.cpu_count > 1)
    assert (edge_profile.warmup, edge_profile.repeats, edge_profile.batch) == (1, 3, 1)


def test_profile_round_trips_through_json(edge_profile: Profile, tmp_path: Path) -> None:
    path = tmp_path / "edge.json"
    write_profile(path, edge_profile)
    assert read_profile(path) == edge_profile
    document = json.loads(path.read_text())
    assert {"model", "roles", "threads", "emulated_edge", "machine", "cuts"} <= set(document)
    assert {"platform", "cpu_model", "cpu_count"} <= set(document["machine"])


def test_profiles_feed_the_planner(
    tiny_parts: Path, edge_profile: Profile, cloud_profile: Profile
) -> None:
    planner = Planner.from_profiles(read_manifest(tiny_parts), edge_profile, cloud_profile)
    first, last = planner.indices[0], planner.indices[-1]
    # A very slow link makes the all-edge cut best; its latency is the full model's time.
    slow = planner.best(1.0)
    assert slow.cut == last
    head = edge_profile.cuts[-1].head
    assert head is not None
    assert head.compute is not None
    assert slow.latency_s == pytest.approx(head.compute.median_s)
    assert planner.load_s(first) > 0


def test_progress_names_each_cut(tiny_parts: Path) -> None:
    lines: list[str] = []
    profile = profile_partitions(
        tiny_parts, roles=[Role.EDGE], warmup=1, repeats=1, progress=lines.append
    )
    assert lines[0].startswith("profiling")
    assert lines[1].startswith(f"[1/{len(profile.cuts)}] cut 0")
    assert len(lines) == len(profile.cuts) + 1


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"threads": 0}, "threads"),
        ({"warmup": 0}, "warmup"),
        ({"repeats": 0}, "repeats"),
        ({"roles": []}, "role"),
    ],
)
def test_bad_arguments_are_refused(tiny_parts: Path, options: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        profile_partitions(tiny_parts, **options)


def test_p90_is_not_below_the_median() -> None:
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats.median_s == 3.0
    assert stats.p90_s == pytest.approx(61.6)
    assert (stats.min_s, stats.max_s, stats.samples) == (1.0, 100.0, 5)


def test_cuts_timed_under_other_load_are_flagged(edge_profile: Profile) -> None:
    assert all(cut.head is not None for cut in edge_profile.cuts)
    quiet = [
        cut.model_copy(update={"head": cut.head.model_copy(update={"other_load_cores": 0.0})})
        for cut in edge_profile.cuts
        if cut.head is not None
    ]
    busy = quiet[:]
    busy[2] = quiet[2].model_copy(
        update={"head": quiet[2].head.model_copy(update={"other_load_cores": 0.9})}
    )
    assert loaded_cuts(edge_profile.model_copy(update={"cuts": quiet})) == []
    assert loaded_cuts(edge_profile.model_copy(update={"cuts": busy})) == [quiet[2].index]
