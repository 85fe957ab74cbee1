"""The response side of the OIP v2 codec: model outputs in, the body and headers the
request asked for out; and the client's side, decoding such a response.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from edge_service.gateway.oip.request import InferRequest
from edge_service.gateway.oip.tensors import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    OipError,
    OipResponseError,
    TensorEntry,
    TensorMetadata,
    count_elements,
    datatype_of,
    entry_datatype,
    entry_name,
    entry_shape,
    read_tensors,
    split_body,
    tensor_entry,
)


@dataclass(frozen=True)
class InferResponse:
    """A decoded infer response (what a client, such as the probe, reads back)."""

    model_name: str
    model_version: str | None
    id: str | None
    outputs: dict[str, np.ndarray]


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
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        document["model_version"] = model_version
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = entries
    header = _dump_json(document, [entry["data"] for entry in entries if "data" in entry])
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
    document, binary = split_body(view, header_length)
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
    tensors: dict[str, TensorEntry] = {}
    total = 0
    for index, entry in enumerate(entries):
        name = entry_name(entry, f"outputs[{index}]")
        if name in tensors:
            raise OipError(f"output {name!r} appears twice")
        label = f"output {name!r}"
        datatype, shape = entry_datatype(entry, label), entry_shape(entry, label)
        total = count_elements(label, shape, total, max_elements)
        tensors[name] = tensor_entry(entry, name, label, datatype, shape)
    outputs = read_tensors(list(tensors.values()), view, binary, header_length)
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


def _dump_json(document: dict[str, Any], arrays: list[np.ndarray]) -> bytes:
    """orjson writes the arrays straight from numpy (no Python list), but writes NaN and
    Infinity as null: outputs with non-finite values, or arrays orjson cannot write (e.g.
    big-endian), go through the standard library, which writes them as Python's json does."""
    finite = all(a.dtype.kind != "f" or np.isfinite(a).all() for a in arrays)
    if finite:
        try:
            return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
        except orjson.JSONEncodeError:
            pass
    return json.dumps(document, separators=(",", ":"), default=_as_list).encode("utf-8")


def _as_list(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _little_endian_bytes(array: np.ndarray) -> memoryview:
    contiguous = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return memoryview(contiguous.reshape(-1).view(np.uint8))
