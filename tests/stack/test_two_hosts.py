"""A Pi + server deployment on two Docker engines, for real.

The server is a second engine in its own network namespace (``testbed.server_engine``),
its API on TLS; a shaped veth between the namespaces is the WAN. The server runs
docker-compose.cloud.yml (cloud image, partitions, the cloud's profile); its profile is
handed to the edge, which runs docker-compose.yml with docker-compose.edge.yml. The
edge's controller starts every cloud partition on the server's engine, and the tensor
crosses the WAN over mutual TLS.

- inference through the edge's gateway gives the full model's answer, the active
  pipeline's tail running on the server and reached over https;
- the WAN drops from 50 to 5 mbit under traffic: the controller switches to a cut for
  the slow link (whose tail, if it has one, it starts on the server), with no failed
  request and every answer checked;
- ``down`` on both hosts leaves no container, network or volume on either engine.

Needs root, an engine and ``dockerd`` (.ci/run provides them). MobileNetV2, edge
emulated 8x slower by sleeping (as in test_compose.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from controller.backends.local import free_port
from testbed.probe_client import ProbeCase, ProbeClient, RequestRecord
from testbed.server_engine import SERVER_ADDRESS, ServerEngine
from tests.stack.compose_stack import HIGH, LOW, LOW_CUTS, MODEL, ROOT
from tests.stack.helpers import ControllerApi, probe, volume_cases, wait_for_cut, wait_serving

pytestmark = [pytest.mark.docker, pytest.mark.root]

IMAGE_UID = 10001  # the images' user: it reads the certificates
START_TIMEOUT_S = 300
SWITCH_TIMEOUT_S = 90


@dataclass
class Hosts(ControllerApi):
    edge_project: str
    edge_env_file: Path
    gateway: str
    controller: str
    server: ServerEngine
    data: Path = Path()

    def edge(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        files = ["-f", "docker-compose.yml", "-f", "docker-compose.edge.yml"]
        command = ["docker", "compose", "-p", self.edge_project, *files]
        return _run([*command, "--env-file", str(self.edge_env_file), *args], check=check)

    def cloud(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "-f", "docker-compose.cloud.yml", *args]
        env = {**self.server.docker_env(), "BASE_IMAGE": os.environ.get("BASE_IMAGE", "")}
        return _run(command, check=check, env=env)

    def logs(self) -> str:
        return self.edge("logs", "--tail", "60", check=False).stdout


def _run(
    command: list[str], *, check: bool, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def hosts(engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    work = tmp_path_factory.mktemp("two-hosts")
    gateway_port, controller_port = free_port(), free_port()
    with ServerEngine(work / "server", rate_bps=HIGH) as server:
        certs = server.certificates
        env_file = work / "edge.env"
        env_file.write_text(
            f"NEUKONFIG_ADMIN_TOKEN={secrets.token_urlsafe(24)}\n"
            f"NEUKONFIG_INTERNAL_TOKEN={secrets.token_urlsafe(24)}\n"
            f"DOCKER_GID={os.stat('/var/run/docker.sock').st_gid}\n"
            f"NEUKONFIG_MODEL={MODEL}\n"
            "NEUKONFIG_EDGE_SLOWDOWN=8\n"
            "NEUKONFIG_EDGE_MAX_QUEUE_WAIT_S=4\n"  # test_compose.py says why
            "NEUKONFIG_STRATEGY=switch_on_demand\n"
            f"NEUKONFIG_GATEWAY_PORT={gateway_port}\n"
            f"NEUKONFIG_CONTROLLER_PORT={controller_port}\n"
            f"NEUKONFIG_SERVER={SERVER_ADDRESS}\n"
            f"NEUKONFIG_CERTS_DIR={certs.root}\n"
            f"NEUKONFIG_CLOUD_PROFILE_FILE={work / 'cloud-profile.json'}\n"
            f"BASE_IMAGE={os.environ.get('BASE_IMAGE', 'python:3.11-slim')}\n"
        )
        hosts = Hosts(
            edge_project=f"nk2h{secrets.token_hex(3)}",
            edge_env_file=env_file,
            gateway=f"http://127.0.0.1:{gateway_port}",
            controller=f"http://127.0.0.1:{controller_port}",
            server=server,
        )
        yield from _deploy(hosts, engine, work)


def _deploy(hosts: Hosts, engine, work: Path) -> Iterator[Hosts]:
    try:
        started = time.monotonic()
        hosts.edge("build")
        # No registry here: the server gets the cloud image from this engine, where a
        # real server builds it (docker compose -f docker-compose.cloud.yml build).
        hosts.server.load_images("neukonfig-cloud:latest")
        hosts.cloud("run", "--rm", "prepare")
        handed = hosts.cloud("run", "--rm", "prepare", "cat", "/data/cloud-profile.json")
        (work / "cloud-profile.json").write_text(handed.stdout)
        for side in (hosts.server.certificates.edge, hosts.server.certificates.cloud):
            for path in (side, *side.iterdir()):
                os.chown(path, IMAGE_UID, IMAGE_UID)
        hosts.edge("up", "-d")
        wait_serving(
            hosts.gateway,
            hosts.state,
            lambda: hosts.edge("logs", "--tail", "60", check=False).stdout,
            START_TIMEOUT_S,
        )
        print(f"\ntwo hosts deployed and serving in {time.monotonic() - started:.0f} s")
        mountpoint = engine.volumes.get(f"{hosts.edge_project}_data").attrs["Mountpoint"]
        hosts.data = Path(mountpoint)
        yield hosts
    except subprocess.CalledProcessError as error:
        logs = hosts.edge("logs", "--tail", "40", check=False).stdout
        pytest.fail(f"{error.cmd} failed:\n{error.stderr}\n{logs}")
    finally:
        hosts.edge("down", "-v", "--remove-orphans", check=False)
        hosts.cloud("down", "-v", "--remove-orphans", check=False)


@pytest.fixture(scope="module")
def full_model(hosts: Hosts) -> list[ProbeCase]:
    return volume_cases(hosts.data, MODEL)


def _probe(hosts: Hosts, cases: list[ProbeCase], rate: float) -> ProbeClient:
    return probe(hosts.gateway, MODEL, cases, rate)


def _active(hosts: Hosts) -> dict[str, object]:
    state = hosts.state()
    pipelines: list[dict[str, object]] = state["pipelines"]  # type: ignore[assignment]
    return next(p for p in pipelines if p["id"] == state["active"])


def test_the_tail_runs_on_the_server_over_mutual_tls(hosts: Hosts, full_model, engine) -> None:
    client = _probe(hosts, full_model, rate=5)

    async def two_seconds() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(2.0, stop.set)
        await client.run(stop)

    asyncio.run(two_seconds())
    assert client.records
    assert all(r.status == 200 and r.correct for r in client.records), client.records[:3]
    active = _active(hosts)
    assert str(active["cloud_url"]).startswith(f"https://{SERVER_ADDRESS}:"), active
    server = hosts.server.client()
    try:
        tails = server.containers.list(filters={"label": "neukonfig.role=cloud"})
        assert {c.labels["neukonfig.pipeline"] for c in tails} >= {active["id"]}
    finally:
        server.close()
    on_edge = engine.containers.list(
        filters={"label": [f"neukonfig.instance={hosts.edge_project}", "neukonfig.role=cloud"]}
    )
    assert not on_edge, "a cloud partition runs on the edge's engine"
    # Plain HTTP, or TLS without the edge's certificate, gets nothing from the tail.
    port = str(active["cloud_url"]).rsplit(":", 1)[1]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{SERVER_ADDRESS}:{port}/health/ready", timeout=5)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"https://{SERVER_ADDRESS}:{port}/health/ready", timeout=5, verify=False)


def test_a_wan_drop_switches_with_no_failed_request(hosts: Hosts, full_model) -> None:
    client = _probe(hosts, full_model, rate=4)
    split = _wait_for(hosts, lambda cut: cut is not None and cut not in LOW_CUTS, "a split cut")
    before = len(hosts.switches())
    try:
        records, dropped_at = asyncio.run(_through_drop(hosts, client))
        after = _active(hosts)
    finally:
        hosts.server.set_rate(HIGH)
    switches = hosts.switches()[before:]
    failed = [r for r in records if not (r.status == 200 and r.correct)]
    assert not failed, f"{len(failed)} of {len(records)} failed: {failed[:3]}; {switches}"
    done = [s for s in switches if s["outcome"] == "switched"]
    assert any(s["to_cut"] in LOW_CUTS for s in done), f"no switch for 5 mbit: {switches}"
    assert all(s["unavailable_s"] == 0.0 for s in done), "the pointer was never empty"
    # Cuts 70 and 71 keep a tail (the pooled features cross): started on the server.
    tail = after["cloud_url"]
    assert tail is None or str(tail).startswith(f"https://{SERVER_ADDRESS}:"), after
    _report(split, records, dropped_at, done)


async def _through_drop(hosts: Hosts, client: ProbeClient) -> tuple[list[RequestRecord], float]:
    """Traffic for 5 s at 50 mbit, then at 5 mbit until the controller has switched and
    5 s more; the records, and when (on the client's clock) the WAN dropped."""
    stop = asyncio.Event()
    traffic = asyncio.create_task(client.run(stop))
    await asyncio.sleep(5)
    dropped_at = time.perf_counter() - client.started
    hosts.server.set_rate(LOW)
    await asyncio.to_thread(_wait_for, hosts, lambda cut: cut in LOW_CUTS, "a cut for 5 mbit")
    await asyncio.sleep(5)
    stop.set()
    return await traffic, dropped_at


def _report(split: int, records: list[RequestRecord], dropped_at: float, switches: list) -> None:
    """What the closing note quotes: time to the new pipeline, latency around the switch."""

    def latencies(start: float, end: float) -> str:
        chosen = sorted(r.latency_s for r in records if start <= r.sent_s < end)
        if not chosen:
            return "no requests"
        p99 = chosen[min(len(chosen) - 1, int(0.99 * len(chosen)))]
        return f"n={len(chosen)} p50 {statistics.median(chosen):.3f} s, p99 {p99:.3f} s"

    print(f"\nsplit cut before the drop: {split}")
    print(f"steady at 50 mbit: {latencies(0.0, dropped_at)}")
    print(f"10 s after the drop to 5 mbit: {latencies(dropped_at, dropped_at + 10)}")
    for switch in switches:
        print(
            f"switch {switch['from_cut']} -> {switch['to_cut']}: new pipeline ready "
            f"{switch['ready_after_s']:.2f} s after the trigger, flipped at "
            f"{switch['switched_after_s']:.2f} s"
        )


def _wait_for(hosts: Hosts, wanted: Callable[[int | None], bool], what: str) -> int:
    return wait_for_cut(hosts.state, wanted, what, SWITCH_TIMEOUT_S)


def test_down_on_both_hosts_leaves_nothing_on_either_engine(hosts: Hosts, engine) -> None:
    hosts.edge("down", "-v", "--remove-orphans")
    hosts.cloud("down", "-v", "--remove-orphans")
    project = hosts.edge_project
    on_edge = engine.containers.list(all=True, filters={"label": f"neukonfig.instance={project}"})
    on_edge += engine.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project}"}
    )
    edge_networks = [n.name for n in engine.networks.list() if n.name.startswith(project)]
    edge_volumes = [v.name for v in engine.volumes.list() if v.name.startswith(project)]
    assert (on_edge, edge_networks, edge_volumes) == ([], [], [])
    server = hosts.server.client()
    try:
        left = (
            [c.name for c in server.containers.list(all=True)],
            [n.name for n in server.networks.list() if n.name not in ("bridge", "host", "none")],
            [v.name for v in server.volumes.list()],
        )
    finally:
        server.close()
    assert left == ([], [], []), f"left on the server: {left}"
