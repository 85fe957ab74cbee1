"""Measure what every cut of a partition directory costs on this machine.

For each cut and each profiled role it loads the side the services would load (through
``models.runtime.load_partition``, with the same session options), then records:

- cold session load time and the resident memory that load + first inference add;
- compute time: median and p90 of ``repeats`` timed runs after ``warmup`` runs;
- the wire format's encode and decode time for the crossing tensor, and its frame size.

Inputs are seeded random data of the right shape and dtype: dense kernels (Conv, Gemm)
take the same time whatever the values, so the tail need not wait for a real head.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil

from models.cpu_load import OtherLoad
from models.runtime import Partition, Role, load_partition, sample_input
from neukonfig.codecs import Codec
from neukonfig.manifest import CutKind, CutSpec, Manifest, read_manifest
from neukonfig.profiles import (
    CodecCost,
    CutProfile,
    MachineInfo,
    Profile,
    ProfiledModel,
    SideProfile,
    TimingStats,
)
from neukonfig.wire import ExpectedTensor, decode, encode

Progress = Callable[[str], None]

BATCH = 1
PROVIDERS = ["CPUExecutionProvider"]
# Seeded inputs whose head outputs a codec's frame sizes are taken over: compression
# of a ReLU map depends on the data, so the profile keeps the range.
CODEC_SAMPLES = 8
# Other processes' CPU use (in cores) above which a cut's timings are flagged.
OTHER_LOAD_WARNING_CORES = 0.1


def profile_partitions(
    directory: str | Path,
    *,
    roles: Sequence[Role] = (Role.EDGE, Role.CLOUD),
    threads: int | None = None,
    warmup: int = 2,
    repeats: int = 10,
    codecs: Sequence[Codec] = (),
    progress: Progress | None = None,
) -> Profile:
    """Profile every written cut of ``directory`` for ``roles`` with ``threads`` threads,
    and what each of ``codecs`` costs for its crossing tensor."""
    _check_arguments(roles=roles, threads=threads, warmup=warmup, repeats=repeats)
    report = progress or (lambda _message: None)
    directory = Path(directory)
    manifest = read_manifest(directory)
    roles = _ordered(roles)
    report(
        f"profiling {len(manifest.cuts)} cuts of {manifest.model.name} as "
        f"{'+'.join(role.value for role in roles)}, threads {threads or 'default'}, "
        f"{warmup} warm-up + {repeats} timed runs"
    )
    prime_runtime(directory, manifest, roles, threads=threads)
    cuts = []
    for number, cut in enumerate(manifest.cuts, start=1):
        measured = profile_cut(
            directory,
            manifest,
            cut,
            roles=roles,
            threads=threads,
            warmup=warmup,
            repeats=repeats,
            codecs=codecs,
        )
        report(f"[{number}/{len(manifest.cuts)}] {describe(measured)}")
        cuts.append(measured)
    return build_profile(
        manifest, cuts, roles=roles, threads=threads, warmup=warmup, repeats=repeats
    )


def build_profile(
    manifest: Manifest,
    cuts: Sequence[CutProfile],
    *,
    roles: Sequence[Role],
    threads: int | None,
    warmup: int,
    repeats: int,
) -> Profile:
    """A profile of this machine from per-cut measurements (from ``profile_cut``)."""
    return Profile(
        model=ProfiledModel(name=manifest.model.name, sha256=manifest.model.sha256),
        roles=[role.value for role in _ordered(roles)],
        threads=threads,
        emulated_edge=is_emulated_edge(roles, threads),
        machine=machine_info(),
        onnxruntime_version=ort.__version__,
        providers=PROVIDERS,
        warmup=warmup,
        repeats=repeats,
        batch=BATCH,
        created_at=datetime.now(timezone.utc),
        cuts=list(cuts),
    )


def loaded_cuts(profile: Profile, *, max_cores: float = OTHER_LOAD_WARNING_CORES) -> list[int]:
    """Cuts whose timings ran while other processes used more than ``max_cores``."""
    return [
        cut.index
        for cut in profile.cuts
        if any(
            side is not None and side.other_load_cores > max_cores for side in (cut.head, cut.tail)
        )
    ]


def is_emulated_edge(roles: Sequence[Role], threads: int | None) -> bool:
    """Edge timings taken with fewer threads than this machine has stand in for a slower
    device; a profile says so, because its numbers are an emulation, not the device."""
    return Role.EDGE in roles and threads is not None and threads < usable_cpus()


def time_calls(call: Callable[[], object], *, warmup: int, repeats: int) -> TimingStats:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return summarize(samples)


def summarize(samples: Sequence[float]) -> TimingStats:
    values = np.asarray(samples, dtype=np.float64)
    return TimingStats(
        median_s=float(np.median(values)),
        p90_s=float(np.percentile(values, 90)),
        min_s=float(values.min()),
        max_s=float(values.max()),
        samples=len(values),
    )


def describe(cut: CutProfile) -> str:
    """One progress line: what this cut costs on each measured side."""
    parts = [f"cut {cut.index} ({cut.kind.value})"]
    for label, side in (("head", cut.head), ("tail", cut.tail)):
        if side is not None and side.compute is not None:
            busy = side.other_load_cores > OTHER_LOAD_WARNING_CORES
            parts.append(
                f"{label} {side.compute.median_s * 1e3:.2f} ms (p90 "
                f"{side.compute.p90_s * 1e3:.2f}), load {side.load_s * 1e3:.0f} ms"
                + (f" [other processes used {side.other_load_cores:.2f} cores]" if busy else "")
            )
        elif side is not None:
            parts.append(f"{label} pass-through")
    if cut.encode is not None and cut.decode is not None:
        parts.append(
            f"{cut.frame_bytes:,} B encode {cut.encode.median_s * 1e3:.3f} ms "
            f"decode {cut.decode.median_s * 1e3:.3f} ms"
        )
    return ", ".join(parts)


def machine_info() -> MachineInfo:
    return MachineInfo(
        platform=platform.platform(),
        architecture=platform.machine(),
        cpu_model=_cpu_model(),
        cpu_count=usable_cpus(),
        python=platform.python_version(),
    )


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def _cpu_model() -> str:
    # x86 says "model name"; a Raspberry Pi's arm64 kernel says "Model" (the board).
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for key in ("model name", "Model", "Hardware"):
        for line in lines:
            label, _, value = line.partition(":")
            if label.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def _check_arguments(
    *, roles: Sequence[Role], threads: int | None, warmup: int, repeats: int
) -> None:
    if not roles:
        raise ValueError("profile at least one role (edge or cloud)")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if warmup < 1:
        raise ValueError(f"warmup must be at least 1 run, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1 run, got {repeats}")


def profile_cut(
    directory: Path,
    manifest: Manifest,
    cut: CutSpec,
    *,
    roles: Sequence[Role],
    threads: int | None,
    warmup: int,
    repeats: int,
    codecs: Sequence[Codec] = (),
) -> CutProfile:
    """Measure one cut: each role's side, then the wire cost of its crossing tensor (and
    of each of ``codecs``, over the head's real outputs when the edge role is measured)."""
    sides: dict[Role, SideProfile | None] = {Role.EDGE: None, Role.CLOUD: None}
    crossing: list[np.ndarray] = []
    for role in roles:
        if role is Role.CLOUD and cut.kind is CutKind.ALL_EDGE:
            continue
        keep = CODEC_SAMPLES if role is Role.EDGE and codecs else 0
        sides[role], outputs = _profile_side(
            directory,
            manifest,
            cut,
            role,
            threads=threads,
            warmup=warmup,
            repeats=repeats,
            keep_crossing=keep,
        )
        crossing += outputs
        _release_memory()
    frame_bytes, encoding, decoding = _profile_wire(cut, warmup=warmup, repeats=repeats)
    costs = [
        profile_codec(cut, codec, crossing, roles=roles, warmup=warmup, repeats=repeats)
        for codec in codecs
        if cut.kind is not CutKind.ALL_EDGE
    ]
    return CutProfile(
        index=cut.index,
        kind=cut.kind,
        tensor=cut.tensor,
        bytes=cut.bytes or 0,
        frame_bytes=frame_bytes,
        head=sides[Role.EDGE],
        tail=sides[Role.CLOUD],
        encode=encoding,
        decode=decoding,
        codecs=costs,
    )


def _profile_side(
    directory: Path,
    manifest: Manifest,
    cut: CutSpec,
    role: Role,
    *,
    threads: int | None,
    warmup: int,
    repeats: int,
    keep_crossing: int = 0,
) -> tuple[SideProfile, list[np.ndarray]]:
    """The side's costs, and (``keep_crossing`` > 0, edge role) the crossing tensor as its
    head makes it from that many seeded inputs."""
    rss_before = _rss()
    started = time.perf_counter()
    partition = load_partition(directory, cut.index, role, threads=threads, manifest=manifest)
    load_s = time.perf_counter() - started
    crossing = [
        partition.run(_sample_feeds(partition, seed=cut.index * 1000 + sample))[cut.tensor]
        for sample in range(keep_crossing)
        if cut.tensor is not None
    ]
    if partition.session is None:
        empty = SideProfile(file=None, compute=None, load_s=0.0, first_run_s=0.0, rss_added_bytes=0)
        return empty, crossing
    feeds = _sample_feeds(partition, seed=cut.index)
    started = time.perf_counter()
    partition.run(feeds)
    first_run_s = time.perf_counter() - started
    # Load + first run: the first run allocates onnxruntime's arena for activations, so
    # this is what a ready (warmed-up) standby side holds.
    rss_added = _rss() - rss_before
    with OtherLoad() as other:
        # The first run was the first warm-up.
        compute = time_calls(lambda: partition.run(feeds), warmup=warmup - 1, repeats=repeats)
    side = SideProfile(
        file=str(partition.path.relative_to(directory)) if partition.path else None,
        compute=compute,
        load_s=load_s,
        first_run_s=first_run_s,
        rss_added_bytes=rss_added,
        other_load_cores=other.cores,
    )
    return side, crossing


def _profile_wire(
    cut: CutSpec, *, warmup: int, repeats: int
) -> tuple[int, TimingStats | None, TimingStats | None]:
    """Frame size, encode and decode time of the crossing tensor; all-edge sends nothing."""
    if cut.kind is CutKind.ALL_EDGE or cut.tensor is None or cut.dtype is None:
        return 0, None, None
    spec = ExpectedTensor(name=cut.tensor, dtype=cut.dtype, shape=cut.shape)
    tensors = {cut.tensor: sample_input(spec, batch=BATCH, seed=cut.index)}
    frame = encode(tensors)
    # Decode with the receiver's checks, as the cloud service does.
    encoding = time_calls(lambda: encode(tensors), warmup=warmup, repeats=repeats)
    decoding = time_calls(lambda: decode(frame, [spec]), warmup=warmup, repeats=repeats)
    return len(frame), encoding, decoding


def profile_codec(
    cut: CutSpec,
    codec: Codec,
    crossing: Sequence[np.ndarray],
    *,
    roles: Sequence[Role],
    warmup: int,
    repeats: int,
) -> CodecCost:
    """Frame sizes of ``codec`` over the head's outputs (``crossing``; seeded random data of
    the tensor's shape without the edge role), its encode time on the edge role and its
    decode time, with the receiver's checks, on the cloud role."""
    assert cut.tensor is not None
    assert cut.dtype is not None
    spec = ExpectedTensor(name=cut.tensor, dtype=cut.dtype, shape=cut.shape)
    samples = list(crossing) or [sample_input(spec, batch=BATCH, seed=cut.index)]
    frames = [encode({cut.tensor: tensor}, codec) for tensor in samples]
    sizes = [len(frame) for frame in frames]
    tensors = {cut.tensor: samples[0]}
    encoding = (
        time_calls(lambda: encode(tensors, codec), warmup=warmup, repeats=repeats)
        if Role.EDGE in roles
        else None
    )
    decoding = (
        time_calls(lambda: decode(frames[0], [spec]), warmup=warmup, repeats=repeats)
        if Role.CLOUD in roles
        else None
    )
    return CodecCost(
        codec=codec.name,
        frame_bytes=int(np.median(sizes)),
        frame_bytes_min=min(sizes),
        frame_bytes_max=max(sizes),
        samples=len(sizes),
        encode=encoding,
        decode=decoding,
    )


def _sample_feeds(partition: Partition, *, seed: int) -> dict[str, np.ndarray]:
    return {spec.name: sample_input(spec, batch=BATCH, seed=seed) for spec in partition.inputs}


def prime_runtime(
    directory: Path, manifest: Manifest, roles: Sequence[Role], *, threads: int | None
) -> None:
    """Load and run the smallest partition once, untimed, and throw it away.

    The first session in a process pays one-time costs (onnxruntime's kernel registry,
    thread pools, allocator growth) that would otherwise be charged to the first cut's
    load time and memory. Later deltas can still be a little low where freed memory is
    reused, which is why memory is handed back to the OS between sides.
    """
    files = [
        (directory / name, cut.index, role)
        for cut in manifest.cuts
        for role in roles
        if (name := cut.head if role is Role.EDGE else cut.tail) is not None
    ]
    if not files:
        return
    _path, index, role = min(files, key=lambda entry: entry[0].stat().st_size)
    partition = load_partition(directory, index, role, threads=threads, manifest=manifest)
    partition.run(_sample_feeds(partition, seed=index))
    del partition
    _release_memory()


def _ordered(roles: Sequence[Role]) -> list[Role]:
    return sorted(set(roles), key=[Role.EDGE, Role.CLOUD].index)


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()


def _release_memory() -> None:
    gc.collect()
    # glibc keeps freed memory mapped in its arenas; handing it back makes the next
    # side's RSS delta measure what that side holds, not what the last one left behind.
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
