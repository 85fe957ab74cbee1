"""The memory this process may use: the smallest cgroup memory limit on its cgroup's
path, cgroup v1 (the ``memory`` controller's ``memory.limit_in_bytes``) or v2
(``memory.max``), and at most the machine's physical memory (a Pi without limits has
its RAM).

An edge partition reports it (``/v1/partition``), so the controller can check its memory
budget against the device it really runs on: a Pi's RAM, a container's ``mem_limit``, or
an emulated device's cgroup. Every level of the path counts, since a parent's limit
bounds its children; in a container whose cgroup is mounted as its own root, the path
from ``/proc/self/cgroup`` does not exist there and the root's file is the container's.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes "no limit" as 2**63 - 1 rounded down to a page; nothing real is this big.
UNLIMITED = 2**62


def memory_limit_bytes(
    proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT, physical: int | None = None
) -> int | None:
    """The smallest memory limit over this process's cgroup and its ancestors and the
    ``physical`` memory (default: this machine's); None only where neither is known."""
    limits: list[int] = [physical_memory_bytes() if physical is None else physical]
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            limits += _limits_along(root / "memory", path, "memory.limit_in_bytes")
        elif hierarchy == "0" and not controllers:  # the v2 unified hierarchy
            limits += _limits_along(root, path, "memory.max")
    return min((limit for limit in limits if 0 < limit < UNLIMITED), default=None)


def physical_memory_bytes() -> int:
    """This machine's RAM (0 where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def _limits_along(base: Path, path: str, name: str) -> list[int]:
    """The limit in ``name`` at every level from ``base`` down ``path`` that has one."""
    parts = PurePosixPath(path).parts[1:]  # without the leading "/"
    limits = []
    for depth in range(len(parts) + 1):
        try:
            text = (base.joinpath(*parts[:depth]) / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # v2 writes "max" for no limit
            limits.append(int(text))
    return limits


def anonymous_pss_bytes(rollup: Path = Path("/proc/self/smaps_rollup")) -> int | None:
    """This process's anonymous memory (PSS): what it holds that the kernel cannot drop.

    The rest of its PSS is file pages, above all weights mapped from ``weights.bin``:
    shared by every session that maps the same file, and clean, so reclaimable under
    pressure. None where the kernel does not say (``Pss_Anon`` needs Linux 5.6).
    """
    try:
        lines = rollup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key == "Pss_Anon":
            return int(value.split()[0]) * 1024
    return None
