"""A real shaped link: a cloud host in its own network namespace, joined to this host
(the edge) by a veth pair whose edge side is shaped with ``tc ... tbf``.

Needs root (CAP_NET_ADMIN). The edge processes (gateway, edge partitions, controller)
stay in the current namespace; cloud partition services run inside the namespace
(``ip netns exec``) and listen on its address, so every byte from an edge partition to
a cloud partition crosses the shaped veth. ``netem`` is missing on this kernel, so
there is no delay emulation; the rate changes live with ``tc qdisc change``.

Everything is removed on ``close`` (deleting the namespace deletes the veth pair and
its qdisc), also on Ctrl-C or failure: use it as a context manager.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from types import TracebackType

from neukonfig.errors import NeukonfigError

# A /30 from the benchmarking range (RFC 2544), used only inside this machine.
EDGE_ADDRESS = "198.18.0.1"
CLOUD_ADDRESS = "198.18.0.2"
PREFIX = 30
# tbf needs a bucket of at least rate/HZ; 32 kbit is the NEUKONFIG lab's setting.
BURST = "32kbit"
LATENCY = "400ms"


class NetnsUnavailableError(NeukonfigError):
    """No root, or no ip/tc: use the user-space shaped link instead."""


def netns_available() -> bool:
    return os.geteuid() == 0 and bool(shutil.which("ip")) and bool(shutil.which("tc"))


class TcLink:
    # The edge's sockets cross the shaped veth: TCP_INFO measures the link itself.
    kernel_sees_link = True

    def __init__(self, *, rate_bps: float) -> None:
        if not netns_available():
            raise NetnsUnavailableError("a tc/netns link needs root and the ip and tc commands")
        suffix = uuid.uuid4().hex[:6]
        self.namespace = f"nk-cloud-{suffix}"
        self.edge_device = f"nke{suffix}"
        self.cloud_device = f"nkc{suffix}"
        self.rate_bps = rate_bps
        self._up = False

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> TcLink:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        self._up = True
        return self

    def _create(self) -> None:
        _refuse_a_second_link()
        make_namespace_link(
            self.namespace,
            (self.edge_device, EDGE_ADDRESS),
            (self.cloud_device, CLOUD_ADDRESS),
            rate_bps=self.rate_bps,
        )

    def close(self) -> None:
        """Remove the namespace (and with it the veth pair and the qdisc). Idempotent."""
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.edge_device], capture_output=True, check=False)
        self._up = False

    def __enter__(self) -> TcLink:
        return self.open()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the link --------------------------------------------------------------------

    def set_rate(self, rate_bps: float) -> None:
        tbf = tbf_arguments(rate_bps)
        run_checked("tc", "qdisc", "change", "dev", self.edge_device, "root", "tbf", *tbf)
        self.rate_bps = rate_bps

    def route(self, url: str) -> str:
        """Cloud services already listen inside the namespace: nothing to map."""
        return url

    def unroute(self, url: str) -> None:
        return None

    @property
    def command_prefix(self) -> list[str]:
        """Prefix that runs a command on the cloud host."""
        return ["ip", "netns", "exec", self.namespace]

    def exists(self) -> bool:
        listed = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False
        )
        return any(line.split()[0] == self.namespace for line in listed.stdout.splitlines() if line)


def make_namespace_link(
    namespace: str,
    here: tuple[str, str],
    there: tuple[str, str],
    *,
    rate_bps: float,
    prefix: int = PREFIX,
) -> None:
    """A network namespace joined to this one by a veth pair: ``here`` (device, address)
    in this namespace, shaped with tc tbf at ``rate_bps``, and ``there`` inside it."""
    (device, address), (far_device, far_address) = here, there
    inside = ["ip", "netns", "exec", namespace]
    run_checked("ip", "netns", "add", namespace)
    run_checked("ip", "link", "add", device, "type", "veth", "peer", "name", far_device)
    run_checked("ip", "link", "set", far_device, "netns", namespace)
    run_checked("ip", "addr", "add", f"{address}/{prefix}", "dev", device)
    run_checked("ip", "link", "set", device, "up")
    run_checked(*inside, "ip", "addr", "add", f"{far_address}/{prefix}", "dev", far_device)
    run_checked(*inside, "ip", "link", "set", far_device, "up")
    run_checked(*inside, "ip", "link", "set", "lo", "up")
    run_checked("tc", "qdisc", "add", "dev", device, "root", "tbf", *tbf_arguments(rate_bps))


def tbf_arguments(rate_bps: float) -> list[str]:
    """``tc ... tbf`` parameters for a rate, the same on every shaped link."""
    return ["rate", f"{int(rate_bps)}bit", "burst", BURST, "latency", LATENCY]


def _refuse_a_second_link() -> None:
    """Every link uses the same /30: a second one at once would take the cloud address's
    route from the first (a test run beside a benchmark cut the benchmark's cloud off:
    its probe service never became ready). Refuse it, naming the one that is up."""
    shown = subprocess.run(
        ["ip", "-o", "addr", "show", "to", EDGE_ADDRESS],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if shown:
        device = shown[1]
        raise NetnsUnavailableError(
            f"another tc link is up ({device} holds {EDGE_ADDRESS}): one at a time; if no "
            f"benchmark or test is running, remove it with ip link del {device}"
        )


def run_checked(*command: str) -> None:
    result = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetnsUnavailableError(f"{' '.join(command)} failed: {result.stderr.strip()}")
