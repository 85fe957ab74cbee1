"""The infer routes in the gateway's OpenAPI document.

They are plain Starlette routes (``add_plain_route``: FastAPI's request parsing costs
tens of microseconds a request), so FastAPI does not describe them; this adds the
Open Inference Protocol's request and response shapes by hand, so that clients, docs
and schemathesis see the gateway's whole public surface.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
             "INT64", "FP16", "FP32", "FP64", "BYTES"]  # fmt: skip

TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": DATATYPES},
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {}},
    },
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": TENSOR, "minItems": 1},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": TENSOR},
    },
}
ERROR = {
    "description": "Bad input, unknown model, oversize or slow body, or a pipeline failure",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    },
}


def _operation(with_version: bool) -> dict[str, Any]:
    parameters = [
        {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    if with_version:
        parameters.append(
            {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
        )
    return {
        "post": {
            "summary": "Infer (Open Inference Protocol v2; binary tensors with "
            "Inference-Header-Content-Length)",
            "operationId": "infer_with_version" if with_version else "infer",
            "parameters": parameters,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": INFER_REQUEST},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {
                "200": {
                    "description": "The model's outputs",
                    "content": {"application/json": {"schema": INFER_RESPONSE}},
                },
                **{status: ERROR for status in ("400", "404", "408", "413", "502", "503", "504")},
            },
        }
    }


def document_infer_routes(app: FastAPI, *, model_name: str, version: str) -> None:
    """Wrap ``app.openapi`` so that the generated document includes the infer routes and
    names the one model (and version) this gateway serves in every path."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            paths = generate().setdefault("paths", {})  # generate() caches the document
            paths["/v2/models/{model_name}/infer"] = _operation(with_version=False)
            paths["/v2/models/{model_name}/versions/{version}/infer"] = _operation(True)
            known = {"model_name": model_name, "version": version}
            for operation in (op for item in paths.values() for op in item.values()):
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path" and parameter["name"] in known:
                        parameter["schema"] = {"type": "string", "enum": [known[parameter["name"]]]}
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
