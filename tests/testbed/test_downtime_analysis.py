"""The downtime report's arithmetic, on hand-made request traces."""

from __future__ import annotations

from controller.history import Outcome, SwitchRecord
from testbed.downtime import _switch_view, latency_summary, longest_gap
from testbed.probe_client import RequestRecord


def record(sent: float, done: float, status: int = 200, cut: int | None = 0) -> RequestRecord:
    return RequestRecord(sent, done, status, status == 200, cut)


def test_longest_gap_is_between_successful_completions() -> None:
    trace = [record(0.0, 0.1), record(0.1, 0.2), record(0.2, 5.0, status=503), record(0.3, 0.9)]
    assert longest_gap(trace) == 0.7  # 0.2 -> 0.9; the failure does not count


def test_latency_summary_ignores_failures() -> None:
    trace = [record(0, 0.010), record(0, 0.020), record(0, 0.030), record(0, 9.0, status=0)]
    summary = latency_summary(trace)
    assert summary["count"] == 3
    assert summary["p50_ms"] == 20.0
    assert summary["max_ms"] == 30.0


def test_switch_times_are_measured_from_the_bandwidth_change() -> None:
    switch = SwitchRecord(
        strategy="switch_standby",
        from_cut=0,
        to_cut=11,
        reason="test",
        trigger_unix=1000.0 + 21.5,
        outcome=Outcome.SWITCHED,
        ready_after_s=0.5,
        switched_after_s=0.6,
        unavailable_s=0.0,
    )
    trace = [record(21.0, 21.4, cut=0), record(22.0, 22.3, cut=11)]
    view = _switch_view(switch, 1000.0, [20.0, 40.0], trace)
    assert view["detected_after_s"] == 1.5
    assert view["ready_after_s"] == 2.0
    assert view["first_served_after_s"] == 2.3
    assert view["window_end_s"] == 23.3


def test_plot_writes_a_png(tmp_path) -> None:
    from testbed.plot import plot_downtime

    run = {
        "requests": 3,
        "failed": 1,
        "trace": [[0.0, 0.1, 200, True, 0], [1.0, 1.2, 200, True, 11], [1.5, 9.0, 0, False, None]],
        "switches": [{"from_cut": 0, "to_cut": 11, "change_s": 1.0, "detected_after_s": 0.2}],
    }
    report = {
        "model": "tiny",
        "rate_per_s": 2,
        "link": "test",
        "duration_s": 3.0,
        "schedule": [{"at_s": 0.0, "bps": 50e6}, {"at_s": 1.0, "bps": 2e6}],
        "strategies": {"switch_standby": run, "pause_resume": run},
    }
    path = plot_downtime(report, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
