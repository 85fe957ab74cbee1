"""Open Inference Protocol v2 (KServe / Triton) codec for infer requests and responses.

Pure functions, no HTTP and no I/O: the gateway's endpoint hands in the body and the
``Inference-Header-Content-Length`` header and gets back validated arrays, then hands in the
model's outputs and gets back a body and the headers to send.

Both JSON tensors and Triton's binary tensor data extension are supported, in any mix:

    body := json_header | blob*      (blobs only when the header length is given)

Each input with ``"parameters": {"binary_data_size": n}`` and no ``"data"`` owns the next ``n``
bytes after the JSON header, in the order of ``"inputs"``; the blobs must end exactly at the end
of the body. Binary data is little-endian and row-major; a BOOL element is one byte, 0 or 1.
JSON ``"data"`` is row-major, flat (what Triton clients send) or nested exactly as the shape.
BYTES tensors are rejected: no model served here takes strings.

Every problem with a request raises ``OipError`` (400) or ``PayloadTooLargeError`` (413) with a
message that names the tensor; nothing else escapes ``parse_infer_request``.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

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
class InferRequest:
    """A validated infer request: shaped arrays plus how each output should come back."""

    id: str | None
    inputs: dict[str, np.ndarray]
    binary_outputs: dict[str, bool] | None
    """Binary or JSON per requested output; ``None`` when the request names no outputs."""
    default_binary: bool
    """The request-level ``binary_data_output`` parameter."""
    requested_outputs: list[str] | None
    """Output names in request order; ``None`` means all outputs."""

    def wants_binary(self, name: str) -> bool:
        if self.binary_outputs is None:
            return self.default_binary
        return self.binary_outputs.get(name, self.default_binary)


@dataclass(frozen=True)
class InferResponse:
    """A decoded infer response (what a client, such as the probe, reads back)."""

    model_name: str
    model_version: str | None
    id: str | None
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class _Tensor:
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


def parse_header_length(value: str | None) -> int | None:
    """Read the ``Inference-Header-Content-Length`` HTTP header; ``None`` when it is absent."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise OipError(f"{HEADER_LENGTH} must be a non-negative integer, got {reprlib.repr(value)}")
    return int(text)


def parse_infer_request(
    body: bytes | bytearray | memoryview,
    *,
    header_length: int | None,
    inputs: Sequence[TensorMetadata],
    outputs: Sequence[TensorMetadata],
    max_elements: int = 50_000_000,
) -> InferRequest:
    """Validate an infer request against the model's metadata and read its input arrays.

    Binary inputs are read-only views of ``body`` (no copy; they may be unaligned). All
    shapes and sizes are checked, and the element limit applied, before any array is built.
    """
    view = memoryview(body).cast("B")
    document, binary = _split(view, header_length)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise OipError(f'"id" must be a string, got {_kind(request_id)}')
    parameters = _parameters(document.get("parameters"), "request")
    default_binary = _flag(parameters, "binary_data_output", "request", default=False)
    tensors = _input_tensors(document, inputs, max_elements)
    requested, binary_outputs = _requested_outputs(document.get("outputs"), outputs, default_binary)
    arrays = _read_tensors(tensors, view, binary, header_length)
    return InferRequest(
        id=request_id,
        inputs=arrays,
        binary_outputs=binary_outputs,
        default_binary=default_binary,
        requested_outputs=requested,
    )


def encode_infer_response(
    *,
    model_name: str,
    model_version: str | None,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
) -> tuple[bytes, dict[str, str]]:
    """Encode the outputs the request asked for; return the body and the headers to send.

    Outputs come in request order (or ``outputs`` order when none were named). Binary blobs
    follow the JSON header in the order of the JSON ``"outputs"``. JSON data is flat and
    row-major; non-finite floats are written as ``NaN``/``Infinity``, as Python's json does.
    """
    names = request.requested_outputs if request.requested_outputs is not None else list(outputs)
    entries: list[dict[str, Any]] = []
    blobs: list[memoryview] = []
    for name in names:
        if name not in outputs:
            raise OipResponseError(f"the model produced no output {name!r}")
        array = np.asarray(outputs[name])
        try:
            datatype = datatype_of(array.dtype)
        except OipError as error:
            raise OipResponseError(f"output {name!r}: {error.message}") from error
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if request.wants_binary(name):
            blob = _little_endian_bytes(array)
            entry["parameters"] = {"binary_data_size": blob.nbytes}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        document["model_version"] = model_version
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = entries
    header = json.dumps(document, separators=(",", ":")).encode("utf-8")
    if not blobs:
        return header, {"Content-Type": JSON_CONTENT_TYPE}
    headers = {"Content-Type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(header))}
    return b"".join([header, *blobs]), headers


def parse_infer_response(
    body: bytes | bytearray | memoryview,
    *,
    header_length: int | None,
    max_elements: int = 50_000_000,
) -> InferResponse:
    """Decode an infer response, JSON or binary outputs (the client side of this codec)."""
    view = memoryview(body).cast("B")
    document, binary = _split(view, header_length)
    model_name, version = document.get("model_name"), document.get("model_version")
    response_id = document.get("id")
    if not isinstance(model_name, str):
        raise OipError('response needs a string "model_name"')
    if version is not None and not isinstance(version, str):
        raise OipError('"model_version" must be a string')
    if response_id is not None and not isinstance(response_id, str):
        raise OipError('"id" must be a string')
    entries = document.get("outputs")
    if not isinstance(entries, list):
        raise OipError('response needs an "outputs" array')
    tensors: dict[str, _Tensor] = {}
    total = 0
    for index, entry in enumerate(entries):
        name = _name(entry, f"outputs[{index}]")
        if name in tensors:
            raise OipError(f"output {name!r} appears twice")
        label = f"output {name!r}"
        datatype, shape = _datatype(entry, label), _shape(entry, label)
        total = _count_elements(label, shape, total, max_elements)
        tensors[name] = _tensor(entry, name, label, datatype, shape)
    outputs = _read_tensors(list(tensors.values()), view, binary, header_length)
    return InferResponse(model_name, version, response_id, outputs)


def model_metadata(
    *,
    name: str,
    versions: list[str],
    platform: str,
    inputs: Sequence[TensorMetadata],
    outputs: Sequence[TensorMetadata],
) -> dict[str, Any]:
    """The body of ``GET /v2/models/{name}`` ($metadata_model_response)."""
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [tensor.to_json() for tensor in inputs],
        "outputs": [tensor.to_json() for tensor in outputs],
    }


def shape_matches(actual: Sequence[int], declared: Sequence[int]) -> bool:
    if len(actual) != len(declared):
        return False
    return all(d in (DYNAMIC, a) for a, d in zip(actual, declared, strict=True))


# -- request steps ------------------------------------------------------------------------------


def _split(view: memoryview, header_length: int | None) -> tuple[dict[str, Any], int]:
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
    raw = bytes(view[:end])
    try:
        document = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        if header_length is None:
            _explain_missing_header_length(raw)
        if isinstance(error, UnicodeDecodeError):
            raise OipError("the JSON header is not valid UTF-8") from error
        raise OipError(f"the JSON header is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise OipError(f"the JSON header must be an object, got {_kind(document)}")
    return document, end


def _input_tensors(
    document: dict[str, Any], declared: Sequence[TensorMetadata], max_elements: int
) -> list[_Tensor]:
    entries = document.get("inputs")
    if not isinstance(entries, list):
        raise OipError(f'the request needs an "inputs" array, got {_kind(entries)}')
    by_name = {tensor.name: tensor for tensor in declared}
    tensors: dict[str, _Tensor] = {}
    total = 0
    for index, entry in enumerate(entries):
        name = _name(entry, f"inputs[{index}]")
        if name in tensors:
            raise OipError(f"input {name!r} appears twice")
        if name not in by_name:
            raise OipError(f"unknown input {name!r}; the model's inputs are {list(by_name)}")
        expected, label = by_name[name], f"input {name!r}"
        datatype = _datatype(entry, label)
        if datatype != expected.datatype:
            raise OipError(
                f"{label} has datatype {datatype}, the model declares {expected.datatype}"
            )
        shape = _shape(entry, label)
        if not shape_matches(shape, expected.shape):
            raise OipError(
                f"{label} has shape {list(shape)}, the model declares {list(expected.shape)}"
                " (-1 is any size)"
            )
        total = _count_elements(label, shape, total, max_elements)
        tensors[name] = _tensor(entry, name, label, datatype, shape)
    missing = [tensor.name for tensor in declared if tensor.name not in tensors]
    if missing:
        raise OipError(f"missing input {missing[0]!r}; the model needs {list(by_name)}")
    return list(tensors.values())


def _requested_outputs(
    entries: Any, declared: Sequence[TensorMetadata], default_binary: bool
) -> tuple[list[str] | None, dict[str, bool] | None]:
    if entries is None:
        return None, None
    if not isinstance(entries, list):
        raise OipError(f'"outputs" must be an array, got {_kind(entries)}')
    known = [tensor.name for tensor in declared]
    binary: dict[str, bool] = {}
    for index, entry in enumerate(entries):
        name = _name(entry, f"outputs[{index}]")
        if name not in known:
            raise OipError(f"unknown output {name!r} requested; the model's outputs are {known}")
        if name in binary:
            raise OipError(f"output {name!r} is requested twice")
        label = f"output {name!r}"
        parameters = _parameters(entry.get("parameters"), label)
        _reject_unsupported(parameters, label)
        binary[name] = _flag(parameters, "binary_data", label, default=default_binary)
    # An empty "outputs" array asks for nothing in particular: all outputs, as when absent.
    if not binary:
        return None, None
    return list(binary), binary


def _read_tensors(
    tensors: Sequence[_Tensor], view: memoryview, start: int, header_length: int | None
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


def _count_elements(label: str, shape: tuple[int, ...], total: int, limit: int) -> int:
    """Add a tensor to the running total; empty dims count as 1 so that [0, 10**12]
    cannot slip past the limit into numpy."""
    total += _product(max(dim, 1) for dim in shape)
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


# -- one tensor ---------------------------------------------------------------------------------


def _name(entry: Any, where: str) -> str:
    if not isinstance(entry, dict):
        raise OipError(f"{where} must be an object, got {_kind(entry)}")
    name = entry.get("name")
    if not isinstance(name, str):
        raise OipError(f'{where} needs a string "name", got {_kind(name)}')
    return name


def _datatype(entry: dict[str, Any], label: str) -> str:
    datatype = entry.get("datatype")
    if not isinstance(datatype, str):
        raise OipError(f'{label} needs a string "datatype", got {_kind(datatype)}')
    try:
        dtype_of(datatype)
    except OipError as error:
        raise OipError(f"{label}: {error.message}") from error
    return datatype


def _shape(entry: dict[str, Any], label: str) -> tuple[int, ...]:
    shape = entry.get("shape")
    # type() rather than isinstance: JSON true/false are not dims.
    if not isinstance(shape, list) or not all(
        type(dim) is int and 0 <= dim <= _INT64_MAX for dim in shape
    ):
        raise OipError(
            f'{label}: "shape" must be an array of non-negative integers, got {reprlib.repr(shape)}'
        )
    return tuple(shape)


def _tensor(
    entry: dict[str, Any], name: str, label: str, datatype: str, shape: tuple[int, ...]
) -> _Tensor:
    dtype = dtype_of(datatype)
    count = _product(shape)
    parameters = _parameters(entry.get("parameters"), label)
    _reject_unsupported(parameters, label)
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
    return _Tensor(
        name=name,
        label=label,
        datatype=datatype,
        dtype=dtype,
        shape=shape,
        count=count,
        data=entry.get("data"),
        binary_size=None if has_data else binary_size,
    )


def _from_binary(tensor: _Tensor, view: memoryview, offset: int) -> np.ndarray:
    array = np.frombuffer(view, dtype=tensor.dtype, count=tensor.count, offset=offset)
    if tensor.datatype == "BOOL" and tensor.count and array.view(np.uint8).max() > 1:
        raise OipError(f"{tensor.label} is BOOL: each binary element must be the byte 0 or 1")
    return array.reshape(tensor.shape)


def _from_json(tensor: _Tensor) -> np.ndarray:
    if not isinstance(tensor.data, list):
        raise OipError(f'{tensor.label}: "data" must be an array, got {_kind(tensor.data)}')
    flat = _flatten(tensor)
    if len(flat) != tensor.count:
        raise OipError(
            f"{tensor.label} has {len(flat)} data elements but shape {list(tensor.shape)} "
            f"needs {tensor.count}"
        )
    return _convert(tensor, flat).reshape(tensor.shape)


def _flatten(tensor: _Tensor) -> list[Any]:
    """Flat data as is; nested data only when it nests exactly as the shape."""
    data: list[Any] = tensor.data
    if list not in set(map(type, data)):
        return data
    level = [data]
    for depth, dim in enumerate(tensor.shape):
        if not all(type(item) is list and len(item) == dim for item in level):
            raise OipError(
                f'{tensor.label}: nested "data" does not match shape {list(tensor.shape)} '
                f"at depth {depth}; send a flat row-major array or nest exactly as the shape"
            )
        level = list(chain.from_iterable(level))
    return level


def _convert(tensor: _Tensor, flat: list[Any]) -> np.ndarray:
    """Check element types and ranges in bulk, then build the array in one call."""
    label, datatype, dtype = tensor.label, tensor.datatype, tensor.dtype
    types = set(map(type, flat))
    allowed = {"b": {bool}, "i": {int}, "u": {int}, "f": {int, float}}[dtype.kind]
    if not types <= allowed:
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


# -- small helpers ------------------------------------------------------------------------------


def _parameters(value: Any, label: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OipError(f'{label}: "parameters" must be an object, got {_kind(value)}')
    return value


def _flag(parameters: dict[str, Any], key: str, label: str, *, default: bool) -> bool:
    value = parameters.get(key, default)
    if type(value) is not bool:
        raise OipError(f"{label}: parameter {key!r} must be true or false, got {_kind(value)}")
    return value


def _reject_unsupported(parameters: dict[str, Any], label: str) -> None:
    for key in _UNSUPPORTED_PARAMETERS:
        if key in parameters:
            raise OipError(f"{label}: parameter {key!r} is not supported by this server")


def _little_endian_bytes(array: np.ndarray) -> memoryview:
    contiguous = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return memoryview(contiguous.reshape(-1).view(np.uint8))


def _product(dims: Iterable[int]) -> int:
    result = 1
    for dim in dims:
        result *= dim
    return result


def _kind(value: Any) -> str:
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
