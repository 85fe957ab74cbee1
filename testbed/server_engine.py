"""A second Docker host on this machine: the "server" of a Pi + server deployment.

A second Docker engine runs in its own network namespace, with its own data root, exec
root, pidfile and socket, and listens for its API on TCP with TLS client certificates
(``--tlsverify``), as a real server's engine would. A veth pair joins the namespace to
this one, and the edge side of it is shaped with ``tc tbf``: that veth is the WAN. This
machine's own engine is the edge host; whatever it runs reaches the server at
``SERVER_ADDRESS`` through the veth (its containers through the engine's NAT).

The deployment's certificates (``neukonfig.tls``) serve both the engine's API and the
tensor link: the server's engine presents the cloud's certificate (issued also for
``SERVER_ADDRESS``), and the edge's client certificate opens both.

    with ServerEngine(work_dir, rate_bps=50e6) as server:
        server.client()          # docker.DockerClient for the server, over TLS
        server.docker_env()      # DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
        server.set_rate(5e6)

``close`` stops the engine, removes its namespace, the veth and its directories, also
after a failure. Needs root, ``nsenter`` and ``dockerd``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from controller.backends.docker import tls_engine
from neukonfig.errors import NeukonfigError
from neukonfig.tls import Certificates
from testbed.netns import make_namespace_link, run_checked, tbf_arguments

# Another /30 of the benchmarking range than testbed.netns's, so both can be up at once.
EDGE_ADDRESS = "198.18.1.1"
SERVER_ADDRESS = "198.18.1.2"
PREFIX = 30
API_PORT = 2376  # Docker's port for its API over TLS
START_TIMEOUT_S = 60.0


class ServerEngineError(NeukonfigError):
    """The server engine could not be started (its log's tail says why)."""


class ServerEngine:
    def __init__(self, work_dir: Path, *, rate_bps: float) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.namespace = f"nk-server-{suffix}"
        self.edge_device = f"nkw{suffix}"  # the WAN's edge side, where shaping happens
        self.server_device = f"nks{suffix}"
        self.work_dir = Path(work_dir)
        # Short: containerd's socket lives under the exec root, and a unix socket's path
        # may be at most 107 bytes.
        self.exec_root = Path(f"/run/nk-{suffix}")
        self.data_root = self.work_dir / "engine-data"
        self.log_path = self.work_dir / "dockerd.log"
        self.rate_bps = rate_bps
        self.certificates = Certificates(self.work_dir / "certs")
        self._engine: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``DOCKER_HOST`` of the server's engine, as the edge reaches it."""
        return f"tcp://{SERVER_ADDRESS}:{API_PORT}"

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> ServerEngine:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> None:
        if os.geteuid() != 0 or not shutil.which("dockerd") or not shutil.which("nsenter"):
            raise ServerEngineError("a server engine needs root, dockerd and nsenter")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        Certificates.ensure(self.certificates.root, cloud_hosts=[SERVER_ADDRESS])
        self._make_wan()
        self._start_engine()

    def _make_wan(self) -> None:
        make_namespace_link(
            self.namespace,
            (self.edge_device, EDGE_ADDRESS),
            (self.server_device, SERVER_ADDRESS),
            rate_bps=self.rate_bps,
        )
        # The server answers the edge host; its containers' answers leave the same way.
        inside = ["ip", "netns", "exec", self.namespace]
        run_checked(*inside, "ip", "route", "add", "default", "via", EDGE_ADDRESS)

    def _start_engine(self) -> None:
        cloud = self.certificates.cloud
        command = [
            # nsenter, not `ip netns exec`: that mounts a fresh /sys, which hides the
            # cgroup mounts, and dockerd dies with "Devices cgroup isn't mounted".
            "nsenter",
            f"--net=/var/run/netns/{self.namespace}",
            "dockerd",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.work_dir / 'dockerd.pid'}",
            f"--host=unix://{self.work_dir / 'docker.sock'}",
            f"--host={self.host}",
            "--tlsverify",
            f"--tlscacert={cloud / 'ca.pem'}",
            f"--tlscert={cloud / 'cert.pem'}",
            f"--tlskey={cloud / 'key.pem'}",
            "--cgroup-parent=neukonfig-server",
        ]
        with self.log_path.open("ab") as log:
            self._engine = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._engine.poll() is not None:
                raise ServerEngineError(f"the server engine exited:\n{self.log_tail()}")
            if self._answers():
                return
            time.sleep(0.5)
        raise ServerEngineError(f"the server engine did not answer:\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            client = self.client()
        except Exception:
            return False
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()

    def close(self) -> None:
        """Stop the engine, remove the namespace, the veth and the engine's directories.
        Idempotent; containers still running on the engine go with it."""
        if self._engine is not None and self._engine.poll() is None:
            self._engine.send_signal(signal.SIGTERM)
            try:
                self._engine.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._engine.kill()
                self._engine.wait(timeout=10)
        self._engine = None
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.edge_device], capture_output=True, check=False)
        for root in (self.data_root, self.exec_root):
            # Mounts the engine left (overlay layers, netns files) first, deepest first.
            _unmount_under(root)
            shutil.rmtree(root, ignore_errors=True)

    # -- using it --------------------------------------------------------------------

    def client(self) -> Any:
        """A Docker SDK client of the server's engine, over TLS with the edge's certificate."""
        return tls_engine(self.host, self.certificates.edge)

    def docker_env(self) -> dict[str, str]:
        """The environment that points the docker CLI (and compose) at the server."""
        return {
            "DOCKER_HOST": self.host,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(self.certificates.edge),
        }

    def load_images(self, *names: str) -> None:
        """Copy images from this machine's engine to the server's (no registry here)."""
        save = subprocess.Popen(["docker", "save", *names], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "load"],
            stdin=save.stdout,
            capture_output=True,
            env={**os.environ, **self.docker_env()},
            check=False,
        )
        save.wait()
        if save.returncode or load.returncode:
            raise ServerEngineError(f"copying {names} failed: {load.stderr.decode()[-500:]}")

    def set_rate(self, rate_bps: float) -> None:
        tbf = tbf_arguments(rate_bps)
        run_checked("tc", "qdisc", "change", "dev", self.edge_device, "root", "tbf", *tbf)
        self.rate_bps = rate_bps

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _unmount_under(root: Path) -> None:
    prefix = str(root.resolve()) if root.exists() else str(root)
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
