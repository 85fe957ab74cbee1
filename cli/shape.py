"""``neukonfig shape``: shape a docker compose stack's edge-to-cloud link by hand.

On one Docker host there is no wire between edge and cloud to shape, so this puts a tc
tbf on the host side of every cloud container's veth of one compose project, keeps
shaping the ones the controller starts later, and takes the shaping off on Ctrl-C or
SIGTERM (``testbed.container_link``, what the compose end-to-end test uses). On a real Pi
+ server deployment shape the Pi's own interface instead (``tc qdisc add dev eth0 root
tbf ...``), or let the real link be what it is.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neukonfig.errors import NeukonfigError

if TYPE_CHECKING:
    from testbed.container_link import ContainerLink


def default_project() -> str:
    """The project name docker compose takes by default: the directory's, normalised."""
    return re.sub(r"[^a-z0-9_-]", "", Path.cwd().name.lower()) or "neukonfig"


def cmd_shape(args: argparse.Namespace) -> int:
    from neukonfig.units import format_bandwidth, parse_bandwidth, parse_duration, parse_schedule
    from testbed.container_link import ContainerLink

    rate = parse_bandwidth(args.rate)
    schedule = parse_schedule(args.schedule)
    duration = parse_duration(args.duration) if args.duration else None
    if os.geteuid() != 0:
        raise NeukonfigError("shaping puts tc qdiscs on the host's veths: run it as root")
    engine = _engine()
    # systemd and Docker stop with SIGTERM: take the shaping off as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    with ContainerLink(engine, instance=args.project, rate_bps=rate) as link:
        try:
            link.shape_now()
            _say_shaped(link, args.project, format_bandwidth(rate))
            for at, step in schedule:
                time.sleep(max(0.0, started + at - time.monotonic()))
                link.set_rate(step)
                print(f"t={at:g}s link rate -> {format_bandwidth(step)}", flush=True)
            _wait(started, duration)
        except KeyboardInterrupt:
            pass
    print("shaping removed", flush=True)
    return 0


def _engine() -> Any:
    try:
        import docker
    except ImportError:
        raise NeukonfigError("needs the Docker SDK: pip install 'neukonfig[docker]'") from None
    try:
        engine = docker.from_env()
        engine.ping()
    except docker.errors.DockerException as error:
        raise NeukonfigError(f"cannot reach the Docker engine: {error}") from None
    return engine


def _say_shaped(link: ContainerLink, project: str, rate: str) -> None:
    shaped = sorted(link.shaped)
    if not shaped:
        print(
            f"no cloud container of project {project!r} running yet; each one the "
            f"controller starts is shaped to {rate} (Ctrl-C to stop)",
            flush=True,
        )
    else:
        print(f"shaped {', '.join(shaped)} to {rate} (Ctrl-C to stop)", flush=True)


def _wait(started: float, duration: float | None) -> None:
    while duration is None or time.monotonic() - started < duration:
        time.sleep(0.5)


def add_shape_command(commands: argparse._SubParsersAction) -> None:
    shape = commands.add_parser(
        "shape",
        help="shape a compose stack's edge-to-cloud link (root, one Docker host)",
        description="Puts a tc tbf on every cloud container of a docker compose project, "
        "including those the controller starts later, until Ctrl-C, SIGTERM or --duration; "
        "then removes it. Needs root and the Docker SDK.",
    )
    shape.add_argument("rate", help="link rate, e.g. 5mbit")
    shape.add_argument(
        "--project",
        default=default_project(),
        help="the compose project (default: this directory's name, as compose takes it)",
    )
    shape.add_argument("--schedule", help="then change the rate: 50mbit@30,5mbit@60 (seconds)")
    shape.add_argument("--duration", help="stop after this long, e.g. 90s (default: Ctrl-C)")
    shape.set_defaults(handler=cmd_shape)
