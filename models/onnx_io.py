"""Load ONNX files with clear errors, and keep big weights out of the graph proto.

The partitioner never copies weights per cut. ``load_model`` strips every large
initializer's bytes out of the proto into a ``WeightSource``; ``write_weights``
then writes each tensor once into one shared ``weights.bin`` (page-aligned, so
onnxruntime can memory-map it) and points the proto at it. Every head and tail
file refers to that one file, so writing all cuts of VGG16 costs one copy of its
weights on disk and in memory, not one per cut.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from neukonfig.errors import InvalidModelError
from neukonfig.manifest import WEIGHTS_FILE

# Smaller tensors stay inside each graph file. Integer ones get a higher bar because
# shape inference needs the values of shape/axes/index initializers.
INLINE_MAX_BYTES = 128
INLINE_MAX_INTEGER_BYTES = 1024
_INTEGER_TYPES = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32})
# Big tensors start on a page boundary (4 KiB on x86_64 and on the Pi's aarch64):
# onnxruntime can only memory-map external data at a multiple of the allocation
# granularity. Small ones are packed at cache-line alignment to waste less space.
PAGE_ALIGNMENT = 4096
SMALL_ALIGNMENT = 64


@dataclass
class WeightSource:
    """Raw little-endian bytes of the initializers stripped from a model's proto."""

    in_memory: dict[str, bytes] = field(default_factory=dict)
    # name -> (file, offset, length) for models that already used external data.
    on_disk: dict[str, tuple[Path, int, int]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [*self.in_memory, *self.on_disk]

    def read(self, name: str) -> bytes:
        if name in self.in_memory:
            return self.in_memory[name]
        path, offset, length = self.on_disk[name]
        with path.open("rb") as stream:
            stream.seek(offset)
            data = stream.read(length) if length >= 0 else stream.read()
        return data

    def release(self, name: str) -> None:
        self.in_memory.pop(name, None)


@dataclass
class LoadedModel:
    """A model whose proto holds the graph and small constants; big weights live aside."""

    path: Path
    proto: onnx.ModelProto
    weights: WeightSource
    sha256: str


def load_model(path: str | Path) -> LoadedModel:
    """Read, validate and shape-infer an ONNX file, raising ``InvalidModelError`` on junk."""
    path = Path(path)
    if not path.is_file():
        raise InvalidModelError(f"{path}: no such file")
    digest = file_sha256(path)
    try:
        # Checking by path lets the C++ checker parse the file itself: no second
        # Python-side copy of a 500 MB proto.
        onnx.checker.check_model(str(path))
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as error:
        raise InvalidModelError(
            f"{path}: not a readable ONNX model ({_first_line(error)})"
        ) from error
    except onnx.checker.ValidationError as error:
        raise InvalidModelError(f"{path}: invalid ONNX model: {_first_line(error)}") from error
    weights = _strip_weights(proto, path.parent)
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except onnx.shape_inference.InferenceError as error:
        raise InvalidModelError(f"{path}: shape inference failed: {_first_line(error)}") from error
    return LoadedModel(path=path, proto=proto, weights=weights, sha256=digest)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _strip_weights(proto: onnx.ModelProto, base_dir: Path) -> WeightSource:
    """Move large initializer bytes out of ``proto`` so that copying graphs stays cheap."""
    source = WeightSource()
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            source.on_disk[tensor.name] = _external_location(tensor, base_dir)
            continue
        if tensor.data_type == onnx.TensorProto.STRING:
            continue
        if _keep_inline(tensor):
            continue
        if tensor.HasField("raw_data"):
            data = tensor.raw_data
        else:
            data = numpy_helper.to_array(tensor).tobytes()
        source.in_memory[tensor.name] = data
        _clear_data(tensor)
    return source


def _keep_inline(tensor: onnx.TensorProto) -> bool:
    limit = INLINE_MAX_INTEGER_BYTES if tensor.data_type in _INTEGER_TYPES else INLINE_MAX_BYTES
    return _stored_size(tensor) < limit


def _stored_size(tensor: onnx.TensorProto) -> int:
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    elements = 1
    for dim in tensor.dims:
        elements *= dim
    return elements * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _clear_data(tensor: onnx.TensorProto) -> None:
    for name in (
        "raw_data",
        "float_data",
        "int32_data",
        "int64_data",
        "double_data",
        "uint64_data",
    ):
        tensor.ClearField(name)
    # Mark as external with no location yet, so nothing mistakes it for an empty tensor.
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=WEIGHTS_FILE)


def _external_location(tensor: onnx.TensorProto, base_dir: Path) -> tuple[Path, int, int]:
    entries = {entry.key: entry.value for entry in tensor.external_data}
    if "location" not in entries:
        raise InvalidModelError(f"initializer {tensor.name!r} is external but has no location")
    location = (base_dir / entries["location"]).resolve()
    if not location.is_file():
        raise InvalidModelError(
            f"initializer {tensor.name!r} needs external data file {entries['location']!r}, "
            f"which is missing next to the model"
        )
    return location, int(entries.get("offset", 0)), int(entries.get("length", -1))


class SizeOnly:
    """A stream that only counts: lays weights out without writing them."""

    def __init__(self) -> None:
        self._position = 0

    def tell(self) -> int:
        return self._position

    def write(self, data: bytes) -> int:
        self._position += len(data)
        return len(data)


def write_weights(model: LoadedModel, stream: BinaryIO | SizeOnly, *, release: bool = True) -> None:
    """Write every stripped weight once, page-aligned, and point the proto at the file.

    With ``release`` the in-memory copy of each tensor is dropped as soon as it is on
    disk, so peak memory stays near one copy of the weights.
    """
    locations: dict[str, tuple[int, int]] = {}
    for name in model.weights.names():
        data = model.weights.read(name)
        offset = stream.tell()
        padding = -offset % (PAGE_ALIGNMENT if len(data) >= PAGE_ALIGNMENT else SMALL_ALIGNMENT)
        stream.write(b"\0" * padding)
        stream.write(data)
        locations[name] = (offset + padding, len(data))
        if release:
            model.weights.release(name)
    for tensor in model.proto.graph.initializer:
        if tensor.name in locations:
            offset, length = locations[tensor.name]
            set_external_location(tensor, offset=offset, length=length)


def set_external_location(tensor: onnx.TensorProto, *, offset: int, length: int) -> None:
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", WEIGHTS_FILE), ("offset", offset), ("length", length)):
        tensor.external_data.add(key=key, value=str(value))
