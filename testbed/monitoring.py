"""Prove the monitoring works: read the Grafana dashboard's queries, run the real
``prometheus`` binary against running services, and ask it those queries.

Independent of how the services were started (``neukonfig up``, docker compose, a
cluster): give ``PrometheusServer`` the host:port of the gateway and the controller, and
optionally the controller's ``/v1/targets`` URL, which lists the partition services for
Prometheus HTTP service discovery.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from controller.backends.local import free_port
from neukonfig.errors import NeukonfigError

# The job names of monitoring/prometheus/prometheus.yml; the dashboard may filter on them.
GATEWAY_JOB = "gateway"
CONTROLLER_JOB = "controller"
PARTITIONS_JOB = "partitions"

STOP_GRACE_S = 10.0
# Grafana's global variables, as they could appear in an expr ($x or ${x}).
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


class PrometheusError(NeukonfigError):
    """Prometheus would not start, or answered a query with an error."""

    status_code = 502


# -- the dashboard -----------------------------------------------------------------------


def panel_queries(
    dashboard_path: Path, *, rate_interval: str = "30s", range_: str = "5m"
) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, rows included, with Grafana's
    interval variables replaced by concrete windows so Prometheus can run them as is.
    A variable this function does not know is an error, not left in the query."""
    dashboard = json.loads(dashboard_path.read_text())
    values = {
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        "__range": range_,
    }
    queries = []
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                queries.append((panel.get("title", ""), _substitute(target["expr"], values)))
    return queries


def _panels(panels: list[dict[str, object]]) -> list[dict[str, object]]:
    """Panels in order; a collapsed row keeps its panels inside it."""
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))  # type: ignore[arg-type]
    return found


def _substitute(expr: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"dashboard variable ${name} has no value to substitute: {expr}")
        return values[name]

    return _VARIABLE.sub(one, expr)


# -- Prometheus ------------------------------------------------------------------------------


def prometheus_config(
    static_targets: dict[str, list[str]],
    *,
    http_sd_url: str | None = None,
    scrape_interval_s: float = 1.0,
) -> dict[str, object]:
    """A Prometheus config as a dict: one static job per entry of ``static_targets``
    (job name -> ["host:port"]), plus the partitions job discovered at ``http_sd_url``.
    JSON is YAML, so the dict can be written as JSON for Prometheus to read."""
    if scrape_interval_s <= 0:
        raise ValueError(f"scrape_interval_s must be positive, not {scrape_interval_s}")
    interval = f"{int(scrape_interval_s * 1000)}ms"
    jobs: list[dict[str, object]] = [
        {"job_name": job, "static_configs": [{"targets": targets}]}
        for job, targets in static_targets.items()
    ]
    if http_sd_url is not None:
        # Discovery as often as scraping: a new pipeline is scraped within one interval.
        sd = {"url": http_sd_url, "refresh_interval": interval}
        jobs.append({"job_name": PARTITIONS_JOB, "http_sd_configs": [sd]})
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }


class PrometheusServer:
    """The real ``prometheus`` binary on a free loopback port, with its config and storage
    in a temporary directory. As a context manager it waits until Prometheus is ready,
    and on exit always stops it (by PID) and removes the directory."""

    def __init__(
        self,
        *,
        static_targets: dict[str, list[str]],
        http_sd_url: str | None = None,
        scrape_interval_s: float = 1.0,
        binary: str = "prometheus",
        start_timeout_s: float = 30.0,
    ) -> None:
        self.config = prometheus_config(
            static_targets, http_sd_url=http_sd_url, scrape_interval_s=scrape_interval_s
        )
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self.url = ""
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        binary = shutil.which(self.binary)
        if binary is None:
            raise PrometheusError(
                f"no {self.binary!r} on PATH (Debian: apt-get install prometheus)"
            )
        self.workdir = Path(tempfile.mkdtemp(prefix="neukonfig-prometheus-"))
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps(self.config, indent=2))
        address = f"127.0.0.1:{free_port()}"
        self.url = f"http://{address}"
        command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={address}",
            "--log.level=warn",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "prometheus.log"

    def log_tail(self, lines: int = 30) -> str:
        if self.workdir is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {self.start_timeout_s:g} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_GRACE_S)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def targets(self) -> list[dict[str, object]]:
        """The active scrape targets, as Prometheus sees them (health, labels, errors)."""
        return _api(self.url, "/api/v1/targets", {"state": "active"})["activeTargets"]

    def wait_until_up(self, jobs: list[str], *, timeout: float = 30.0) -> list[dict[str, object]]:
        """Wait until every job has a target and every target of those jobs was scraped
        successfully; returns those targets."""
        deadline = time.monotonic() + timeout
        while True:
            found = [t for t in self.targets() if t["labels"]["job"] in jobs]
            seen = {t["labels"]["job"] for t in found}
            if seen == set(jobs) and all(t["health"] == "up" for t in found):
                return found
            if time.monotonic() > deadline:
                raise PrometheusError(f"targets of {jobs} not all up after {timeout:g} s: {found}")
            time.sleep(0.2)


def query(url: str, expr: str, *, timeout: float = 10.0) -> list[dict[str, object]]:
    """An instant query at ``url`` (a Prometheus base URL): the result vector's series."""
    data = _api(url, "/api/v1/query", {"query": expr}, timeout=timeout)
    return data["result"]


def query_range(
    url: str, expr: str, *, start: float, end: float, step_s: float = 1.0, timeout: float = 10.0
) -> list[dict[str, object]]:
    """A range query from ``start`` to ``end`` (Unix seconds), as a Grafana graph over that
    time range asks it: the result matrix's series, each with its points."""
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"}
    data = _api(url, "/api/v1/query_range", params, timeout=timeout)
    return data["result"]


def panels_without_data(
    url: str,
    dashboard_path: Path,
    *,
    start: float,
    end: float,
    rate_interval: str = "30s",
    range_: str = "5m",
) -> list[str]:
    """The panels (title: query) with no finite point between ``start`` and ``end`` (Unix
    seconds): those a Grafana graph of that time range would draw empty."""
    empty = []
    for title, expr in panel_queries(dashboard_path, rate_interval=rate_interval, range_=range_):
        series = query_range(url, expr, start=start, end=end)
        points = [float(value) for one in series for _, value in one["values"]]  # type: ignore[attr-defined]
        if not any(math.isfinite(point) for point in points):
            empty.append(f"{title}: {expr}")
    return empty


def wait_for_panel_data(
    url: str,
    dashboard_path: Path,
    *,
    start: float,
    timeout: float,
    poll_s: float = 0.5,
    rate_interval: str = "30s",
) -> list[str]:
    """Wait until every panel has data from ``start`` to now (the last scrapes may land a
    while after the traffic on a loaded machine); the panels still empty at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        empty = panels_without_data(
            url, dashboard_path, start=start, end=time.time(), rate_interval=rate_interval
        )
        if not empty or time.monotonic() > deadline:
            return empty
        time.sleep(poll_s)


def _api(
    url: str, path: str, params: dict[str, str], *, timeout: float = 10.0
) -> dict[str, object]:
    try:
        response = httpx.get(url + path, params=params, timeout=timeout)
        body = response.json()
    except (httpx.HTTPError, ValueError) as error:
        raise PrometheusError(f"GET {url}{path} failed: {error}") from error
    if body.get("status") != "success":
        raise PrometheusError(f"GET {url}{path} {params}: {body.get('error', body)}")
    return body["data"]
