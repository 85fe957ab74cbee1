"""The picture people read before any number: latency over time, one panel per
strategy and one for the control run (the first repeat of each), with the link rate and
the moments each switch was decided and flipped marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes


def plot_downtime(report: dict, path: Path) -> Path:
    runs = {name: repeats[0] for name, repeats in report["runs"].items() if repeats}
    figure, axes = plt.subplots(
        len(runs), 1, figsize=(10, 3.2 * len(runs)), sharex=True, squeeze=False
    )
    for axis, (name, run) in zip(axes[:, 0], runs.items(), strict=True):
        _panel(axis, name, run, report)
    axes[-1, 0].set_xlabel("time since start (s)")
    figure.suptitle(
        f"{report['model']}: latency through bandwidth changes "
        f"({report['rate_per_s']:g} req/s open loop; edge: {report['emulated']['edge']}; "
        f"{report['link']})",
        fontsize=8,
        wrap=True,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _panel(axis: Axes, name: str, run: dict, report: dict) -> None:
    ok = [
        (sent, (done - sent) * 1e3)
        for sent, done, status, correct, *_ in run["trace"]
        if status == 200 and correct
    ]
    bad = [
        (sent, (done - sent) * 1e3)
        for sent, done, status, correct, *_ in run["trace"]
        if not (status == 200 and correct)
    ]
    if ok:
        axis.scatter(*zip(*ok, strict=True), s=6, color="tab:blue", label="answered")
    if bad:
        axis.scatter(*zip(*bad, strict=True), s=14, color="tab:red", marker="x", label="failed")
    axis.set_yscale("log")
    axis.set_ylabel("latency (ms)")
    for switch in run["switches"]:
        trigger = switch["change_s"] + switch["detected_after_s"]
        axis.axvline(trigger, color="tab:orange", linestyle="--", linewidth=1)
        if switch.get("flipped_after_s") is not None:
            flip = switch["change_s"] + switch["flipped_after_s"]
            axis.axvline(flip, color="tab:purple", linestyle=":", linewidth=1)
        axis.annotate(
            f"{switch['from_cut']}→{switch['to_cut']}",
            (trigger, 1),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            va="top",
            color="tab:orange",
        )
    rate = axis.twinx()
    steps = [(step["at_s"], step["bps"] / 1e6) for step in report["schedule"]]
    times = [at for at, _ in steps] + [report["duration_s"]]
    rates = [mbit for _, mbit in steps] + [steps[-1][1]]
    rate.step(times, rates, where="post", color="tab:green", linewidth=1, label="link rate")
    estimates = [(at, bps / 1e6) for at, bps, _ in run.get("controller_trace", []) if bps]
    if estimates:
        rate.plot(
            *zip(*estimates, strict=True),
            color="tab:olive",
            linewidth=0.8,
            linestyle="--",
            label="controller's estimate",
        )
        rate.legend(loc="upper left", fontsize=7)
    rate.set_ylabel("link (Mbit/s)", color="tab:green")
    failed = run["failed"]
    axis.set_title(f"{name}: {failed} failed of {run['requests']}", fontsize=9, loc="left")
    axis.legend(loc="upper right", fontsize=7)
