"""One neukonfig service as a local ``python -m`` process on loopback.

The building block of the ``process`` backend, ``neukonfig up``, the benchmarks and
the tests: start it, wait for a health path, stop it (SIGTERM, then SIGKILL), and
keep its output in a log file for post-mortems.
"""

from __future__ import annotations

import enum
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from neukonfig.errors import NeukonfigError
from neukonfig.tls import AS_CLOUD, TlsDir

DEFAULT_START_TIMEOUT_S = 60.0
# A service started here inherits its listening socket as this file descriptor.
LISTEN_FD_VARIABLE = "NEUKONFIG_LISTEN_FD"
# Names the record a backend keeps of the service, so it can be found from its process.
MARKER_VARIABLE = "NEUKONFIG_SERVICE_RECORD"
STOP_GRACE_S = 10.0


class ServiceKind(str, enum.Enum):
    GATEWAY = "gateway"
    EDGE_PARTITION = "edge"
    CLOUD_PARTITION = "cloud"
    CONTROLLER = "controller"

    @property
    def module(self) -> list[str]:
        return {
            ServiceKind.GATEWAY: ["edge_service", "gateway"],
            ServiceKind.EDGE_PARTITION: ["edge_service", "partition"],
            ServiceKind.CLOUD_PARTITION: ["cloud_service"],
            ServiceKind.CONTROLLER: ["controller"],
        }[self]

    @property
    def env_prefix(self) -> str:
        return {
            ServiceKind.GATEWAY: "NEUKONFIG_GATEWAY_",
            ServiceKind.EDGE_PARTITION: "NEUKONFIG_EDGE_",
            ServiceKind.CLOUD_PARTITION: "NEUKONFIG_CLOUD_",
            ServiceKind.CONTROLLER: "NEUKONFIG_CONTROLLER_",
        }[self]

    def environment(self, settings: Mapping[str, str], *, host: str, port: int) -> dict[str, str]:
        """The env vars that configure a service of this kind (its settings' prefix)."""
        values = {**settings, "host": host, "port": str(port)}
        return {self.env_prefix + key.upper(): value for key, value in values.items()}

    def scheme(self, settings: Mapping[str, str]) -> str:
        """``https`` for a cloud partition given certificates (``tls_dir``: it serves
        mutual TLS, ``neukonfig.tls``); every other service speaks plain HTTP on its host."""
        serves_tls = self is ServiceKind.CLOUD_PARTITION and bool(settings.get("tls_dir"))
        return "https" if serves_tls else "http"

    @property
    def ready_path(self) -> str:
        # The controller serves only once it has adopted or started its pipeline.
        return {
            ServiceKind.GATEWAY: "/v2/health/live",
            ServiceKind.CONTROLLER: "/health/live",
        }.get(self, "/health/ready")


class ServiceStartError(NeukonfigError):
    """A service exited or never became ready; carries the tail of its log."""

    status_code = 503


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class LocalService:
    """A service process. ``settings`` are its settings without the env prefix."""

    kind: ServiceKind
    settings: dict[str, str]
    log_path: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: the kernel picks one when the service starts
    process: subprocess.Popen[bytes] | None = None
    # Runs the service elsewhere: ["ip", "netns", "exec", NS] for the cloud host (set
    # other_network too), or an emulated edge device's cgroup (testbed.edge_device).
    command_prefix: list[str] = field(default_factory=list)
    # The prefix enters another network namespace: the port cannot be bound here.
    other_network: bool = False
    marker: str | None = None  # put in the environment as MARKER_VARIABLE
    # Certificates to check readiness with, where the service demands them (a cloud
    # partition serving mutual TLS accepts the edge's, ``neukonfig.tls``).
    client_tls_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"{self.kind.scheme(self.settings)}://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return self.kind.environment(self.settings, host=self.host, port=self.port)

    def start(self) -> LocalService:
        """Start the process. Here the listening socket is bound first and handed over,
        so no other process can take the port between choosing and binding it."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        listener = None
        env = {**os.environ}
        if self.marker is not None:
            env[MARKER_VARIABLE] = self.marker
        if self.other_network:
            # Another network namespace has its own ports; a socket made here would not be in it.
            self.port = self.port or free_port()
        else:
            listener = socket.create_server((self.host, self.port))
            # Accepted connections inherit this. uvicorn serving an inherited socket does
            # not set it itself, and without it Nagle + delayed ACK add ~40 ms per request
            # (benchmarks/data_path.py: tiny served p50 44 ms instead of 2 ms).
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            listener.set_inheritable(True)
            self.port = listener.getsockname()[1]
            env[LISTEN_FD_VARIABLE] = str(listener.fileno())
        try:
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [*self.command_prefix, sys.executable, "-m", *self.kind.module],
                    env={**env, **self.env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(listener.fileno(),) if listener else (),
                    start_new_session=True,  # Ctrl-C in a terminal reaches us, not our children
                )
        finally:
            if listener is not None:
                listener.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, *, timeout: float = DEFAULT_START_TIMEOUT_S) -> LocalService:
        problem = poll_ready(
            self.url + self.kind.ready_path,
            self.alive,
            timeout,
            poll_s=0.05,
            verify=TlsDir(self.client_tls_dir).client_context() if self.client_tls_dir else True,
        )
        if problem is not None:
            raise ServiceStartError(f"{self.kind.value} service {problem}:\n{self.log_tail()}")
        return self

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_GRACE_S)

    def kill(self) -> None:
        """SIGKILL at once: for fault tests and for a service that ignores SIGTERM."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=STOP_GRACE_S)

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` of a process's log, for an error that names why it failed."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def poll_ready(
    url: str,
    alive: Callable[[], bool],
    timeout: float,
    *,
    poll_s: float,
    verify: ssl.SSLContext | bool = True,
) -> str | None:
    """Poll ``url`` until it answers 200. None when it did; else why it never will:
    the process exited, or the timeout passed. ``verify``: an https service's checks."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0, verify=verify) as client:
        while time.monotonic() < deadline:
            if not alive():
                return "exited"
            try:
                # An https partition is checked as the edge checks it; http ignores this.
                if client.get(url, extensions=AS_CLOUD).status_code == 200:
                    return None
            except httpx.HTTPError:
                pass
            time.sleep(poll_s)
    return f"not ready after {timeout:g} s"
