"""Partitions optimized once for this machine, their rewritten weights shared by every head.

At its default level onnxruntime rewrites weights while it creates a session: on x86 the
NCHWc layout transform reorders every Conv weight, and Conv+BatchNorm pairs are fused
into new ones. Those rewritten weights are private to the session, so two heads that
share layers each hold their own copy (an all-edge ResNet-50 standby carried about
150 MB of them: ``docs/weight_sharing.md``), and only the weights that no optimizer
touches stay mapped from ``weights.bin``.

This module moves the rewriting offline, where onnxruntime's docs put it ("offline
mode"): every partition file is optimized once and saved, its initializers written into
one ``weights.bin`` of this store, each distinct tensor once (the same layer's rewritten
weight is the same bytes in every head and tail that holds it) and page-aligned, so
that onnxruntime maps them. A session then loads the optimized file with optimizations
off: the same kernels run on the same bytes (outputs bit-identical, checked in
``tests/models/test_optimized.py``) and every session maps one copy of the weights.

An optimized file may hold hardware-specific operators, so a store is made for, and
only used on, one machine kind: ``machine_tag()`` names its directory. A store whose
partitions changed since (re-partitioned: a new ``weights.bin``) is not used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import onnxruntime as ort

from neukonfig.manifest import MANIFEST_FILE, WEIGHTS_FILE, Manifest, read_manifest

# Every partition service looks a store up; only ``prepare`` writes one. So ``onnx`` and
# the partitioner's writer are imported where a store is written: importing them costs a
# service's start-up seconds on a slow edge CPU.
if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

OPTIMIZED_DIR = "optimized"
STORE_FILE = "store.json"
# Initializers below this stay inside each file: onnxruntime copies small external
# tensors anyway, and shape-like constants are easier to read inline.
EXTERNAL_MIN_BYTES = 1024
Progress = Callable[[str], None]


def machine_tag() -> str:
    """Which machines a store is good for: onnxruntime's version, the architecture and the
    CPU's instruction-set features (the NCHWc block size follows AVX2/AVX-512)."""
    digest = hashlib.sha256(_cpu_features().encode()).hexdigest()[:10]
    return f"ort{ort.__version__}-{platform.machine()}-{digest}"


@functools.cache  # read on every partition load; a process's CPU does not change
def _cpu_features() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return " ".join(sorted(value.split()))
    return platform.processor()


def store_dir(directory: Path) -> Path:
    return Path(directory) / OPTIMIZED_DIR / machine_tag()


@dataclass(frozen=True)
class Store:
    """A finished store: where it is and which partition files it holds."""

    path: Path
    files: frozenset[str]

    def file(self, name: str) -> Path | None:
        return self.path / name if name in self.files else None


def find_store(directory: Path) -> Store | None:
    """This machine's store of ``directory``'s partitions, if made and still current."""
    path = store_dir(directory)
    try:
        record = json.loads((path / STORE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if record.get("source") != _source_fingerprint(Path(directory)):
        log.warning("%s was made for other partitions (re-partitioned since): not used", path)
        return None
    return Store(path, frozenset(record["files"]))


def _source_fingerprint(directory: Path) -> dict[str, object]:
    """What the store was made from: the manifest's bytes and the weights file's identity
    (``partition_model`` rewrites ``weights.bin`` whenever it writes)."""
    weights = directory / WEIGHTS_FILE
    stat = weights.stat() if weights.exists() else None
    return {
        "manifest_sha256": hashlib.sha256((directory / MANIFEST_FILE).read_bytes()).hexdigest(),
        "weights": None if stat is None else [stat.st_size, stat.st_mtime_ns],
    }


def partition_files(manifest: Manifest) -> list[str]:
    """Every ONNX file of the partitions (an edge may run any head, and any cut's tail
    for its local answer)."""
    names = {manifest.full, *(name for cut in manifest.cuts for name in (cut.head, cut.tail))}
    return sorted(name for name in names if name)


def optimize_partitions(directory: Path, progress: Progress = lambda _message: None) -> Store:
    """Make this machine's store for ``directory`` (kept when already current)."""
    directory = Path(directory)
    existing = find_store(directory)
    if existing is not None:
        return existing
    manifest = read_manifest(directory)
    names = partition_files(manifest)
    target = store_dir(directory)
    work = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _write_store(directory, names, work, progress)
        (work / STORE_FILE).write_text(
            json.dumps(
                {"machine": machine_tag(), "source": _source_fingerprint(directory), "files": names}
            )
        )
        shutil.rmtree(target, ignore_errors=True)  # sessions mapping it keep their inode
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Store(target, frozenset(names))


def _write_store(directory: Path, names: list[str], work: Path, progress: Progress) -> None:
    import onnx

    progress(f"optimizing {len(names)} partition files for this machine into {work.parent}")
    shared = SharedWeights()
    with (work / WEIGHTS_FILE).open("wb") as stream:
        for number, name in enumerate(names, start=1):
            raw = work / f"raw.{name}"
            _save_optimized(directory / name, raw)
            model = onnx.load(str(raw), load_external_data=False)
            shared.move_into(model, work, stream)
            onnx.save(model, str(work / name))
            raw.unlink()
            for leftover in work.glob(f"raw.{name}.*"):
                leftover.unlink()
            if number % 10 == 0 or number == len(names):
                progress(
                    f"  {number}/{len(names)} files, {shared.bytes / 2**20:.0f} MiB of weights"
                )


def _save_optimized(source: Path, destination: Path) -> None:
    """Let onnxruntime optimize ``source`` at its default level and save the result, the
    big initializers in a file beside it (no pre-packing: nothing is saved pre-packed)."""
    from models.runtime import session_options  # it looks stores up: imports this module

    # The options every shared-weight session has (threads do not change what is saved).
    options = session_options(threads=1, share_weights=True)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(destination)
    options.log_severity_level = 3  # its warning that the file is hardware-specific: known
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", f"{destination.name}.data"
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes",
        str(EXTERNAL_MIN_BYTES),
    )
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


class SharedWeights:
    """Writes each distinct initializer once into the store's ``weights.bin``."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}  # sha256 of the bytes -> offset in the file
        self.bytes = 0

    def move_into(self, model: onnx.ModelProto, base: Path, stream: BinaryIO) -> None:
        for tensor in _external(model.graph.initializer):
            data = _read_external(tensor, base)
            key = hashlib.sha256(data).hexdigest()
            if key not in self.offsets:
                self.offsets[key] = self._append(data, stream)
            del tensor.external_data[:]
            entries = (
                ("location", WEIGHTS_FILE),
                ("offset", self.offsets[key]),
                ("length", len(data)),
            )
            for entry, value in entries:
                tensor.external_data.add(key=entry, value=str(value))

    def _append(self, data: bytes, stream: BinaryIO) -> int:
        from models.onnx_io import PAGE_ALIGNMENT, SMALL_ALIGNMENT

        offset = stream.tell()
        offset += -offset % (PAGE_ALIGNMENT if len(data) >= PAGE_ALIGNMENT else SMALL_ALIGNMENT)
        stream.seek(offset)
        stream.write(data)
        self.bytes += len(data)
        return offset


def _external(initializers: Iterable[onnx.TensorProto]) -> list[onnx.TensorProto]:
    import onnx

    return [t for t in initializers if t.data_location == onnx.TensorProto.EXTERNAL]


def _read_external(tensor: onnx.TensorProto, base: Path) -> bytes:
    entries = {entry.key: entry.value for entry in tensor.external_data}
    with (base / entries["location"]).open("rb") as stream:
        stream.seek(int(entries.get("offset", 0)))
        return stream.read(int(entries["length"]))
