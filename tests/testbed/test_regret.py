"""The planner-regret bench end to end on the tiny model: real pipelines through a real
gateway over the shaping proxy, with a codec budget (the bench's own code path, which
no other test runs)."""

from __future__ import annotations

from pathlib import Path

from testbed.links import LinkKind
from testbed.regret import RegretScenario, markdown_table, run_regret


def test_the_regret_bench_measures_every_candidate_and_the_lossless_pick(tmp_path: Path) -> None:
    scenario = RegretScenario(
        model="tiny",
        bandwidths=[2e6],
        top=2,
        requests=3,
        seconds_per_cut=2.0,
        workdir=tmp_path,
        link=LinkKind.PROXY,
        codecs=("int8", "zstd"),
        accuracy_inputs=16,
        max_top1_disagreement=1.0,  # every measured int8 row allowed: coded rows compete
    )
    report = run_regret(scenario, lambda _message: None)
    (row,) = report["rows"]
    assert len(row["candidates"]) >= 2
    assert all(ms > 0 for ms in row["candidates"].values())
    assert row["planner_cut"] in row["candidates"]
    assert row["lossless_measured_ms"] > 0
    assert row["lossless_predicted_ms"] > 0
    assert report["accuracy_cuts"], "accuracy measured where a codec can win"
    assert "lossless-only pick" in markdown_table(report)
