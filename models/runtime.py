"""Load one side of a cut from a partition directory and run it with onnxruntime.

Used by both partition services and by the profiler, so that what is profiled is
exactly what is served. The edge side of cut 0 and the cloud side of cut N hold no
model: the edge forwards the raw input, and cut N never reaches the cloud.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.optimized import find_store
from neukonfig.errors import CutNotFoundError, NeukonfigError
from neukonfig.manifest import CutKind, CutSpec, Manifest, TensorSpec, read_manifest
from neukonfig.wire import ExpectedTensor


class Role(str, enum.Enum):
    EDGE = "edge"
    CLOUD = "cloud"


class InferenceFailedError(NeukonfigError):
    """onnxruntime refused or failed a run (wrapped at the boundary)."""

    status_code = 500


def session_options(
    *,
    threads: int | None = None,
    share_weights: bool = False,
    shared_arena: bool = False,
    optimized: bool = False,
) -> ort.SessionOptions:
    """``threads`` caps intra-op parallelism; one thread emulates a slow edge CPU.

    ``share_weights`` lets sessions of the same partition directory (in one process or
    in several) share the memory of large weights: see ``docs/weight_sharing.md``.
    ``shared_arena``: activations come from one CPU arena that every session of the
    process asking for it shares, instead of an arena per session that keeps its own
    peak (configuration G of that study: 899 MB instead of 982 MB for 4 VGG16 heads).
    ``optimized``: the file was optimized offline (``models.optimized``), so its
    optimizers already ran (onnxruntime's "offline mode" loads such files with them off).
    """
    options = ort.SessionOptions()
    if optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    if share_weights:
        # Pre-packing copies each MatMul/Gemm weight into a private buffer and drops the
        # memory-mapped weights.bin pages; without it the page-aligned weights stay mapped
        # and the page cache holds them once for every head. Measured (ORT 1.32, x86_64,
        # benchmarks/weight_sharing.py): a second VGG16 FC head costs ~180 MB instead of
        # ~575 MB, with no measurable latency change at batch 1 and 4x faster creation.
        options.add_session_config_entry("session.disable_prepacking", "1")
    if shared_arena:
        register_shared_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


_arena_lock = threading.Lock()
_arena_registered = False


def register_shared_arena() -> None:
    """Register one CPU arena in onnxruntime's environment (once per process; sessions
    created with ``session.use_env_allocators`` then allocate from it)."""
    global _arena_registered
    with _arena_lock:  # loads run in threads: a second registration would raise
        if not _arena_registered:
            cpu = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(cpu, ort.OrtArenaCfg(0, -1, -1, -1))
            _arena_registered = True


@dataclass
class Partition:
    """One side of one cut, ready to run. ``session`` is None for a pass-through side."""

    manifest: Manifest
    cut: CutSpec
    role: Role
    path: Path | None
    session: ort.InferenceSession | None
    inputs: list[ExpectedTensor]
    outputs: list[str]
    optimized: bool = False  # loaded from this machine's store of optimized files

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.session is None:
            return dict(feeds)
        try:
            values = self.session.run(self.outputs, feeds)
        except Exception as error:  # onnxruntime raises several unrelated types
            raise InferenceFailedError(f"{self.role.value} partition failed: {error}") from error
        return dict(zip(self.outputs, values, strict=True))


def partition_file(cut: CutSpec, role: Role) -> str | None:
    return cut.head if role is Role.EDGE else cut.tail


def load_partition(
    directory: str | Path,
    cut_index: int,
    role: Role,
    *,
    threads: int | None = None,
    manifest: Manifest | None = None,
    share_weights: bool = False,
    shared_arena: bool = False,
) -> Partition:
    directory = Path(directory)
    manifest = manifest or read_manifest(directory)
    cut = manifest.cut(cut_index)
    if role is Role.CLOUD and cut.kind is CutKind.ALL_EDGE:
        raise CutNotFoundError(f"cut {cut_index} is all-edge: it has no cloud partition")
    inputs = _expected_inputs(manifest, cut, role)
    name = partition_file(cut, role)
    if name is None:
        return Partition(manifest, cut, role, None, None, inputs, [t.name for t in inputs])
    path = directory / name
    # Shared weights: this machine's optimized copy, when prepared, shares the weights
    # onnxruntime would otherwise rewrite into every session (models.optimized).
    store = find_store(directory) if share_weights else None
    optimized = store.file(name) if store else None
    options = session_options(
        threads=threads,
        share_weights=share_weights,
        shared_arena=shared_arena,
        optimized=optimized is not None,
    )
    session = ort.InferenceSession(
        str(optimized or path), options, providers=["CPUExecutionProvider"]
    )
    outputs = [output.name for output in session.get_outputs()]
    return Partition(
        manifest, cut, role, path, session, inputs, outputs, optimized=optimized is not None
    )


def _expected_inputs(manifest: Manifest, cut: CutSpec, role: Role) -> list[ExpectedTensor]:
    if role is Role.EDGE or cut.kind is CutKind.ALL_CLOUD:
        return [
            ExpectedTensor(name=t.name, dtype=t.dtype or "float32", shape=t.shape)
            for t in manifest.model.inputs
        ]
    if cut.tensor is None or cut.dtype is None:
        raise CutNotFoundError(f"cut {cut.index} has no typed crossing tensor")
    return [ExpectedTensor(name=cut.tensor, dtype=cut.dtype, shape=cut.shape)]


def warm_up(partition: Partition, *, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """One inference on seeded data: readiness means this succeeded."""
    return partition.run(
        {t.name: sample_input(t, batch=batch, seed=seed) for t in partition.inputs}
    )


def sample_input(spec: TensorSpec | ExpectedTensor, *, batch: int, seed: int) -> np.ndarray:
    """Seeded random data for one graph input; symbolic dims become ``batch`` then 1."""
    if spec.shape is None or spec.dtype is None:
        raise NeukonfigError(f"input {spec.name!r} has no known shape/dtype to sample")
    shape = [
        dim if isinstance(dim, int) else (batch if position == 0 else 1)
        for position, dim in enumerate(spec.shape)
    ]
    rng = np.random.default_rng(seed)
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.integers(0, 10, size=shape).astype(dtype)
