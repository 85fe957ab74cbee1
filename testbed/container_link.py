"""A shaped edge-to-cloud link for containers: tc tbf on each cloud container's veth.

On one Docker host every partition container hangs off the same bridge, so there is
no single wire to shape. Traffic into a container leaves the bridge through the host
side of that container's veth pair; a tbf qdisc there shapes everything sent to it.
The controller starts cloud containers while the test runs, so a background thread
shapes every cloud container (tails and the bandwidth probe) of one instance as it
appears, at the current rate, and retunes them all when the rate changes.
"""

from __future__ import annotations

import re
import subprocess
import threading
from types import TracebackType
from typing import Any

from testbed.netns import NetnsUnavailableError, run_checked, tbf_arguments

CLOUD_ROLES = ("cloud", "probe", "cloud-host")  # a host holds hosted tails (and probe)
PEER_INDEX = re.compile(r"^\d+: eth0@if(\d+):")
PERIOD_S = 0.1


class ContainerLink:
    """``with ContainerLink(docker_client, instance="proj", rate_bps=50e6) as link:``"""

    def __init__(self, engine: Any, *, instance: str, rate_bps: float) -> None:
        self.engine = engine
        self.instance = instance
        self.rate_bps = rate_bps
        self.shaped: dict[str, float] = {}  # host veth -> rate applied
        self._veths: dict[str, str] = {}  # container id -> host veth
        self._stop = threading.Event()
        self._shaping = threading.Lock()  # the thread and set_rate both shape
        self._thread = threading.Thread(target=self._loop, name="container-link", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> ContainerLink:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def set_rate(self, rate_bps: float) -> None:
        self.rate_bps = rate_bps
        self.shape_now()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for veth in list(self.shaped):  # containers still up keep no qdisc of ours
            subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], capture_output=True)
        self.shaped.clear()

    def shape_now(self) -> None:
        with self._shaping:
            self._shape_all(self.rate_bps)

    def _shape_all(self, rate: float) -> None:
        for container in self._cloud_containers():
            veth = self._host_veth(container)
            if veth is None or self.shaped.get(veth) == rate:
                continue
            verb = "change" if veth in self.shaped else "replace"
            try:
                run_checked("tc", "qdisc", verb, "dev", veth, "root", "tbf", *tbf_arguments(rate))
            except NetnsUnavailableError:
                if _link_exists(veth):
                    raise
                # The container stopped since it was listed (a standby or a drained
                # pipeline going): nothing of it is left to shape.
                self.shaped.pop(veth, None)
                self._veths = {c: v for c, v in self._veths.items() if v != veth}
                continue
            self.shaped[veth] = rate

    def _loop(self) -> None:
        while not self._stop.wait(PERIOD_S):
            try:
                self.shape_now()
            except Exception as error:  # a container gone mid-pass: try again next pass
                self.errors.append(str(error))

    def _cloud_containers(self) -> list[Any]:
        labels = [f"neukonfig.instance={self.instance}"]
        running = self.engine.containers.list(filters={"label": labels, "status": "running"})
        return [c for c in running if c.labels.get("neukonfig.role") in CLOUD_ROLES]

    def _host_veth(self, container: Any) -> str | None:
        """The host end of the container's eth0: its peer index, then that link's name."""
        if container.id in self._veths:
            return self._veths[container.id]
        pid = container.attrs["State"]["Pid"]
        inside = subprocess.run(
            ["nsenter", "-t", str(pid), "-n", "ip", "-o", "link", "show", "eth0"],
            capture_output=True,
            text=True,
        )
        match = PEER_INDEX.match(inside.stdout)
        if not match:
            return None
        host = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        for line in host.splitlines():
            index, name = line.split(":")[:2]
            if index == match.group(1):
                self._veths[container.id] = name.strip().split("@")[0]
                return self._veths[container.id]
        return None


def _link_exists(name: str) -> bool:
    shown = subprocess.run(["ip", "link", "show", "dev", name], capture_output=True, check=False)
    return shown.returncode == 0
