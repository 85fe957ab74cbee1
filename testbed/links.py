"""Choosing the edge-to-cloud link for a benchmark, and the backend that goes with it."""

from __future__ import annotations

import enum
from pathlib import Path

from controller.backends.process import EdgePlacement, ProcessBackend
from testbed.netns import CLOUD_ADDRESS, TcLink, netns_available
from testbed.shaped_link import ShapedLink


class LinkKind(str, enum.Enum):
    TC = "tc"
    PROXY = "proxy"


LINK_DESCRIPTIONS = {
    LinkKind.TC: "tc tbf on a veth into a cloud network namespace (testbed/netns.py)",
    LinkKind.PROXY: "user-space shaping proxy on loopback (testbed/shaped_link.py)",
}


def resolve_link_kind(choice: str) -> LinkKind:
    """``auto`` is tc in a namespace when this process may make one, else the proxy."""
    if choice != "auto":
        return LinkKind(choice)
    return LinkKind.TC if netns_available() else LinkKind.PROXY


def open_link(
    kind: LinkKind,
    *,
    rate_bps: float,
    state_dir: Path,
    edge_placement: EdgePlacement | None = None,
    tls_dir: Path | None = None,
) -> tuple[ShapedLink | TcLink, ProcessBackend]:
    """An open link and a process backend that puts cloud partitions behind it (and edge
    partitions on the emulated edge device, if one is given). ``tls_dir``: the edge's
    certificates, for cloud partitions that serve mutual TLS."""
    if kind == LinkKind.TC:
        link = TcLink(rate_bps=rate_bps).open()
        backend = ProcessBackend(
            state_dir=state_dir,
            cloud_host=CLOUD_ADDRESS,
            cloud_command_prefix=link.command_prefix,
            edge_placement=edge_placement,
            tls_dir=tls_dir,
        )
        return link, backend
    backend = ProcessBackend(state_dir=state_dir, edge_placement=edge_placement, tls_dir=tls_dir)
    return ShapedLink(rate_bps=rate_bps).start_in_thread(), backend
