"""The request side of the OIP v2 codec: an infer request's body and header length in,
validated input arrays and the wanted output forms out.

Binary inputs are read-only views of the body (no copy). All shapes and sizes are
checked, and the element limit applied, before any array is built.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_service.gateway.oip.tensors import (
    HEADER_LENGTH,
    OipError,
    TensorEntry,
    TensorMetadata,
    count_elements,
    entry_datatype,
    entry_name,
    entry_shape,
    flag,
    kind_of,
    parameters_of,
    read_tensors,
    reject_unsupported,
    shape_matches,
    split_body,
    tensor_entry,
)


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
    document, binary = split_body(view, header_length)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise OipError(f'"id" must be a string, got {kind_of(request_id)}')
    parameters = parameters_of(document.get("parameters"), "request")
    default_binary = flag(parameters, "binary_data_output", "request", default=False)
    tensors = _input_tensors(document, inputs, max_elements)
    requested, binary_outputs = _requested_outputs(document.get("outputs"), outputs, default_binary)
    arrays = read_tensors(tensors, view, binary, header_length)
    return InferRequest(
        id=request_id,
        inputs=arrays,
        binary_outputs=binary_outputs,
        default_binary=default_binary,
        requested_outputs=requested,
    )


def _input_tensors(
    document: dict[str, Any], declared: Sequence[TensorMetadata], max_elements: int
) -> list[TensorEntry]:
    entries = document.get("inputs")
    if not isinstance(entries, list):
        raise OipError(f'the request needs an "inputs" array, got {kind_of(entries)}')
    by_name = {tensor.name: tensor for tensor in declared}
    tensors: dict[str, TensorEntry] = {}
    total = 0
    for index, entry in enumerate(entries):
        name = entry_name(entry, f"inputs[{index}]")
        if name in tensors:
            raise OipError(f"input {name!r} appears twice")
        if name not in by_name:
            raise OipError(f"unknown input {name!r}; the model's inputs are {list(by_name)}")
        expected, label = by_name[name], f"input {name!r}"
        datatype = entry_datatype(entry, label)
        if datatype != expected.datatype:
            raise OipError(
                f"{label} has datatype {datatype}, the model declares {expected.datatype}"
            )
        shape = entry_shape(entry, label)
        if not shape_matches(shape, expected.shape):
            raise OipError(
                f"{label} has shape {list(shape)}, the model declares {list(expected.shape)}"
                " (-1 is any size)"
            )
        total = count_elements(label, shape, total, max_elements)
        tensors[name] = tensor_entry(entry, name, label, datatype, shape)
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
        raise OipError(f'"outputs" must be an array, got {kind_of(entries)}')
    known = [tensor.name for tensor in declared]
    binary: dict[str, bool] = {}
    for index, entry in enumerate(entries):
        name = entry_name(entry, f"outputs[{index}]")
        if name not in known:
            raise OipError(f"unknown output {name!r} requested; the model's outputs are {known}")
        if name in binary:
            raise OipError(f"output {name!r} is requested twice")
        label = f"output {name!r}"
        parameters = parameters_of(entry.get("parameters"), label)
        reject_unsupported(parameters, label)
        binary[name] = flag(parameters, "binary_data", label, default=default_binary)
    # An empty "outputs" array asks for nothing in particular: all outputs, as when absent.
    if not binary:
        return None, None
    return list(binary), binary
