"""The downtime report's arithmetic, on hand-made request traces."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from controller.history import Outcome, SwitchRecord
from controller.settings import StrategyName
from testbed.downtime import (
    CONTROL,
    DowntimeScenario,
    RawRun,
    analyse,
    answer_tolerance,
    estimate_reaction,
    latency_summary,
    longest_gap,
    markdown_table,
    summarize,
)
from testbed.edge_device import DeviceSpec
from testbed.probe_client import ATOL_OF_SCALE, RequestRecord
from tests.profile_cases import THREE_CUTS, profile_for, with_codecs


def record(sent: float, done: float, status: int = 200, cut: int | None = 0) -> RequestRecord:
    return RequestRecord(sent, done, status, status == 200, cut)


def scenario(**extra) -> DowntimeScenario:
    values = {
        "model": "tiny",
        "strategies": [StrategyName.SWITCH_STANDBY],
        "schedule": [(0.0, 50e6), (20.0, 2e6)],
        "rate_per_s": 10,
        "duration_s": 40.0,
        "workdir": Path("unused"),
    }
    return DowntimeScenario(**{**values, **extra})


def drop_run() -> RawRun:
    """Cut 0 at 0.1 s; after the drop at 20 s, 1 s requests until the flip to cut 11 at
    21.5 s (trigger 21.0 + 0.5 s to flip), then 0.2 s."""
    trace = [record(i / 10, i / 10 + 0.1) for i in range(200)]
    trace += [record(20 + i / 10, 21 + i / 10, cut=0) for i in range(15)]
    trace += [record(21.5 + i / 10, 21.7 + i / 10, cut=11) for i in range(185)]
    switch = SwitchRecord(
        strategy="switch_standby",
        from_cut=0,
        to_cut=11,
        reason="test",
        trigger_unix=1000.0 + 21.0,
        outcome=Outcome.SWITCHED,
        ready_after_s=0.4,
        switched_after_s=0.5,
        unavailable_s=0.0,
    )
    return RawRun(trace, [switch], started_unix=1000.0)


def test_longest_gap_is_between_successful_completions() -> None:
    trace = [record(0.0, 0.1), record(0.1, 0.2), record(0.2, 5.0, status=503), record(0.3, 0.9)]
    assert longest_gap(trace) == 0.7  # 0.2 -> 0.9; the failure does not count


def test_latency_summary_ignores_failures() -> None:
    trace = [record(0, 0.010), record(0, 0.020), record(0, 0.030), record(0, 9.0, status=0)]
    summary = latency_summary(trace)
    assert summary["count"] == 3
    assert summary["p50_ms"] == 20.0
    assert summary["max_ms"] == 30.0


def test_a_run_is_analysed_from_the_clients_side() -> None:
    run = analyse(drop_run(), scenario())
    (reaction,) = run["reactions"]
    assert (reaction["cut_before"], reaction["settled_cut"]) == (0, 11)
    assert reaction["to_right_cut_s"] == pytest.approx(1.7)  # first cut-11 answer at 21.7
    assert reaction["window_max_s"] == pytest.approx(1.0)
    (switch,) = run["switches"]
    assert switch["detected_after_s"] == 1.0
    assert switch["ready_after_s"] == 1.4
    assert switch["flipped_after_s"] == 1.5
    assert switch["in_flight_across"] == 11  # sent 20.5 .. 21.5: ten at cut 0, one at 11
    assert switch["first_on_new_max_s"] == pytest.approx(0.2)
    assert switch["unavailable_s"] == 0.0
    assert run["failed"] == 0


def test_answers_from_the_edges_own_tail_are_counted_by_reason() -> None:
    raw = drop_run()
    reasons = ["local-tail; reason=link-backlog"] * 3 + ["local-tail; reason=cloud-late"]
    for index, reason in enumerate(reasons, start=200):
        raw.records[index] = dataclasses.replace(raw.records[index], local=reason)
    run = analyse(raw, scenario())
    assert run["answered_on_the_edge"] == 4
    assert run["answered_on_the_edge_by_reason"] == {
        "local-tail; reason=link-backlog": 3,
        "local-tail; reason=cloud-late": 1,
    }
    assert run["trace"][200][5] == "local-tail; reason=link-backlog"


def test_the_estimate_is_timed_against_the_links_rate() -> None:
    # 50 mbit until the drop at 20 s; the estimate reads 30 mbit at 20.2 s (not within 25%
    # of 2 mbit), 2.4 mbit at 20.4 s (within), then wanders to 3 mbit after 23 s.
    estimates = [(t / 10, 50e6) for t in range(200)]
    estimates += [(20.2, 30e6), (20.4, 2.4e6)]
    estimates += [(20.5 + t / 10, 2.1e6) for t in range(25)]
    estimates += [(23.0 + t / 10, 3e6) for t in range(170)]
    reaction = estimate_reaction(estimates, 20.0, 40.0, 2e6)
    assert reaction["estimate_within_s"] == pytest.approx(0.4)
    # From 21 s: 20 samples at 2.1 mbit (21.0 .. 22.9), 170 at 3 mbit.
    assert reaction["estimate_share_within"] == pytest.approx(20 / 190, abs=1e-3)
    never = estimate_reaction([(21.0, 50e6)], 20.0, 40.0, 2e6)
    assert never["estimate_within_s"] is None


def test_repeats_give_the_median_and_the_range() -> None:
    runs = [analyse(drop_run(), scenario()) for _ in range(3)]
    runs[1]["failed"] = 4
    summary = summarize(runs)
    assert summary["failed"] == {"median": 0.0, "min": 0.0, "max": 4.0}
    assert summary["reactions"][0]["to_right_cut_s"]["median"] == pytest.approx(1.7)
    assert summary["unavailable_s"]["max"] == 0.0


def test_the_table_says_what_was_emulated_and_never_prints_an_assignment_as_downtime() -> None:
    device = DeviceSpec("pi4", cores=4, speed=0.125, memory_bytes=2 * 2**30, source="test")
    chosen = scenario(device=device)
    runs = {"switch_standby": [analyse(drop_run(), chosen)], CONTROL: []}
    report = {
        "emulated": chosen.emulated(),
        "repeats": 1,
        "rate_per_s": 10,
        "schedule": [{"at_s": 0.0, "bps": 50e6}, {"at_s": 20.0, "bps": 2e6}],
        "summary": {"switch_standby": summarize(runs["switch_standby"])},
    }
    table = markdown_table(report)
    assert "pi4: 4 cores at 0.125x" in table
    assert "0 (the pointer is never empty)" in table
    assert "µs" not in table


def test_the_sleep_fallback_is_said_in_words() -> None:
    emulated = scenario(edge_slowdown=8.0).emulated()
    assert "sleep-based slowdown x8" in emulated["edge"]


def test_plot_writes_a_png(tmp_path) -> None:
    from testbed.plot import plot_downtime

    run = {
        "requests": 3,
        "failed": 1,
        "trace": [[0.0, 0.1, 200, True, 0], [1.0, 1.2, 200, True, 11], [1.5, 9.0, 0, False, None]],
        "controller_trace": [[0.0, None, None], [0.5, 48e6, None], [1.5, 2.1e6, "cut 11"]],
        "switches": [
            {
                "from_cut": 0,
                "to_cut": 11,
                "change_s": 1.0,
                "detected_after_s": 0.2,
                "flipped_after_s": 0.4,
            }
        ],
    }
    report = {
        "model": "tiny",
        "rate_per_s": 2,
        "link": "test",
        "emulated": {"edge": "test", "link": "test"},
        "duration_s": 3.0,
        "schedule": [{"at_s": 0.0, "bps": 50e6}, {"at_s": 1.0, "bps": 2e6}],
        "runs": {"switch_standby": [run], CONTROL: [run]},
    }
    path = plot_downtime(report, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_answers_may_differ_by_twice_the_error_of_a_codec_the_budget_allows() -> None:
    """int8 at cut 1 disagrees on 0.4% of top-1s, and moved the outputs by 1% of their
    scale: allowed under a 1% budget, so answers may be 2% off; not under 0.3%."""
    profile = with_codecs(profile_for(THREE_CUTS, role="edge"), int8_agreement=0.996)
    assert answer_tolerance(profile, 0.01) == pytest.approx(0.02)
    assert answer_tolerance(profile, 0.003) == ATOL_OF_SCALE
