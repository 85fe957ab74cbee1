"""``neukonfig up``: the embedded default. Gateway, partitions and controller as local
processes on this machine, no Docker.

It prepares what the controller needs (zoo model, partitions, edge and cloud profiles,
all cached in the work directory), starts the embedded stack (``controller.embedded``)
and serves the controller's API from this process. Optionally it emulates the
edge-cloud link with the shaping proxy, changes its rate on a schedule, and drives
open-loop traffic that checks every answer, so that a reader sees the service move
between cuts and what clients felt. Ctrl-C, SIGTERM or ``--duration`` stop everything
it started, and print the same last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import uvicorn

from controller.app import create_app
from controller.backends.process import EdgePlacement, ProcessBackend
from controller.embedded import EmbeddedStack, embedded_stack
from controller.settings import StrategyName
from models.prepare import Prepared, PrepareOptions, model_source, prepare
from neukonfig.errors import NeukonfigError
from neukonfig.tls import Certificates
from neukonfig.units import format_bandwidth, parse_bandwidth
from testbed.client_felt import reactions
from testbed.downtime import edge_budget
from testbed.edge_device import DeviceSpec, EdgeDevice
from testbed.links import LINK_DESCRIPTIONS, LinkKind, open_link
from testbed.netns import TcLink
from testbed.probe_client import ProbeCase, ProbeClient, RequestRecord, failure_reasons
from testbed.probe_client import reference_cases as make_reference_cases
from testbed.shaped_link import ShapedLink

STATUS_EVERY_S = 5.0
SWITCH_POLL_S = 0.2
# On a stop, requests already sent get this long to finish before the servers go.
TRAFFIC_DRAIN_S = 15.0
LAST_LINE = "stopped everything it started"


@dataclass(frozen=True)
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
    device: DeviceSpec | None = None
    link_kind: LinkKind = LinkKind.PROXY
    hosted: bool = False  # partitions as sessions in one host process per side
    tls: bool = False  # mutual TLS between edge and cloud partitions (certificates in workdir)

    @property
    def preparation(self) -> PrepareOptions:
        slowdown = 1 / self.device.speed if self.device else self.edge_slowdown
        return PrepareOptions(
            self.model, self.workdir, self.edge_threads, slowdown, self.profile_repeats
        )


def say(message: str) -> None:
    print(f"[neukonfig up] {message}", flush=True)


def check_port_free(port: int) -> None:
    """Refuse a port another process listens on. SO_REUSEADDR, as the services themselves
    bind, so the TIME-WAIT connections of a run that just stopped do not count."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise NeukonfigError(
                f"port {port} is in use ({error.strerror}); choose another"
            ) from None


def run_up(options: UpOptions) -> int:
    # systemd, Docker and Kubernetes stop with SIGTERM: it must clean up as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    model_source(options.model, options.workdir)  # a bad --model is the first thing said
    for port in (options.gateway_port, options.controller_port):
        check_port_free(port)
    with contextlib.suppress(KeyboardInterrupt):
        _prepare_and_serve(options)
    say(LAST_LINE)
    return 0


def _prepare_and_serve(options: UpOptions) -> None:
    prepared = prepare(options.preparation, progress=say)
    cases: list[ProbeCase] = []
    if options.traffic_rate > 0:
        say("computing reference answers for the demo traffic from the original model ...")
        cases = make_reference_cases(prepared.model_file, prepared.manifest.model.inputs[0])
    with contextlib.ExitStack() as resources:
        placement = None
        if options.device is not None:
            device = resources.enter_context(EdgeDevice(options.device))
            placement = device.command_prefix
            say(f"edge device {options.device.describe()}")
        elif options.edge_slowdown > 1:
            say(
                f"edge emulated by sleeping (x{options.edge_slowdown:g}), not by cgroups: it "
                "may use every core of this machine, and loads are not slowed"
            )
        certificates = None
        if options.tls:
            certificates = Certificates.ensure(options.workdir / "certs")
            say(
                f"mutual TLS between edge and cloud partitions, certificates in {certificates.root}"
            )
        link = backend = None
        if options.link_rate:
            link, backend = open_link(
                options.link_kind,
                rate_bps=parse_bandwidth(options.link_rate),
                state_dir=options.workdir / "state",
                edge_placement=placement,
                tls_dir=certificates.edge if certificates else None,
            )
            resources.callback(link.close)
            say(f"link: {LINK_DESCRIPTIONS[options.link_kind]} at {options.link_rate}")
        _serve_stack(options, prepared, cases, link, backend, placement, certificates)


def _serve_stack(
    options: UpOptions,
    prepared: Prepared,
    cases: list[ProbeCase],
    link: ShapedLink | TcLink | None,
    backend: ProcessBackend | None,
    placement: EdgePlacement | None,
    certificates: Certificates | None,
) -> None:
    with embedded_stack(
        prepared,
        state_dir=options.workdir / "state",
        strategy=options.strategy,
        link=link,
        backend=backend,
        gateway_port=options.gateway_port,
        controller_port=options.controller_port,
        initial_bandwidth=options.link_rate or options.initial_bandwidth,
        edge_threads=options.edge_threads,
        edge_slowdown=1.0 if options.device else options.edge_slowdown,
        edge_placement=placement,
        settings={"hosted_partitions": options.hosted, **edge_budget(options.device)},
        certificates=certificates,
    ) as stack:
        token_file = options.workdir / "admin-token"
        token_file.write_text(stack.admin_token + "\n")
        os.chmod(token_file, 0o600)
        asyncio.run(_serve(stack, options, prepared, link, cases, token_file))
        # Closing the event loop reset SIGTERM to its default: stop cleanly still.
        signal.signal(signal.SIGTERM, signal.default_int_handler)


async def _serve(
    stack: EmbeddedStack,
    options: UpOptions,
    prepared: Prepared,
    link: ShapedLink | TcLink | None,
    cases: list[ProbeCase],
    token_file: Path,
) -> None:
    config = uvicorn.Config(
        create_app(stack.controller),
        host="127.0.0.1",
        port=options.controller_port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # raises what went wrong at start-up
            return
        await asyncio.sleep(0.05)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Replaces uvicorn's handlers: first the traffic stops, then the servers.
        loop.add_signal_handler(signum, stop.set)
    _print_endpoints(stack, options, prepared, token_file)
    client = None
    tasks = [asyncio.create_task(_report(stack))]
    if cases:
        client = ProbeClient(
            url=stack.infer_url,
            input_name=prepared.manifest.model.inputs[0].name,
            cases=cases,
            rate_per_s=options.traffic_rate,
        )
        traffic = asyncio.create_task(client.run(stop))
    if options.schedule and link is not None:
        tasks.append(asyncio.create_task(_schedule(link, options.schedule)))
    if options.duration_s is not None:
        tasks.append(asyncio.create_task(_stop_after(stop, options.duration_s)))
    await asyncio.wait([asyncio.create_task(stop.wait()), serving], return_when="FIRST_COMPLETED")
    stop.set()
    records: list[RequestRecord] = []
    if client is not None:
        with contextlib.suppress(asyncio.TimeoutError):  # not the builtin on Python 3.10
            records = await asyncio.wait_for(traffic, TRAFFIC_DRAIN_S)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    server.should_exit = True
    await serving
    _print_summary(stack, options, records or (client.records if client else []))


def _print_endpoints(
    stack: EmbeddedStack, options: UpOptions, prepared: Prepared, token_file: Path
) -> None:
    name = prepared.manifest.model.name
    active = stack.controller.active
    gateway = stack.gateway.url
    controller = f"http://127.0.0.1:{options.controller_port}"
    last = prepared.manifest.num_cuts - 1
    say(f"serving {name}: cut {active.cut if active else '?'} of 0..{last}")
    say(f"inference (OIP v2):  POST {stack.infer_url}")
    say(f"server metadata:     {gateway}/v2")
    say(f"health:              {gateway}/v2/health/live, {gateway}/v2/health/ready")
    say(f"model:               {gateway}/v2/models/{name}, {gateway}/v2/models/{name}/ready")
    say(f"gateway metrics:     {gateway}/metrics")
    say(f"controller state:    {controller}/v1/state")
    say(f"switch history:      {controller}/v1/history")
    say(f"scrape targets:      {controller}/v1/targets (every partition's /metrics)")
    say(f"controller metrics:  {controller}/metrics")
    say(f"manual switch:       POST {controller}/v1/switch (Authorization: Bearer TOKEN)")
    say(f"admin token:         {token_file}")
    say(
        "Ctrl-C stops everything"
        + (f"; stopping after {options.duration_s:g} s" if options.duration_s else "")
    )


async def _report(stack: EmbeddedStack) -> None:
    """A switch's line once it has finished (with its real figures); the cut and the
    estimate every few seconds."""
    controller = stack.controller
    printed = 0
    last_status = time.monotonic()
    while True:
        await asyncio.sleep(SWITCH_POLL_S)
        history = list(controller.history)
        while printed < len(history) and history[printed].finished:
            say(history[printed].describe())
            printed += 1
        if time.monotonic() - last_status >= STATUS_EVERY_S:
            last_status = time.monotonic()
            estimate = controller.estimator.current
            say(
                f"cut {controller.active.cut if controller.active else '-'}, "
                f"bandwidth estimate {format_bandwidth(estimate) if estimate else 'n/a'}"
            )


async def _schedule(link: ShapedLink | TcLink, steps: list[tuple[float, float]]) -> None:
    started = time.monotonic()
    for at, rate in steps:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        link.set_rate(rate)
        say(f"t={at:g}s link rate -> {format_bandwidth(rate)}")


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    stop.set()


def _print_summary(stack: EmbeddedStack, options: UpOptions, records: list[RequestRecord]) -> None:
    if records:
        ok = [r for r in records if r.ok]
        latencies = np.asarray([r.latency_s for r in ok]) * 1e3
        figures = (
            f"p50 {np.percentile(latencies, 50):.1f} ms, p99 {np.percentile(latencies, 99):.1f} "
            f"ms, max {latencies.max():.1f} ms"
            if len(ok)
            else "no answer"
        )
        local = sum(1 for r in ok if r.fallback)
        say(
            f"traffic: {len(records)} sent, {len(ok)} ok ({local} finished on the edge), "
            f"{len(records) - len(ok)} failed; {figures}"
        )
        for reason, count in failure_reasons(records).items():
            say(f"  failed: {count} x {reason}")
        if failed := [r.latency_s for r in records if not r.ok]:
            say(f"  the slowest failed request had its answer after {max(failed):.2f} s")
        _print_reactions(options, records)
    for record in stack.controller.history:
        say(f"history: {json.dumps(record.as_dict())}")


def _print_reactions(options: UpOptions, records: list[RequestRecord]) -> None:
    """What each scheduled bandwidth change cost the demo traffic (DESIGN.md, measure 3)."""
    times = [0.0, *(at for at, _ in options.schedule if at > 0)]
    end = max(r.sent_s for r in records)
    for (at, rate), reaction in zip(
        [(at, rate) for at, rate in options.schedule if at > 0],
        reactions(records, [t for t in times if t < end], end),
        strict=False,
    ):
        say(
            f"change at {at:g} s to {format_bandwidth(rate)}: cut {reaction['cut_before']} -> "
            f"{reaction['settled_cut']}, right cut after {reaction['to_right_cut_s']} s; p99 of "
            f"the next 10 s {reaction['window_p99_s']} s (max {reaction['window_max_s']} s) "
            f"against a steady p99 of {reaction['steady_p99_s']} s; "
            f"{reaction['excess_request_s']} excess request-s, {reaction['failed']} failed"
        )
