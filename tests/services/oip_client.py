"""A minimal OIP v2 client written from the spec, independent of the gateway's codec,
so the tests check the protocol rather than the codec against itself."""

from __future__ import annotations

import json

import httpx
import numpy as np

DATATYPES = {"float32": "FP32", "int64": "INT64", "float16": "FP16", "uint8": "UINT8"}
NUMPY = {v: k for k, v in DATATYPES.items()}


def json_request(name: str, array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    body = {
        "id": "json-1",
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": DATATYPES[array.dtype.name],
                "data": array.reshape(-1).tolist(),
            }
        ],
    }
    return json.dumps(body).encode(), {"content-type": "application/json"}


def binary_request(name: str, array: np.ndarray, *, binary_out: bool = True) -> tuple[bytes, dict]:
    """Laid out as tritonclient.http does: JSON header, then raw little-endian data."""
    raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    header = {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": DATATYPES[array.dtype.name],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": "logits", "parameters": {"binary_data": binary_out}}],
    }
    encoded = json.dumps(header).encode()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(encoded)),
    }
    return encoded + raw, headers


def outputs_of(response: httpx.Response) -> dict[str, np.ndarray]:
    """Decode a JSON or binary OIP response by hand."""
    length = response.headers.get("inference-header-content-length")
    content = response.content
    header = json.loads(content[: int(length)] if length else content)
    offset = int(length) if length else 0
    result = {}
    for output in header["outputs"]:
        dtype = np.dtype(NUMPY[output["datatype"]]).newbyteorder("<")
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            data = np.frombuffer(content[offset : offset + size], dtype=dtype)
            offset += size
        else:
            data = np.asarray(output["data"], dtype=dtype)
        result[output["name"]] = data.reshape(output["shape"])
    return result
