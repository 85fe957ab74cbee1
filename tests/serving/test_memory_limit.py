"""The memory limit a process runs under, read from cgroup trees laid out as the kernel
lays them out (v1 per-controller mounts, v2 unified, a container's own root)."""

from __future__ import annotations

from pathlib import Path

from serving.memory_limit import memory_limit_bytes

V1_UNLIMITED = "9223372036854771712"
RAM = 8 * 2**30  # the machine's physical memory, as the tests pass it


def tree(root: Path, files: dict[str, str], proc: str) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    (root / "proc-cgroup").write_text(proc)
    return root / "proc-cgroup"


def test_v1_takes_the_smallest_limit_on_the_path(tmp_path: Path) -> None:
    proc = tree(
        tmp_path,
        {
            "memory/memory.limit_in_bytes": V1_UNLIMITED,
            "memory/device/memory.limit_in_bytes": str(2 * 2**30),
            "memory/device/edge/memory.limit_in_bytes": V1_UNLIMITED,
        },
        "9:name=systemd:/\n4:memory:/device/edge\n1:cpu,cpuacct:/device\n0::/\n",
    )
    assert memory_limit_bytes(proc, tmp_path, RAM) == 2 * 2**30, "the parent's limit bounds it"


def test_v2_reads_memory_max_and_max_is_no_limit(tmp_path: Path) -> None:
    files = {"pods/memory.max": "max", "pods/edge/memory.max": str(512 * 2**20)}
    proc = tree(tmp_path, files, "0::/pods/edge\n")
    assert memory_limit_bytes(proc, tmp_path, RAM) == 512 * 2**20
    (tmp_path / "pods/edge/memory.max").write_text("max\n")
    assert memory_limit_bytes(proc, tmp_path, RAM) == RAM, "no limit: the machine's memory"


def test_a_container_sees_its_own_limit_at_the_root(tmp_path: Path) -> None:
    """Docker on cgroup v1 without a cgroup namespace: /proc says /docker/ID, but the
    container's mount of the memory controller is its own cgroup."""
    files = {"memory/memory.limit_in_bytes": str(1536 * 2**20)}
    proc = tree(tmp_path, files, "4:memory:/docker/0123abcd\n")
    assert memory_limit_bytes(proc, tmp_path, RAM) == 1536 * 2**20


def test_without_a_limit_or_cgroups_the_machines_memory_is_the_limit(tmp_path: Path) -> None:
    proc = tree(tmp_path, {"memory/memory.limit_in_bytes": V1_UNLIMITED}, "4:memory:/\n")
    assert memory_limit_bytes(proc, tmp_path, RAM) == RAM
    assert memory_limit_bytes(tmp_path / "absent", tmp_path, RAM) == RAM
    assert memory_limit_bytes(tmp_path / "absent", tmp_path, 0) is None, "nothing known"
    (tmp_path / "memory/memory.limit_in_bytes").write_text(str(64 * 2**30))
    assert memory_limit_bytes(proc, tmp_path, RAM) == RAM, "a limit over the RAM is no limit"
