"""Wire format for tensors between the gateway, the edge partition and the cloud partition.

One frame carries named tensors: a small binary header, then the raw data of each
tensor, little-endian and row-major (C order), each payload starting on a 64-byte
boundary so numpy (and onnxruntime) can use it in place. Decoding never copies the
payload and never unpickles anything; every length is checked before it is used.

    frame   := b"NKW1" | count:u16 | codec:u16 | header* | padding | payload*
    header  := name_len:u16 | name:utf8 | dtype:u8 | ndim:u8 | dims:u64[ndim] | offset:u64
               | nbytes:u64

``offset`` is from the start of the frame. A frame must end exactly at its last payload.

``codec`` names the frame's codec (``neukonfig.codecs``; 0 sends tensors as they are).
A lossy codec's tensors are ordinary tensors of the frame, each coded one with a side
tensor of its parameters. A lossless stage compresses a whole frame of the lossy codec:

    compressed := b"NKW1" | count:u16 | codec:u16 | size:u64 | zstd(frame of size bytes)

``decode`` reads any of them; only the lossy codecs' tensors are new arrays.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from neukonfig.codecs import NONE, Codec, Lossless, apply_lossy, compress, decompress, restore_lossy
from neukonfig.errors import WireFormatError

MAGIC = b"NKW1"
CONTENT_TYPE = "application/x-neukonfig-tensors"
ALIGNMENT = 64
MAX_TENSORS = 64
MAX_RANK = 8

_FRAME = struct.Struct("<4sHH")
_NAME_LENGTH = struct.Struct("<H")
_TYPE = struct.Struct("<BB")
_SPAN = struct.Struct("<QQ")
_SIZE = struct.Struct("<Q")

# Codes are part of the format: append only, never renumber.
DTYPES: tuple[str, ...] = (
    "float32",
    "float16",
    "float64",
    "int8",
    "uint8",
    "int16",
    "int32",
    "int64",
    "bool",
    "uint16",
    "uint32",
    "uint64",
)
_CODE = {name: code for code, name in enumerate(DTYPES)}


__all__ = [  # WireFormatError and Codec live in errors and codecs; wire users get them here
    "CONTENT_TYPE",
    "DTYPES",
    "Codec",
    "ExpectedTensor",
    "WireFormatError",
    "check_expected",
    "decode",
    "encode",
    "frame_codec",
    "shape_matches",
]


@dataclass(frozen=True)
class ExpectedTensor:
    """What a receiver accepts: a ``None`` or string dim in ``shape`` matches any size."""

    name: str
    dtype: str
    shape: Sequence[int | str | None] | None


def encode(tensors: Mapping[str, np.ndarray], codec: Codec = NONE) -> bytes:
    """Frame named arrays, coded with ``codec``. Non-contiguous or big-endian arrays are
    converted first."""
    frame = _frame(apply_lossy(tensors, codec.lossy), Codec(codec.lossy).code)
    if codec.lossless is Lossless.NONE:
        return frame
    header = _FRAME.pack(MAGIC, _FRAME.unpack_from(frame)[1], codec.code)
    return b"".join([header, _SIZE.pack(len(frame)), compress(frame)])


def decode(
    frame: bytes | bytearray | memoryview,
    expected: Sequence[ExpectedTensor] | None = None,
) -> dict[str, np.ndarray]:
    """Parse a frame of any codec; validate against ``expected``. Uncoded tensors are
    read-only arrays that view ``frame`` (or the decompressed frame) in place."""
    view = memoryview(frame).cast("B")
    codec, count = _frame_header(view)
    if codec.lossless is not Lossless.NONE:
        (size,) = _unpack(_SIZE, view, _FRAME.size)
        view = memoryview(decompress(view[_FRAME.size + _SIZE.size :], size))
        inner = _frame_header(view)
        if inner != (Codec(codec.lossy), count):
            raise WireFormatError("compressed frame's inner header does not match its outer one")
    tensors = restore_lossy(_read_tensors(view, count), codec.lossy)
    if expected is not None:
        check_expected(tensors, expected)
    return tensors


def frame_codec(frame: bytes | bytearray | memoryview) -> Codec:
    """The codec a frame declares (a clear error for a frame that is not one)."""
    return _frame_header(memoryview(frame).cast("B"))[0]


def _frame(arrays: Mapping[str, np.ndarray], code: int) -> bytes:
    if len(arrays) > MAX_TENSORS:
        raise WireFormatError(f"at most {MAX_TENSORS} tensors per frame, got {len(arrays)}")
    arrays = {name: _little_endian_c_order(array) for name, array in arrays.items()}
    header_size = _FRAME.size + sum(_header_size(name, a.ndim) for name, a in arrays.items())
    headers: list[bytes] = []
    payloads: list[bytes | memoryview] = []
    written = header_size
    for name, array in arrays.items():
        offset = _align(written)
        headers.append(_header(name, array, offset))
        payloads += [b"\0" * (offset - written), memoryview(array.reshape(-1).view(np.uint8))]
        written = offset + array.nbytes
    # One copy in total: join reads each array's buffer in place.
    return b"".join([_FRAME.pack(MAGIC, len(arrays), code), *headers, *payloads])


def _frame_header(view: memoryview) -> tuple[Codec, int]:
    if len(view) < _FRAME.size:
        raise WireFormatError(f"frame of {len(view)} bytes is shorter than its header")
    magic, count, code = _FRAME.unpack_from(view, 0)
    if magic != MAGIC:
        raise WireFormatError("not a neukonfig tensor frame (bad magic)")
    if count > MAX_TENSORS:
        raise WireFormatError(f"frame declares {count} tensors; at most {MAX_TENSORS}")
    return Codec.from_code(code), count


def _read_tensors(view: memoryview, count: int) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    position, end = _FRAME.size, _FRAME.size
    for _ in range(count):
        name, array, position, payload_end = _read_tensor(view, position)
        if name in tensors:
            raise WireFormatError(f"tensor {name!r} appears twice in the frame")
        tensors[name] = array
        end = max(end, payload_end)
    if end != len(view) and count:
        raise WireFormatError(f"frame has {len(view) - end} trailing bytes after its last tensor")
    return tensors


def check_expected(tensors: Mapping[str, np.ndarray], expected: Sequence[ExpectedTensor]) -> None:
    """Reject missing, extra or mistyped tensors before they reach onnxruntime."""
    wanted = {spec.name: spec for spec in expected}
    extra = sorted(set(tensors) - set(wanted))
    if extra:
        raise WireFormatError(f"unexpected tensor {extra[0]!r}; expected {sorted(wanted)}")
    for name, spec in wanted.items():
        if name not in tensors:
            raise WireFormatError(f"missing tensor {name!r}")
        array = tensors[name]
        if array.dtype.name != spec.dtype:
            raise WireFormatError(
                f"tensor {name!r} has dtype {array.dtype.name}, expected {spec.dtype}"
            )
        if spec.shape is not None and not shape_matches(array.shape, spec.shape):
            raise WireFormatError(
                f"tensor {name!r} has shape {list(array.shape)}, expected {list(spec.shape)}"
            )


def shape_matches(actual: Sequence[int], declared: Sequence[int | str | None]) -> bool:
    if len(actual) != len(declared):
        return False
    return all(not isinstance(d, int) or d == a for a, d in zip(actual, declared, strict=True))


def _read_tensor(view: memoryview, position: int) -> tuple[str, np.ndarray, int, int]:
    (name_length,) = _unpack(_NAME_LENGTH, view, position)
    position += _NAME_LENGTH.size
    if position + name_length > len(view):
        raise WireFormatError("tensor name runs past the end of the frame")
    try:
        name = bytes(view[position : position + name_length]).decode("utf-8")
    except UnicodeDecodeError as error:
        raise WireFormatError("tensor name is not UTF-8") from error
    position += name_length
    code, rank = _unpack(_TYPE, view, position)
    position += _TYPE.size
    if code >= len(DTYPES):
        raise WireFormatError(f"tensor {name!r} has unknown dtype code {code}")
    if rank > MAX_RANK:
        raise WireFormatError(f"tensor {name!r} has rank {rank}; at most {MAX_RANK}")
    dims = _unpack(struct.Struct(f"<{rank}Q"), view, position)
    position += 8 * rank
    offset, nbytes = _unpack(_SPAN, view, position)
    position += _SPAN.size
    dtype = np.dtype(DTYPES[code]).newbyteorder("<")
    elements = _element_count(name, dims)
    if elements * dtype.itemsize != nbytes:
        raise WireFormatError(
            f"tensor {name!r}: shape {list(dims)} of {dtype.name} needs "
            f"{elements * dtype.itemsize} bytes, header says {nbytes}"
        )
    if offset < position or offset + nbytes > len(view):
        raise WireFormatError(
            f"tensor {name!r}: data [{offset}, {offset + nbytes}) is outside the frame "
            f"({len(view)} bytes)"
        )
    array = np.frombuffer(view, dtype=dtype, count=elements, offset=offset).reshape(dims)
    return name, array, position, offset + nbytes


def _element_count(name: str, dims: Sequence[int]) -> int:
    elements = 1
    for dim in dims:
        elements *= dim
        if elements > 1 << 40:
            raise WireFormatError(f"tensor {name!r} declares an absurd shape {list(dims)}")
    return elements


def _unpack(layout: struct.Struct, view: memoryview, position: int) -> tuple:
    if position + layout.size > len(view):
        raise WireFormatError("frame header is truncated")
    return layout.unpack_from(view, position)


def _little_endian_c_order(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.name not in _CODE:
        raise WireFormatError(f"dtype {array.dtype} cannot be sent; supported: {', '.join(DTYPES)}")
    if array.ndim > MAX_RANK:
        raise WireFormatError(f"rank {array.ndim} is above the maximum {MAX_RANK}")
    return np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")


def _header_size(name: str, rank: int) -> int:
    return _NAME_LENGTH.size + len(name.encode("utf-8")) + _TYPE.size + 8 * rank + _SPAN.size


def _header(name: str, array: np.ndarray, offset: int) -> bytes:
    encoded = name.encode("utf-8")
    if len(encoded) > 0xFFFF:
        raise WireFormatError("tensor name is longer than 65535 bytes")
    return b"".join(
        (
            _NAME_LENGTH.pack(len(encoded)),
            encoded,
            _TYPE.pack(_CODE[array.dtype.name], array.ndim),
            struct.pack(f"<{array.ndim}Q", *array.shape),
            _SPAN.pack(offset, array.nbytes),
        )
    )


def _align(offset: int) -> int:
    return offset + (-offset % ALIGNMENT)
