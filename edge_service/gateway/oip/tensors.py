"""Open Inference Protocol v2 tensors: datatypes, metadata, errors, and reading the
tensors of a JSON header and its binary blobs into numpy arrays.

Shared by the request side (``oip.request``) and the response side (``oip.response``).
Every problem raises ``OipError`` (400) or ``PayloadTooLargeError`` (413) with a message
that names the tensor.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from neukonfig.errors import NeukonfigError, PayloadTooLargeError

HEADER_LENGTH = "Inference-Header-Content-Length"


JSON_CONTENT_TYPE = "application/json"


BINARY_CONTENT_TYPE = "application/octet-stream"


DYNAMIC = -1
"""A dim of ``TensorMetadata.shape`` that accepts any size (the OIP metadata convention)."""


_INT64_MAX = 2**63 - 1


# Shared memory and classification are Triton extensions the gateway does not offer: a client
# that asks for them must hear so rather than get plain tensors back.
_UNSUPPORTED_PARAMETERS = ("shared_memory_region", "classification")


DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


_BY_NUMPY_NAME = {dtype.name: datatype for datatype, dtype in DATATYPES.items()}


_JSON_KIND = {
    bool: "true/false",
    int: "integers",
    float: "non-integer numbers",
    str: "strings",
    list: "arrays",
    dict: "objects",
    type(None): "null",
}


class OipError(NeukonfigError):
    """An inference request that breaks the protocol or does not fit the model's metadata."""


class OipResponseError(NeukonfigError):
    """Model outputs that cannot be encoded as the request asked: a server-side fault."""

    status_code = 500


@dataclass(frozen=True)
class TensorMetadata:
    """A tensor as the model declares it; a ``-1`` dim accepts any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor entry of a JSON header, checked but not yet read."""

    name: str
    label: str
    datatype: str
    dtype: np.dtype
    shape: tuple[int, ...]
    count: int
    data: Any
    binary_size: int | None


def datatype_of(dtype: npt.DTypeLike) -> str:
    """The OIP datatype of a numpy dtype, e.g. ``float32`` -> ``FP32`` (any byte order)."""
    try:
        name = np.dtype(dtype).name
    except (TypeError, ValueError) as error:
        raise OipError(f"{dtype!r} is not a numpy dtype") from error
    if name not in _BY_NUMPY_NAME:
        raise OipError(f"dtype {name} has no OIP datatype; supported: {', '.join(_BY_NUMPY_NAME)}")
    return _BY_NUMPY_NAME[name]


def dtype_of(datatype: str) -> np.dtype:
    """The little-endian numpy dtype of an OIP datatype; BYTES and unknown names raise."""
    if datatype == "BYTES":
        raise OipError("datatype BYTES (strings) is not supported by the models served here")
    if datatype not in DATATYPES:
        raise OipError(
            f"unknown datatype {reprlib.repr(datatype)}; expected one of {', '.join(DATATYPES)}"
        )
    return DATATYPES[datatype]


def shape_matches(actual: Sequence[int], declared: Sequence[int]) -> bool:
    if len(actual) != len(declared):
        return False
    return all(d in (DYNAMIC, a) for a, d in zip(actual, declared, strict=True))


def split_body(view: memoryview, header_length: int | None) -> tuple[dict[str, Any], int]:
    """Parse the JSON header; return it and the offset where binary data starts."""
    if header_length is None:
        end = len(view)
    elif type(header_length) is not int or header_length < 0:
        raise OipError(f"{HEADER_LENGTH} must be a non-negative integer, got {header_length!r}")
    elif header_length > len(view):
        raise OipError(
            f"{HEADER_LENGTH} is {header_length} but the body has only {len(view)} bytes"
        )
    else:
        end = header_length
    document = _parse_json(view[:end], header_length)
    if not isinstance(document, dict):
        raise OipError(f"the JSON header must be an object, got {kind_of(document)}")
    return document, end


def _parse_json(raw: memoryview, header_length: int | None) -> Any:
    """orjson first (about 5x the standard library on a 3 MB image request); the standard
    library only when orjson refuses, for what it accepts and orjson does not (NaN and
    Infinity, which this codec writes for non-finite outputs as Python's json does; integers
    past a double) and for its messages."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    text = bytes(raw)
    try:
        return json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        if header_length is None:
            _explain_missing_header_length(text)
        if isinstance(error, UnicodeDecodeError):
            raise OipError("the JSON header is not valid UTF-8") from error
        raise OipError(f"the JSON header is not valid JSON: {error}") from error


def read_tensors(
    tensors: Sequence[TensorEntry], view: memoryview, start: int, header_length: int | None
) -> dict[str, np.ndarray]:
    """Check the binary layout as a whole, then build every array."""
    position = start
    offsets: list[int] = []
    for tensor in tensors:
        offsets.append(position)
        if tensor.binary_size is None:
            continue
        if header_length is None:
            raise OipError(
                f"{tensor.label} has binary_data_size but the request has no {HEADER_LENGTH}"
            )
        if position + tensor.binary_size > len(view):
            raise OipError(
                f"{tensor.label} needs {tensor.binary_size} bytes of binary data but only "
                f"{len(view) - position} are left in the body"
            )
        position += tensor.binary_size
    if position != len(view):
        raise OipError(
            f"{len(view) - position} bytes of the body follow the JSON header and binary"
            " tensors; binary_data_size values must add up to the rest of the body exactly"
        )
    return {
        tensor.name: (
            _from_binary(tensor, view, offset)
            if tensor.binary_size is not None
            else _from_json(tensor)
        )
        for tensor, offset in zip(tensors, offsets, strict=True)
    }


def count_elements(label: str, shape: tuple[int, ...], total: int, limit: int) -> int:
    """Add a tensor to the running total; empty dims count as 1 so that [0, 10**12]
    cannot slip past the limit into numpy."""
    total += product(max(dim, 1) for dim in shape)
    if total > limit:
        raise PayloadTooLargeError(f"{label} brings the total to {total} elements; limit {limit}")
    return total


def _explain_missing_header_length(raw: bytes) -> None:
    """A body that is a JSON object plus more bytes was meant to carry binary tensors."""
    text = raw.decode("utf-8", errors="replace")
    try:
        _, end = json.JSONDecoder().raw_decode(text)
    except (ValueError, RecursionError):
        return
    if text[end:].strip():
        raise OipError(
            f"bytes follow the JSON object but there is no {HEADER_LENGTH}; binary tensor"
            " data needs that header to give the JSON length"
        )


def entry_name(entry: Any, where: str) -> str:
    if not isinstance(entry, dict):
        raise OipError(f"{where} must be an object, got {kind_of(entry)}")
    name = entry.get("name")
    if not isinstance(name, str):
        raise OipError(f'{where} needs a string "name", got {kind_of(name)}')
    return name


def entry_datatype(entry: dict[str, Any], label: str) -> str:
    datatype = entry.get("datatype")
    if not isinstance(datatype, str):
        raise OipError(f'{label} needs a string "datatype", got {kind_of(datatype)}')
    try:
        dtype_of(datatype)
    except OipError as error:
        raise OipError(f"{label}: {error.message}") from error
    return datatype


def entry_shape(entry: dict[str, Any], label: str) -> tuple[int, ...]:
    shape = entry.get("shape")
    # type() rather than isinstance: JSON true/false are not dims.
    if not isinstance(shape, list) or not all(
        type(dim) is int and 0 <= dim <= _INT64_MAX for dim in shape
    ):
        raise OipError(
            f'{label}: "shape" must be an array of non-negative integers, got {reprlib.repr(shape)}'
        )
    return tuple(shape)


def tensor_entry(
    entry: dict[str, Any], name: str, label: str, datatype: str, shape: tuple[int, ...]
) -> TensorEntry:
    dtype = dtype_of(datatype)
    count = product(shape)
    parameters = parameters_of(entry.get("parameters"), label)
    reject_unsupported(parameters, label)
    has_data = "data" in entry
    binary_size = parameters.get("binary_data_size")
    if has_data and "binary_data_size" in parameters:
        raise OipError(f'{label} has both "data" and a binary_data_size; send one or the other')
    if not has_data and "binary_data_size" not in parameters:
        raise OipError(f'{label} has neither "data" nor a binary_data_size parameter')
    if not has_data:
        if type(binary_size) is not int or binary_size < 0:
            raise OipError(
                f"{label}: binary_data_size must be a non-negative integer, "
                f"got {reprlib.repr(binary_size)}"
            )
        expected = count * dtype.itemsize
        if binary_size != expected:
            raise OipError(
                f"{label}: binary_data_size is {binary_size} bytes but shape {list(shape)} "
                f"of {datatype} needs {expected}"
            )
    return TensorEntry(
        name=name,
        label=label,
        datatype=datatype,
        dtype=dtype,
        shape=shape,
        count=count,
        data=entry.get("data"),
        binary_size=None if has_data else binary_size,
    )


def _from_binary(tensor: TensorEntry, view: memoryview, offset: int) -> np.ndarray:
    array = np.frombuffer(view, dtype=tensor.dtype, count=tensor.count, offset=offset)
    if tensor.datatype == "BOOL" and tensor.count and array.view(np.uint8).max() > 1:
        raise OipError(f"{tensor.label} is BOOL: each binary element must be the byte 0 or 1")
    return array.reshape(tensor.shape)


def _from_json(tensor: TensorEntry) -> np.ndarray:
    if not isinstance(tensor.data, list):
        raise OipError(f'{tensor.label}: "data" must be an array, got {kind_of(tensor.data)}')
    # One pass over the elements for their types (the costliest step after the parse, for
    # a 150k-element image): flat data keeps them, nested data is flattened and looked at
    # again.
    types = set(map(type, tensor.data))
    flat = tensor.data
    if list in types:
        flat = _flatten(tensor)
        types = set(map(type, flat))
    if len(flat) != tensor.count:
        raise OipError(
            f"{tensor.label} has {len(flat)} data elements but shape {list(tensor.shape)} "
            f"needs {tensor.count}"
        )
    return _convert(tensor, flat, types).reshape(tensor.shape)


def _flatten(tensor: TensorEntry) -> list[Any]:
    """Nested data, flat, only when it nests exactly as the shape."""
    data: list[Any] = tensor.data
    level = [data]
    for depth, dim in enumerate(tensor.shape):
        if not all(type(item) is list and len(item) == dim for item in level):
            raise OipError(
                f'{tensor.label}: nested "data" does not match shape {list(tensor.shape)} '
                f"at depth {depth}; send a flat row-major array or nest exactly as the shape"
            )
        level = list(chain.from_iterable(level))
    return level


def _convert(tensor: TensorEntry, flat: list[Any], types: set[type]) -> np.ndarray:
    """Check element types (``types``: those of ``flat``) and ranges in bulk, then build the
    array in one call."""
    label, datatype, dtype = tensor.label, tensor.datatype, tensor.dtype
    allowed = {"b": {bool}, "i": {int}, "u": {int}, "f": {int, float}}[dtype.kind]
    if not types <= allowed:
        _refuse_huge_integers(tensor, flat, types)
        found = ", ".join(sorted(_JSON_KIND.get(t, t.__name__) for t in types - allowed))
        wanted = {"b": "true/false", "f": "numbers"}.get(dtype.kind, "integers")
        raise OipError(f"{label} is {datatype}: data must be {wanted}, found {found}")
    if dtype.kind in "iu" and flat:
        info = np.iinfo(dtype)
        low, high = min(flat), max(flat)
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise OipError(
                f"{label}: value {bad} is out of range for {datatype} [{info.min}, {info.max}]"
            )
    if dtype.kind != "f":
        return np.array(flat, dtype=dtype)
    try:
        wide = np.array(flat, dtype=np.float64)
    except OverflowError as error:
        raise OipError(f"{label}: an integer in data is too large for {datatype}") from error
    with np.errstate(over="ignore"):
        array = wide.astype(dtype)
    overflow = np.isinf(array) & np.isfinite(wide)
    if overflow.any():
        raise OipError(f"{label}: value {wide[overflow][0]} is out of range for {datatype}")
    return array


def _refuse_huge_integers(tensor: TensorEntry, flat: list[Any], types: set[type]) -> None:
    """orjson reads an integer past 64 bits as a float: for an integer tensor, name it as
    the out-of-range integer it was sent as, not as a non-integer number."""
    if tensor.dtype.kind not in "iu" or float not in types:
        return
    info = np.iinfo(tensor.dtype)
    for value in flat:
        if type(value) is float and value.is_integer() and not info.min <= value <= info.max:
            raise OipError(
                f"{tensor.label}: value {int(value)} is out of range for {tensor.datatype} "
                f"[{info.min}, {info.max}]"
            )


def parameters_of(value: Any, label: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OipError(f'{label}: "parameters" must be an object, got {kind_of(value)}')
    return value


def flag(parameters: dict[str, Any], key: str, label: str, *, default: bool) -> bool:
    value = parameters.get(key, default)
    if type(value) is not bool:
        raise OipError(f"{label}: parameter {key!r} must be true or false, got {kind_of(value)}")
    return value


def reject_unsupported(parameters: dict[str, Any], label: str) -> None:
    for key in _UNSUPPORTED_PARAMETERS:
        if key in parameters:
            raise OipError(f"{label}: parameter {key!r} is not supported by this server")


def product(dims: Iterable[int]) -> int:
    result = 1
    for dim in dims:
        result *= dim
    return result


def kind_of(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
