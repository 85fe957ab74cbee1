"""``neukonfig profile`` and ``neukonfig plan`` as a user runs them: subprocesses, files."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import onnx
import pytest

from models.partition import partition_model
from tests.cli_run import assert_clean_error, neukonfig
from tests.graphs import branchy_model


@pytest.fixture(scope="module")
def profiled(zoo_file, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny partitioned, profiled as a 1-thread edge and as a default-threads cloud."""
    work = tmp_path_factory.mktemp("profiled")
    parts = work / "parts"
    partition_model(zoo_file("tiny"), parts)
    paths = {"parts": parts, "edge": work / "edge.json", "cloud": work / "cloud.json"}
    edge = neukonfig(
        "profile", parts, "--role", "edge", "--threads", "1", "--repeats", "3",
        "--warmup", "1", "--out", paths["edge"],
    )  # fmt: skip
    assert edge.returncode == 0, edge.stderr
    assert "[1/" in edge.stderr  # progress goes to stderr
    assert "emulated edge" in edge.stdout
    cloud = neukonfig(
        "profile", parts, "--role", "cloud", "--repeats", "3", "--out", paths["cloud"]
    )
    assert cloud.returncode == 0, cloud.stderr
    return paths


def plan(profiled: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    return neukonfig(
        "plan", profiled["parts"], "--profile-edge", profiled["edge"],
        "--profile-cloud", profiled["cloud"], *args,
    )  # fmt: skip


def test_profiles_record_how_they_were_measured(profiled: dict[str, Path]) -> None:
    edge = json.loads(profiled["edge"].read_text())
    cloud = json.loads(profiled["cloud"].read_text())
    assert (edge["roles"], edge["threads"], edge["repeats"]) == (["edge"], 1, 3)
    assert edge["emulated_edge"] is (edge["machine"]["cpu_count"] > 1)
    assert (cloud["roles"], cloud["threads"], cloud["emulated_edge"]) == (["cloud"], None, False)
    manifest = json.loads((profiled["parts"] / "manifest.json").read_text())
    assert [c["bytes"] for c in edge["cuts"]] == [c["bytes"] for c in manifest["cuts"]]


def test_plan_prints_ranked_cuts_and_the_best(profiled: dict[str, Path]) -> None:
    result = plan(profiled, "--bandwidth", "10mbit", "--rtt", "20ms")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "at 10mbit, rtt 20 ms" in lines[0]
    assert lines[-1].startswith("best: cut ")
    cuts = len(json.loads((profiled["parts"] / "manifest.json").read_text())["cuts"])
    assert len(lines) == 2 + cuts + 1  # title, header, one row per cut, best


def test_plan_json_is_ranked_fastest_first(profiled: dict[str, Path]) -> None:
    result = plan(profiled, "--bandwidth", "500kbit", "--rtt", "5ms", "--json", "--top", "4")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["bandwidth_bps"] == 500e3
    assert document["rtt_s"] == 0.005
    latencies = [row["latency_s"] for row in document["ranked"]]
    assert len(latencies) == 4
    assert latencies == sorted(latencies)
    assert document["best"] == document["ranked"][0]
    for row in document["ranked"]:
        parts = ("edge_s", "serialization_s", "rtt_s", "transfer_s", "cloud_s")
        assert sum(row[part] for part in parts) == pytest.approx(row["latency_s"])
        assert row["transfer_s"] == pytest.approx(row["frame_bytes"] * 8 / 500e3)


def test_sweep_covers_the_range_without_gaps(profiled: dict[str, Path]) -> None:
    result = plan(profiled, "--sweep", "1mbit:1gbit", "--json")
    assert result.returncode == 0, result.stderr
    ranges = json.loads(result.stdout)["ranges"]
    assert ranges[0]["low_bps"] == pytest.approx(1e6)
    assert ranges[-1]["high_bps"] == pytest.approx(1e9)
    for below, above in itertools.pairwise(ranges):
        assert below["high_bps"] == pytest.approx(above["low_bps"])
    table = plan(profiled, "--sweep", "1mbit:1gbit", "--rtt", "1ms")
    assert table.returncode == 0, table.stderr
    assert "fastest cut from 1mbit to 1gbit" in table.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--bandwidth", "fast"), ("'fast'", "mbit", "BYTES")),
        (("--bandwidth", "10 parsecs"), ("'10 parsecs'",)),
        (("--bandwidth=-5mbit",), ("greater than zero",)),
        (("--bandwidth", "0mbit"), ("greater than zero",)),
        (("--bandwidth", "10"), ("'10' has no unit", "10mbit")),
        (("--bandwidth", "nan"), ("'nan'",)),
        (("--bandwidth", "10mbit", "--rtt=-3ms"), ("negative",)),
        (("--bandwidth", "10mbit", "--rtt", "soon"), ("'soon'", "ms")),
        (("--sweep", "1gbit:1mbit"), ("LOW must be below HIGH",)),
        (("--sweep", "1mbit"), ("LOW:HIGH",)),
    ],
)
def test_bad_units_are_one_clear_line(profiled: dict[str, Path], args, fragments) -> None:
    assert_clean_error(plan(profiled, *args), *fragments)


def test_bandwidth_or_sweep_is_required(profiled: dict[str, Path]) -> None:
    result = plan(profiled)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_profile_of_another_model_is_refused(profiled: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "branchy.onnx"
    onnx.save(branchy_model(), str(model))
    other = tmp_path / "other-parts"
    partition_model(model, other)
    result = neukonfig(
        "plan", other, "--profile-edge", profiled["edge"], "--profile-cloud", profiled["cloud"],
        "--bandwidth", "10mbit",
    )  # fmt: skip
    assert_clean_error(result, "sha256", "tiny", "branchy", str(profiled["edge"]))


def test_profile_of_the_wrong_role_is_refused(profiled: dict[str, Path]) -> None:
    result = neukonfig(
        "plan", profiled["parts"], "--profile-edge", profiled["cloud"],
        "--profile-cloud", profiled["cloud"], "--bandwidth", "10mbit",
    )  # fmt: skip
    assert_clean_error(result, "no edge timings", "--role edge")


def test_unreadable_profile_is_refused(profiled: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text('{"model": 3}')
    result = neukonfig(
        "plan", profiled["parts"], "--profile-edge", junk,
        "--profile-cloud", profiled["cloud"], "--bandwidth", "10mbit",
    )  # fmt: skip
    assert_clean_error(result, "junk.json", "not a valid profile")


def test_profile_of_a_directory_without_manifest(tmp_path: Path) -> None:
    result = neukonfig("profile", tmp_path, "--out", tmp_path / "p.json")
    assert_clean_error(result, "not a partition directory")
    assert not (tmp_path / "p.json").exists()


def test_profile_rejects_zero_threads(tmp_path: Path) -> None:
    result = neukonfig("profile", tmp_path, "--threads", "0", "--out", tmp_path / "p.json")
    assert result.returncode == 2
    assert "at least 1" in result.stderr


def test_a_codec_budget_lets_the_plan_pick_a_measured_lossy_codec(zoo_file, tmp_path: Path) -> None:
    """profile --codecs --accuracy, then plan with and without --max-top1-disagreement."""
    parts = tmp_path / "parts"
    partition_model(zoo_file("tiny"), parts)
    profile = tmp_path / "coded.json"
    made = neukonfig(
        "profile", parts, "--codecs", "int8,zstd", "--accuracy", "32", "--repeats", "2",
        "--warmup", "1", "--out", profile,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "accuracy of int8 over 32 seeded inputs" in made.stderr

    def options(*budget: str) -> set[str]:
        result = neukonfig(
            "plan", parts, "--profile-edge", profile, "--profile-cloud", profile,
            "--bandwidth", "1mbit", "--json", *budget,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return {row["codec"] for row in json.loads(result.stdout)["ranked"]}

    assert options() == {"none", "zstd"}, "lossless only by default"
    assert options("--max-top1-disagreement", "100%") == {"none", "zstd", "int8"}
    refused = neukonfig("plan", parts, "--profile-edge", profile, "--profile-cloud", profile,
                        "--bandwidth", "1mbit", "--max-top1-disagreement", "lots")  # fmt: skip
    assert refused.returncode == 2
    assert "'lots' is not a share" in refused.stderr
    assert "Traceback" not in refused.stderr
