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

from edge_service.gateway.oip.request import (
    InferRequest,
    parse_header_length,
    parse_infer_request,
)
from edge_service.gateway.oip.response import (
    InferResponse,
    encode_infer_response,
    model_metadata,
    parse_infer_response,
)
from edge_service.gateway.oip.tensors import (
    BINARY_CONTENT_TYPE,
    DATATYPES,
    DYNAMIC,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    OipError,
    OipResponseError,
    PayloadTooLargeError,
    TensorMetadata,
    datatype_of,
    dtype_of,
    shape_matches,
)

__all__ = [
    "BINARY_CONTENT_TYPE",
    "DATATYPES",
    "DYNAMIC",
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "InferRequest",
    "InferResponse",
    "OipError",
    "OipResponseError",
    "PayloadTooLargeError",
    "TensorMetadata",
    "datatype_of",
    "dtype_of",
    "encode_infer_response",
    "model_metadata",
    "parse_header_length",
    "parse_infer_request",
    "parse_infer_response",
    "shape_matches",
]
