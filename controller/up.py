"""``neukonfig up``: the embedded default. Gateway, partitions and controller as local
processes on this machine, no Docker.

It prepares what the controller needs (zoo model, partitions, edge and cloud profiles,
all cached in the work directory), starts the gateway, then runs the controller and
its API in this process. Optionally it emulates the edge-cloud link with the shaping
proxy, drives traffic, and changes the link rate on a schedule, so that a reader sees
the service move between cuts. Ctrl-C (or ``--duration``) stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from controller.app import create_app
from controller.assemble import build_controller
from controller.backends.local import LocalService, ServiceKind
from controller.core import Controller
from controller.pipelines import DirectLink, Link
from controller.settings import ControllerSettings, StrategyName
from models.runtime import Role, sample_input
from neukonfig.errors import NeukonfigError
from neukonfig.manifest import MANIFEST_FILE, Manifest, read_manifest
from neukonfig.units import format_bandwidth, parse_bandwidth, parse_duration
from testbed.probe_client import binary_infer_body
from testbed.shaped_link import ShapedLink

STATUS_EVERY_S = 2.0


@dataclass(frozen=True)
class PrepareOptions:
    """What ``prepare`` needs: the model and how the edge is profiled."""

    model: str
    workdir: Path
    edge_threads: int = 1
    edge_slowdown: float = 1.0
    profile_repeats: int = 5


@dataclass
class UpOptions:
    model: str
    workdir: Path
    strategy: StrategyName
    gateway_port: int
    controller_port: int
    edge_threads: int
    edge_slowdown: float
    link_rate: str | None
    schedule: list[tuple[float, float]]
    traffic_rate: float
    duration_s: float | None
    initial_bandwidth: str
    profile_repeats: int

    @property
    def preparation(self) -> PrepareOptions:
        return PrepareOptions(
            self.model, self.workdir, self.edge_threads, self.edge_slowdown, self.profile_repeats
        )


def say(message: str) -> None:
    print(f"[neukonfig up] {message}", flush=True)


def parse_schedule(text: str | None) -> list[tuple[float, float]]:
    """``50mbit@0,5mbit@20`` -> [(0.0, 50e6), (20.0, 5e6)], sorted by time."""
    if not text:
        return []
    steps = []
    for item in text.split(","):
        rate, _, at = item.strip().partition("@")
        if not at:
            raise NeukonfigError(
                f"schedule entry {item!r} must look like RATE@SECONDS, e.g. 5mbit@20"
            )
        steps.append((parse_duration(at), parse_bandwidth(rate)))
    return sorted(steps)


def prepare(options: PrepareOptions) -> tuple[Manifest, Path, Path, Path]:
    """Model, partitions and profiles in the work directory, reused when already there."""
    from models.partition import partition_model
    from models.profiler import profile_partitions
    from models.zoo import ZOO_MODELS, build_model
    from neukonfig.profiles import with_edge_slowdown, write_profile

    work = options.workdir
    work.mkdir(parents=True, exist_ok=True)
    source = Path(options.model)
    name = source.stem
    if options.model in ZOO_MODELS:
        name, source = options.model, work / f"{options.model}.onnx"
        if not source.exists():
            import onnx

            say(f"building {name} from the zoo ...")
            onnx.save(build_model(name), str(source))
    elif not source.is_file():
        raise NeukonfigError(
            f"--model {options.model!r} is neither a zoo model ({', '.join(ZOO_MODELS)}) "
            "nor an ONNX file"
        )
    parts = work / f"{name}-partitions"
    if not (parts / MANIFEST_FILE).exists():
        say(f"partitioning {source} at every cut into {parts} ...")
        partition_model(source, parts, name=name, progress=lambda m: None)
    manifest = read_manifest(parts)
    profiles = {}
    for role, threads in ((Role.EDGE, options.edge_threads), (Role.CLOUD, None)):
        slower = f"-x{options.edge_slowdown:g}" if role is Role.EDGE else ""
        path = work / f"{name}-{role.value}{slower}-t{threads or 'all'}-profile.json"
        if not path.exists():
            say(f"profiling the {role.value} side ({threads or 'all'} threads) into {path} ...")
            profile = profile_partitions(
                parts, roles=[role], threads=threads, warmup=1, repeats=options.profile_repeats
            )
            if role is Role.EDGE:
                profile = with_edge_slowdown(profile, options.edge_slowdown)
            write_profile(path, profile)
        profiles[role] = path
    return manifest, parts, profiles[Role.EDGE], profiles[Role.CLOUD]


STABLE_NAMES = ("partitions", "edge-profile.json", "cloud-profile.json")


def link_stable_names(work: Path, *targets: Path) -> list[tuple[Path, Path]]:
    """Point ``work/partitions`` and ``work/{edge,cloud}-profile.json`` at ``targets``.

    Container settings name these fixed paths, whatever the model and slowdown; the links
    are relative so they resolve in any container that mounts ``work`` anywhere.
    """
    linked = []
    for name, target in zip(STABLE_NAMES, targets, strict=True):
        link = work / name
        link.unlink(missing_ok=True)
        link.symlink_to(target.relative_to(work))
        linked.append((link, target))
    return linked


def local_gateway(
    parts: Path,
    manifest: Manifest,
    token: str,
    log: Path,
    port: int = 0,
    internal_token: str | None = None,
) -> LocalService:
    """The gateway process for a prepared partition directory (not started)."""
    settings = {
        "partition_dir": str(parts),
        "model_name": manifest.model.name,
        "admin_token": token,
    }
    if internal_token:
        settings["internal_token"] = internal_token
    return LocalService(ServiceKind.GATEWAY, settings, log, **({"port": port} if port else {}))


def embedded_settings(
    prepared: tuple[Manifest, Path, Path, Path],
    *,
    gateway: LocalService,
    token: str,
    strategy: StrategyName,
    state_dir: Path,
    edge_threads: int,
    edge_slowdown: float,
    initial_bandwidth: str,
    port: int = 8300,
    internal_token: str | None = None,
) -> ControllerSettings:
    """Controller settings for everything on this machine, stopping all it starts on exit."""
    manifest, parts, edge_profile, cloud_profile = prepared
    return ControllerSettings(
        partition_dir=parts,
        model_name=manifest.model.name,
        gateway_url=gateway.url,
        admin_token=token,
        edge_profile=edge_profile,
        cloud_profile=cloud_profile,
        strategy=strategy,
        state_dir=state_dir,
        port=port,
        edge_threads=edge_threads,
        edge_slowdown=edge_slowdown,
        initial_bandwidth=initial_bandwidth,
        stop_services_on_exit=True,
        internal_token=internal_token,
    )


def _check_port_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise NeukonfigError(
                f"port {port} is in use ({error.strerror}); choose another"
            ) from None


def run_up(options: UpOptions) -> int:
    for port in (options.gateway_port, options.controller_port):
        _check_port_free(port)
    prepared = prepare(options.preparation)
    manifest, parts = prepared[0], prepared[1]
    token = secrets.token_urlsafe(24)
    token_file = options.workdir / "admin-token"
    token_file.write_text(token + "\n")
    os.chmod(token_file, 0o600)
    link: Link = DirectLink()
    shaped: ShapedLink | None = None
    if options.link_rate:
        shaped = ShapedLink(rate_bps=parse_bandwidth(options.link_rate)).start_in_thread()
        link = shaped
    # The partition services answer only requests carrying this (gateway, edge, controller).
    internal_token = secrets.token_urlsafe(24)
    gateway = local_gateway(
        parts,
        manifest,
        token,
        options.workdir / "logs" / "gateway.log",
        options.gateway_port,
        internal_token=internal_token,
    )
    try:
        gateway.start().wait_ready()
        settings = embedded_settings(
            prepared,
            gateway=gateway,
            token=token,
            strategy=options.strategy,
            state_dir=options.workdir / "state",
            edge_threads=options.edge_threads,
            edge_slowdown=options.edge_slowdown,
            initial_bandwidth=options.link_rate or options.initial_bandwidth,
            port=options.controller_port,
            internal_token=internal_token,
        )
        controller = build_controller(settings, link=link)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how `up` is stopped
            asyncio.run(_serve(controller, options, gateway, manifest, shaped, token_file))
    finally:
        gateway.stop()
        if shaped is not None:
            shaped.stop()
    say("stopped everything it started")
    return 0


async def _serve(
    controller: Controller,
    options: UpOptions,
    gateway: LocalService,
    manifest: Manifest,
    shaped: ShapedLink | None,
    token_file: Path,
) -> None:
    config = uvicorn.Config(
        create_app(controller), host="127.0.0.1", port=options.controller_port, log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # raises what went wrong at start-up
            return
        await asyncio.sleep(0.05)
    _print_endpoints(controller, options, gateway, manifest, token_file)
    helpers = [asyncio.create_task(_status(controller, options))]
    stats = TrafficStats()
    traffic = None
    if options.traffic_rate > 0:
        traffic = asyncio.create_task(_traffic(gateway.url, manifest, options.traffic_rate, stats))
        helpers.append(traffic)
    if options.schedule and shaped is not None:
        helpers.append(asyncio.create_task(_schedule(shaped, options.schedule)))
    if options.duration_s is not None:
        helpers.append(asyncio.create_task(_stop_after(server, options.duration_s, traffic)))
    try:
        await serving
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        _print_summary(controller, stats)


def _print_endpoints(
    controller: Controller,
    options: UpOptions,
    gateway: LocalService,
    manifest: Manifest,
    token_file: Path,
) -> None:
    name = manifest.model.name
    active = controller.active
    say(f"serving {name}: cut {active.cut if active else '?'} of 0..{manifest.num_cuts - 1}")
    say(f"inference (OIP v2):  POST {gateway.url}/v2/models/{name}/infer")
    say(f"gateway metrics:     {gateway.url}/metrics")
    say(f"controller state:    http://127.0.0.1:{options.controller_port}/v1/state")
    say(f"controller metrics:  http://127.0.0.1:{options.controller_port}/metrics")
    say(f"admin token:         {token_file}")
    say(
        "Ctrl-C stops everything"
        + (f"; stopping after {options.duration_s:g} s" if options.duration_s else "")
    )


@dataclass
class TrafficStats:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)


async def _traffic(gateway_url: str, manifest: Manifest, rate: float, stats: TrafficStats) -> None:
    """Open-loop requests at ``rate`` per second, so a switch shows in what clients see."""
    spec = manifest.model.inputs[0]
    body, headers = binary_infer_body(spec.name, sample_input(spec, batch=1, seed=0))
    url = f"{gateway_url}/v2/models/{manifest.model.name}/infer"

    async def one(client: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        stats.sent += 1
        try:
            response = await client.post(url, content=body, headers=headers)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        stats.ok += ok
        stats.failed += not ok
        stats.latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=60) as client:
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                task = asyncio.create_task(one(client))
                pending.add(task)
                task.add_done_callback(pending.discard)
                await asyncio.sleep(1 / rate)
        finally:
            await asyncio.gather(*pending, return_exceptions=True)


async def _schedule(link: ShapedLink, steps: list[tuple[float, float]]) -> None:
    started = time.monotonic()
    for at, rate in steps:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        link.set_rate(rate)
        say(f"t={at:g}s link rate -> {format_bandwidth(rate)}")


async def _status(controller: Controller, options: UpOptions) -> None:
    seen = 0
    while True:
        await asyncio.sleep(STATUS_EVERY_S)
        for record in list(controller.history)[seen:]:
            downtime_ms = (record.downtime_s or 0) * 1e3
            say(
                f"switch {record.from_cut} -> {record.to_cut} ({record.strategy}): "
                f"{record.outcome.value}, ready after {record.ready_after_s or 0:.2f} s, "
                f"downtime {downtime_ms:.3f} ms"
            )
        seen = len(controller.history)
        estimate = controller.estimator.current
        say(
            f"cut {controller.active.cut if controller.active else '-'}, "
            f"bandwidth estimate {format_bandwidth(estimate) if estimate else 'n/a'}"
        )


async def _stop_after(
    server: uvicorn.Server, seconds: float, traffic: asyncio.Task[None] | None
) -> None:
    """Stop the demo traffic first (its last requests finish), then the servers."""
    await asyncio.sleep(seconds)
    if traffic is not None:
        traffic.cancel()
        await asyncio.gather(traffic, return_exceptions=True)
    server.should_exit = True


def _print_summary(controller: Controller, stats: TrafficStats) -> None:
    if stats.sent:
        p50 = float(np.percentile(stats.latencies, 50)) * 1e3 if stats.latencies else 0.0
        say(f"traffic: {stats.sent} sent, {stats.ok} ok, {stats.failed} failed, p50 {p50:.1f} ms")
    for record in controller.history:
        say(f"history: {json.dumps(record.as_dict())}")
