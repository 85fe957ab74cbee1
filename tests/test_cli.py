"""The ``neukonfig`` command as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest

from tests.cli_run import assert_clean_error, neukonfig
from tests.graphs import BRANCHY_CUTS, two_input_model


def test_zoo_build_cuts_and_partition_end_to_end(tmp_path: Path) -> None:
    model = tmp_path / "tiny.onnx"
    built = neukonfig("zoo", "build", "tiny", "--out", model)
    assert built.returncode == 0, built.stderr
    assert "parameters" in built.stdout
    listed = neukonfig("cuts", model, "--json")
    cuts = json.loads(listed.stdout)
    assert cuts[0]["kind"] == "all_cloud"
    assert cuts[-1]["kind"] == "all_edge"
    parted = neukonfig("partition", model, "--out", tmp_path / "parts", "--verify")
    assert parted.returncode == 0, parted.stderr
    assert f"wrote {len(cuts)} of {len(cuts)} cuts" in parted.stdout
    assert f"verified {len(cuts) - 2} split cuts" in parted.stdout
    assert "[1/" in parted.stderr  # progress goes to stderr


def test_cuts_table_lists_every_cut(branchy_file: Path) -> None:
    result = neukonfig("cuts", branchy_file)
    assert result.returncode == 0
    assert f"{len(BRANCHY_CUTS)} cut points" in result.stdout
    assert "all_edge" in result.stdout


def test_not_an_onnx_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a model\n" * 10)
    assert_clean_error(neukonfig("cuts", junk), "junk.onnx")


def test_truncated_onnx_file(zoo_file, tmp_path: Path) -> None:
    whole = zoo_file("tiny").read_bytes()
    cut_short = tmp_path / "truncated.onnx"
    cut_short.write_bytes(whole[: len(whole) // 2])
    assert_clean_error(neukonfig("cuts", cut_short), "truncated.onnx")


def test_missing_file(tmp_path: Path) -> None:
    assert_clean_error(neukonfig("cuts", tmp_path / "absent.onnx"), "no such file")


def test_several_graph_inputs(tmp_path: Path) -> None:
    path = tmp_path / "two.onnx"
    onnx.save(two_input_model(), str(path))
    assert_clean_error(neukonfig("cuts", path), "2 graph inputs", "single-input")


@pytest.mark.parametrize(
    ("cuts", "fragments"),
    [
        ("42", ("cut index 42 does not exist", "0..8")),
        ("no_such_tensor", ("'no_such_tensor' does not exist",)),
        ("e", ("'e' is not a valid cut", "'d'", "skip connection")),
    ],
)
def test_bad_cut_requests(branchy_file: Path, tmp_path: Path, cuts: str, fragments) -> None:
    out = tmp_path / "parts"
    assert_clean_error(
        neukonfig("partition", branchy_file, "--out", out, "--cuts", cuts), *fragments
    )
    assert not out.exists(), "a refused request must not leave files behind"


def test_output_dir_of_another_model(zoo_file, branchy_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    assert neukonfig("partition", branchy_file, "--out", out, "--cuts", "1").returncode == 0
    result = neukonfig("partition", zoo_file("tiny"), "--out", out)
    assert_clean_error(result, "different model", "branchy")


def test_unknown_zoo_model(tmp_path: Path) -> None:
    assert_clean_error(
        neukonfig("zoo", "build", "alexnet", "--out", tmp_path / "a.onnx"), "alexnet"
    )


def test_usage_errors_exit_2() -> None:
    result = neukonfig("partition")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_prepare_writes_the_fixed_paths_containers_use(tmp_path: Path) -> None:
    work = tmp_path / "data"
    result = neukonfig("prepare", "--model", "tiny", "--workdir", work, "--profile-repeats", "1")
    assert result.returncode == 0, result.stderr
    assert (work / "partitions" / "manifest.json").is_file()
    for name in ("edge-profile.json", "cloud-profile.json"):
        assert json.loads((work / name).read_text())["cuts"]
    assert (work / "partitions").readlink() == Path("tiny-partitions"), "relative, for volumes"
    again = neukonfig("prepare", "--model", "tiny", "--workdir", work)
    assert again.returncode == 0, again.stderr
    assert "profiling" not in again.stdout, "a second prepare reuses what is there"


def test_prepare_unknown_model(tmp_path: Path) -> None:
    assert_clean_error(
        neukonfig("prepare", "--model", "resnet9000", "--workdir", tmp_path),
        "neither a zoo model",
        "mobilenetv2",
    )


def test_shape_says_what_is_wrong_in_one_line(tmp_path: Path, monkeypatch) -> None:
    assert_clean_error(neukonfig("shape", "5mbot"), "bandwidth '5mbot' is not understood")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    expected = "cannot reach the Docker engine" if os.geteuid() == 0 else "run it as root"
    assert_clean_error(neukonfig("shape", "5mbit", "--duration", "1s"), expected)


def test_a_codec_budget_without_codecs_is_refused_at_once(tmp_path: Path) -> None:
    result = neukonfig(
        "bench", "downtime", "--max-top1-disagreement", "1%", "--workdir", tmp_path / "work"
    )
    assert_clean_error(result, "--max-top1-disagreement needs --codecs")
    assert not (tmp_path / "work").exists(), "refused before any work"
