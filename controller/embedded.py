"""The embedded stack: a gateway process and a controller in this process, on one machine.

``embedded_stack`` is the one place that wires them together. ``neukonfig up``, the
downtime and planner benchmarks, the fault and soak benchmarks and the tests all call
it, with parameters for what differs between them: the link between edge and cloud, the
backend that places the partitions, the strategy, and any other controller setting.

    with embedded_stack(prepared, state_dir=work / "state", link=link) as stack:
        async with stack.controller.running():
            ...  # send requests to stack.infer_url
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from controller.assemble import build_controller
from controller.backends.base import Backend
from controller.backends.local import DEFAULT_START_TIMEOUT_S, LocalService, ServiceKind
from controller.backends.process import EdgePlacement, ProcessBackend
from controller.core import Controller
from controller.pipelines import Link
from controller.settings import ControllerSettings, StrategyName
from models.prepare import Prepared
from neukonfig.tls import Certificates


@dataclass(frozen=True)
class EmbeddedStack:
    gateway: LocalService
    controller: Controller
    admin_token: str
    internal_token: str | None
    model_name: str

    @property
    def infer_url(self) -> str:
        return f"{self.gateway.url}/v2/models/{self.model_name}/infer"


def local_gateway(
    prepared: Prepared,
    *,
    admin_token: str,
    log: Path,
    port: int = 0,
    internal_token: str | None = None,
    edge_placement: EdgePlacement | None = None,
    tls_dir: Path | None = None,
) -> LocalService:
    """The gateway process for a prepared model (not started)."""
    settings = {
        "partition_dir": str(prepared.partitions),
        "model_name": prepared.manifest.model.name,
        "admin_token": admin_token,
    }
    if internal_token:
        settings["internal_token"] = internal_token
    if tls_dir is not None:
        settings["tls_dir"] = str(tls_dir)
    prefix = edge_placement(1) if edge_placement is not None else []
    return LocalService(ServiceKind.GATEWAY, settings, log, port=port, command_prefix=prefix)


# A gateway started on an emulated device took 35 to 100 s to answer on the Pi 4 preset
# (its imports cost 3.5 to 10 s of CPU there against 0.7 s unthrottled: a quota of 8.6 ms
# in every 100 ms period slows interpreter start-up far more than the calibrated model
# runs), and twice missed a 60 s bound in one benchmark session.
DEVICE_START_TIMEOUT_S = 240.0


@contextlib.contextmanager
def embedded_stack(
    prepared: Prepared,
    *,
    state_dir: Path,
    strategy: StrategyName = StrategyName.SWITCH_ON_DEMAND,
    link: Link | None = None,
    backend: Backend | None = None,
    gateway_port: int = 0,
    controller_port: int = 0,
    initial_bandwidth: str = "50mbit",
    edge_threads: int = 1,
    edge_slowdown: float = 1.0,
    internal_token: bool = True,
    edge_placement: EdgePlacement | None = None,
    settings: Mapping[str, object] | None = None,
    certificates: Certificates | None = None,
) -> Iterator[EmbeddedStack]:
    """Start the gateway, build the controller (not started: see ``Controller.running``),
    and stop the gateway on the way out. The controller stops every partition it started
    when it shuts down. ``edge_placement`` starts the gateway and the edge partitions on
    an emulated edge device (when ``backend`` is given, it must place them itself).
    ``settings`` overrides any other ``ControllerSettings`` field. ``certificates``: mutual
    TLS between edge and cloud partitions (a given ``backend`` needs the edge's too)."""
    edge_tls = certificates.edge if certificates else None
    if backend is None and edge_placement is not None:
        backend = ProcessBackend(
            state_dir=state_dir, edge_placement=edge_placement, tls_dir=edge_tls
        )
    admin_token = secrets.token_urlsafe(24)
    internal = secrets.token_urlsafe(24) if internal_token else None
    gateway = local_gateway(
        prepared,
        admin_token=admin_token,
        log=state_dir / "gateway.log",
        port=gateway_port,
        internal_token=internal,
        edge_placement=edge_placement,
        tls_dir=edge_tls,
    )
    try:
        on_device = edge_placement is not None
        gateway.start().wait_ready(
            timeout=DEVICE_START_TIMEOUT_S if on_device else DEFAULT_START_TIMEOUT_S
        )
        values: dict[str, object] = {
            "partition_dir": prepared.partitions,
            "model_name": prepared.manifest.model.name,
            "gateway_url": gateway.url,
            "admin_token": admin_token,
            "edge_profile": prepared.edge_profile,
            "cloud_profile": prepared.cloud_profile,
            "strategy": strategy,
            "state_dir": state_dir,
            "port": controller_port,
            "edge_threads": edge_threads,
            "edge_slowdown": edge_slowdown,
            "initial_bandwidth": initial_bandwidth,
            "stop_services_on_exit": True,
            "internal_token": internal,
            **({"tls_dir": edge_tls, "cloud_tls_dir": certificates.cloud} if certificates else {}),
            **(settings or {}),
        }
        controller = build_controller(ControllerSettings(**values), link=link, backend=backend)
        yield EmbeddedStack(
            gateway, controller, admin_token, internal, prepared.manifest.model.name
        )
    finally:
        gateway.stop()
