"""The Grafana dashboard and the Prometheus config in monitoring/ are valid, use only
metrics and labels the real services expose, and (with the real prometheus binary)
every panel's query returns data from a running stack."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from neukonfig.manifest import read_manifest
from testbed.monitoring import (
    CONTROLLER_JOB,
    GATEWAY_JOB,
    PARTITIONS_JOB,
    PrometheusServer,
    query,
    wait_for_panel_data,
)

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "neukonfig.json"
DATASOURCES = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = MONITORING / "grafana" / "provisioning" / "dashboards" / "neukonfig.yml"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
# Labels Prometheus itself attaches to every scraped series.
SCRAPE_LABELS = {"job", "instance"}

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="needs the prometheus binary: apt-get install -y prometheus (.ci/run installs it)",
)


def _panels() -> list[dict[str, object]]:
    return json.loads(DASHBOARD.read_text())["panels"]


def _datasource_uid() -> str:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return datasource["uid"]


# -- the files themselves --------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard_with_a_query_in_every_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    panels = _panels()
    assert len({p["id"] for p in panels}) == len(panels)
    uid = _datasource_uid()
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == uid
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == uid
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for wanted in ("status", "p50", "p99", "cut", "bandwidth", "switches", "downtime", "in-flight"):
        assert wanted in titles


def test_provisioning_points_grafana_at_prometheus_and_the_dashboard() -> None:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


def test_prometheus_config_scrapes_gateway_controller_and_discovered_partitions() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    interval = config["global"]["scrape_interval"]
    assert 2 <= int(interval.rstrip("s")) <= 5, interval
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {GATEWAY_JOB, CONTROLLER_JOB, PARTITIONS_JOB}  # as PrometheusServer
    assert jobs[GATEWAY_JOB]["static_configs"] == [{"targets": ["gateway:8000"]}]
    assert jobs[CONTROLLER_JOB]["static_configs"] == [{"targets": ["controller:8300"]}]
    (sd,) = jobs[PARTITIONS_JOB]["http_sd_configs"]
    assert sd["url"] == "http://controller:8300/v1/targets"


@pytest.mark.prometheus
@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian prometheus)")
def test_promtool_accepts_the_prometheus_config() -> None:
    checked = subprocess.run(
        ["promtool", "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the queries against what the real services expose ------------------------------------


def _exposed(addresses: list[str]) -> dict[str, set[str]]:
    """Series name -> label names, from the real /metrics of every address. A family
    with no samples yet still counts, by its TYPE line's series names."""
    series: dict[str, set[str]] = {}
    for address in addresses:
        text = httpx.get(f"http://{address}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for suffix in ("", "_total", "_bucket", "_sum", "_count", "_created"):
                series.setdefault(family.name + suffix, set())
            for sample in family.samples:
                series.setdefault(sample.name, set()).update(sample.labels)
    return series


def _labels_used(expr: str, legend: str) -> set[str]:
    grouped = {
        name.strip()
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
        for name in group.split(",")
        if name.strip()
    }
    matched = set(re.findall(r"[{,]\s*(\w+)\s*(?:=~|!~|!=|=)", expr))
    return grouped | matched | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))


def test_queries_use_only_metrics_and_labels_the_services_expose(stack) -> None:
    targets = httpx.get(f"{stack.controller_url}/v1/targets").json()
    addresses = [stack.gateway, stack.controller] + [t["targets"][0] for t in targets]
    exposed = _exposed(addresses)
    target_labels = {name for t in targets for name in t["labels"]}
    for panel in _panels():
        for target in panel["targets"]:
            expr = target["expr"]
            names = re.findall(r"\bneukonfig_\w+", expr)
            names = [n for n in names if n not in target_labels]
            assert names, f"{panel['title']}: no neukonfig_ metric in {expr}"
            unknown = [n for n in names if n not in exposed]
            assert not unknown, f"{panel['title']}: {unknown} are not exposed"
            allowed = set().union(*(exposed[n] for n in names)) | target_labels | SCRAPE_LABELS
            labels = _labels_used(expr, target.get("legendFormat", ""))
            assert labels <= allowed, f"{panel['title']}: unknown labels {labels - allowed}"


# -- real Prometheus: every panel has data ------------------------------------------------


def _switch(stack, strategy: str) -> None:
    """A manual switch through the controller's admin API, to another cut with a cloud side."""
    state = httpx.get(f"{stack.controller_url}/v1/state").json()
    last = read_manifest(stack.workdir / "tiny-partitions").num_cuts - 1
    cut = last - 2 if state["current_cut"] != last - 2 else 0
    answer = httpx.post(
        f"{stack.controller_url}/v1/switch",
        json={"cut": cut, "strategy": strategy},
        headers={"authorization": f"Bearer {stack.token}"},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "switched", answer.text


def _wait_for_at_least(
    url: str, expr: str, least: float, *, timeout: float
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        result = query(url, expr)
        if any(float(series["value"][1]) >= least for series in result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{expr} still {result} after {timeout:g} s")
        time.sleep(0.5)


@pytest.mark.prometheus
@needs_prometheus
def test_every_panel_query_returns_data_from_real_prometheus(stack) -> None:
    # Before scraping starts: the switch_on_demand series then exists, so that the second
    # switch shows in increase() (a series' first sample counts as no increase).
    _switch(stack, "switch_on_demand")
    started = time.monotonic()
    wall_started = time.time()
    with PrometheusServer(
        static_targets={GATEWAY_JOB: [stack.gateway], CONTROLLER_JOB: [stack.controller]},
        http_sd_url=f"{stack.controller_url}/v1/targets",
        scrape_interval_s=1.0,
    ) as prometheus:
        scraped = prometheus.wait_until_up([GATEWAY_JOB, CONTROLLER_JOB, PARTITIONS_JOB])
        # The http_sd target labels reached Prometheus: an edge, a cloud and the probe.
        roles = {t["labels"].get("neukonfig_role") for t in scraped}
        assert {"edge", "cloud", "probe"} <= roles, scraped
        # A few scrapes before the switch, so the counter has a before.
        before = 'count_over_time(neukonfig_switches_total{strategy="switch_on_demand"}[1m])'
        _wait_for_at_least(prometheus.url, before, 3, timeout=20)
        _switch(stack, "switch_on_demand")
        switched = 'max(increase(neukonfig_switches_total{strategy="switch_on_demand"}[5m]))'
        _wait_for_at_least(prometheus.url, switched, 1, timeout=20)
        # Every panel over the time Prometheus has run, within a few scrapes after the switch.
        empty = wait_for_panel_data(
            prometheus.url, DASHBOARD, start=wall_started, timeout=20, rate_interval="10s"
        )
        assert not empty, "\n".join(empty)
    print(f"prometheus scraped and answered every panel in {time.monotonic() - started:.1f} s")
