"""The OIP v2 codec: round trips, what real clients send, and every way a request can be wrong."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_service.gateway.oip import (
    BINARY_CONTENT_TYPE,
    DATATYPES,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    InferRequest,
    OipError,
    OipResponseError,
    PayloadTooLargeError,
    TensorMetadata,
    datatype_of,
    dtype_of,
    encode_infer_response,
    model_metadata,
    parse_header_length,
    parse_infer_request,
    parse_infer_response,
)

INPUTS = (TensorMetadata("x", "FP32", (-1, 3)), TensorMetadata("mask", "BOOL", (2,)))
OUTPUTS = (TensorMetadata("y", "FP32", (-1, 3)), TensorMetadata("score", "INT64", (-1,)))
X = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
MASK = np.array([True, False])
RESULTS = {"y": X * 2, "score": np.array([7, -(2**40)], dtype=np.int64)}

# tritonclient.http's triton_to_np_dtype, written out independently of the module under test.
ORACLE_DTYPES = {
    "BOOL": bool,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def encode_request(document: dict[str, Any], *blobs: bytes) -> tuple[bytes, int | None]:
    """A body as tritonclient.http builds it: json.dumps, then the blobs, if any."""
    header = json.dumps(document).encode()
    return (header + b"".join(blobs), len(header)) if blobs else (header, None)


def parse(
    document: dict[str, Any],
    *blobs: bytes,
    inputs: tuple[TensorMetadata, ...] = INPUTS,
    outputs: tuple[TensorMetadata, ...] = OUTPUTS,
) -> InferRequest:
    body, length = encode_request(document, *blobs)
    return parse_infer_request(body, header_length=length, inputs=inputs, outputs=outputs)


def oracle_decode(body: bytes, headers: dict[str, str]) -> dict[str, np.ndarray]:
    """What tritonclient.http.InferResult does with a response body."""
    length = headers.get(HEADER_LENGTH)
    end = len(body) if length is None else int(length)
    document, binary = json.loads(body[:end]), body[end:]
    arrays, position = {}, 0
    for output in document["outputs"]:
        dtype = ORACLE_DTYPES[output["datatype"]]
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            array = np.array(output["data"], dtype=dtype)
        else:
            array = np.frombuffer(binary[position : position + size], dtype=dtype)
            position += size
        arrays[output["name"]] = array.reshape(output["shape"])
    assert position == len(binary)
    return arrays


def assert_arrays_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(actual) == list(expected)
    for name, array in expected.items():
        assert actual[name].dtype == array.dtype, name
        assert actual[name].shape == array.shape, name
        np.testing.assert_array_equal(actual[name], array)


# -- what real clients send ---------------------------------------------------------------------


def test_curl_json_request_gets_a_json_response() -> None:
    body = b"""{"id": "req-1", "inputs": [
        {"name": "x", "shape": [2, 3], "datatype": "FP32",
         "data": [[0, 0.25, 0.5], [0.75, 1, 1.25]]},
        {"name": "mask", "shape": [2], "datatype": "BOOL", "data": [true, false]}]}"""
    request = parse_infer_request(body, header_length=None, inputs=INPUTS, outputs=OUTPUTS)
    assert_arrays_equal(request.inputs, {"x": X, "mask": MASK})
    assert request.requested_outputs is None
    assert request.binary_outputs is None
    assert request.default_binary is False

    body, headers = encode_infer_response(
        model_name="tiny", model_version="1", request=request, outputs=RESULTS
    )
    assert headers == {"Content-Type": JSON_CONTENT_TYPE}
    assert json.loads(body) == {
        "model_name": "tiny",
        "model_version": "1",
        "id": "req-1",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [2, 3], "data": [0, 0.5, 1, 1.5, 2, 2.5]},
            {"name": "score", "datatype": "INT64", "shape": [2], "data": [7, -(2**40)]},
        ],
    }


def test_tritonclient_binary_request_gets_a_binary_response() -> None:
    # Byte for byte what tritonclient.http.InferenceServerClient.infer sends for
    # InferInput.set_data_from_numpy(..., binary_data=True) and
    # InferRequestedOutput(name, binary_data=True).
    header = json.dumps(
        {
            "id": "7",
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32"}
                | {"parameters": {"binary_data_size": 24}},
                {"name": "mask", "shape": [2], "datatype": "BOOL"}
                | {"parameters": {"binary_data_size": 2}},
            ],
            "outputs": [
                {"name": "y", "parameters": {"binary_data": True}},
                {"name": "score", "parameters": {"binary_data": True}},
            ],
        }
    ).encode()
    body = header + X.tobytes() + MASK.tobytes()
    request = parse_infer_request(
        body,
        header_length=parse_header_length(str(len(header))),
        inputs=INPUTS,
        outputs=OUTPUTS,
    )
    assert_arrays_equal(request.inputs, {"x": X, "mask": MASK})
    assert request.id == "7"
    assert request.requested_outputs == ["y", "score"]
    assert request.binary_outputs == {"y": True, "score": True}

    body, headers = encode_infer_response(
        model_name="tiny", model_version=None, request=request, outputs=RESULTS
    )
    assert headers["Content-Type"] == BINARY_CONTENT_TYPE
    length = int(headers[HEADER_LENGTH])
    document = json.loads(body[:length])
    assert "model_version" not in document
    assert document["outputs"][0] == {
        "name": "y",
        "datatype": "FP32",
        "shape": [2, 3],
        "parameters": {"binary_data_size": 24},
    }
    assert_arrays_equal(oracle_decode(body, headers), RESULTS)
    assert_arrays_equal(parse_infer_response(body, header_length=length).outputs, RESULTS)


def test_tritonclient_without_requested_outputs_asks_for_all_binary() -> None:
    # With no InferRequestedOutput, tritonclient.http sets binary_data_output at request level.
    document = {
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": X.ravel().tolist()},
            {"name": "mask", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        ],
        "parameters": {"binary_data_output": True},
    }
    request = parse(document)
    assert request.default_binary is True
    assert request.requested_outputs is None
    body, headers = encode_infer_response(
        model_name="tiny", model_version="1", request=request, outputs=RESULTS
    )
    assert headers["Content-Type"] == BINARY_CONTENT_TYPE
    assert_arrays_equal(oracle_decode(body, headers), RESULTS)


def test_binary_inputs_are_read_only_views_of_the_body() -> None:
    body, length = encode_request(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32"}
                | {"parameters": {"binary_data_size": 24}},
                {"name": "mask", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            ]
        },
        X.tobytes(),
    )
    x = parse_infer_request(body, header_length=length, inputs=INPUTS, outputs=OUTPUTS).inputs["x"]
    assert np.shares_memory(x, np.frombuffer(body, dtype=np.uint8))
    assert not x.flags.writeable


def test_mixed_binary_and_json_inputs_and_outputs() -> None:
    request = parse(
        {
            "inputs": [
                {"name": "mask", "shape": [2], "datatype": "BOOL", "data": [True, False]},
                {"name": "x", "shape": [2, 3], "datatype": "FP32"}
                | {"parameters": {"binary_data_size": 24}},
            ],
            "outputs": [
                {"name": "score", "parameters": {"binary_data": False}},
                {"name": "y", "parameters": {"binary_data": True}},
            ],
        },
        X.tobytes(),
    )
    assert_arrays_equal(request.inputs, {"mask": MASK, "x": X})
    body, headers = encode_infer_response(
        model_name="tiny", model_version="1", request=request, outputs=RESULTS
    )
    document = json.loads(body[: int(headers[HEADER_LENGTH])])
    assert [o["name"] for o in document["outputs"]] == ["score", "y"]
    assert document["outputs"][0]["data"] == [7, -(2**40)]
    assert_arrays_equal(oracle_decode(body, headers), {"score": RESULTS["score"], "y": X * 2})


def test_per_output_binary_data_overrides_the_request_default() -> None:
    request = parse(
        {
            "inputs": [
                {"name": "x", "shape": [0, 3], "datatype": "FP32", "data": []},
                {"name": "mask", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            ],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "score"}],
        }
    )
    assert request.inputs["x"].shape == (0, 3)
    assert request.binary_outputs == {"y": False, "score": True}
    assert request.wants_binary("score")
    assert not request.wants_binary("y")


def test_empty_outputs_array_means_all_outputs() -> None:
    request = parse(
        {
            "inputs": [
                {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
                {"name": "mask", "shape": [2], "datatype": "BOOL", "data": [True, True]},
            ],
            "outputs": [],
        }
    )
    assert request.requested_outputs is None
    body, _ = encode_infer_response(
        model_name="tiny", model_version=None, request=request, outputs=RESULTS
    )
    assert [o["name"] for o in json.loads(body)["outputs"]] == ["y", "score"]


def test_scalars_nested_data_nan_and_empty_binary_tensors() -> None:
    inputs = (
        TensorMetadata("s", "INT32", ()),
        TensorMetadata("v", "FP64", (-1, 2, 2)),
        TensorMetadata("e", "FP16", (-1,)),
    )
    body = (
        b'{"inputs": [{"name": "s", "shape": [], "datatype": "INT32", "data": [-5]},'
        b'{"name": "v", "shape": [1, 2, 2], "datatype": "FP64", "data": [[[NaN, Infinity],'
        b" [-Infinity, 1e-300]]]},"
        b'{"name": "e", "shape": [0], "datatype": "FP16", "parameters": {"binary_data_size": 0}}]}'
    )
    request = parse_infer_request(body, header_length=len(body), inputs=inputs, outputs=())
    assert request.inputs["s"].shape == ()
    assert request.inputs["s"] == -5
    v = request.inputs["v"].ravel()
    assert np.isnan(v[0])
    assert list(v[1:]) == [np.inf, -np.inf, 1e-300]
    assert request.inputs["e"].shape == (0,)


def test_encode_sends_big_endian_and_strided_outputs_correctly() -> None:
    request = InferRequest(
        id=None, inputs={}, binary_outputs=None, default_binary=True, requested_outputs=None
    )
    strided = np.arange(24, dtype=">i4").reshape(4, 6)[:, ::2]
    body, headers = encode_infer_response(
        model_name="m", model_version=None, request=request, outputs={"a": strided}
    )
    np.testing.assert_array_equal(oracle_decode(body, headers)["a"], strided)


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"y": X}, "no output 'score'"),
        ({"y": X, "score": np.array(["a"])}, "output 'score'"),
        ({"y": X, "score": np.array([1j])}, "complex128"),
    ],
)
def test_encode_rejects_outputs_it_cannot_send(outputs: dict, message: str) -> None:
    request = InferRequest(
        id=None,
        inputs={},
        binary_outputs={"y": False, "score": False},
        default_binary=False,
        requested_outputs=["y", "score"],
    )
    with pytest.raises(OipResponseError, match=message) as caught:
        encode_infer_response(model_name="m", model_version=None, request=request, outputs=outputs)
    assert caught.value.status_code == 500


def test_json_data_of_150k_floats() -> None:
    values = np.linspace(-1, 1, 150_528, dtype=np.float32)
    inputs = (TensorMetadata("image", "FP32", (-1, 3, 224, 224)),)
    document = {
        "inputs": [
            {"name": "image", "shape": [1, 3, 224, 224], "datatype": "FP32"}
            | {"data": values.tolist()}
        ]
    }
    request = parse(document, inputs=inputs)
    np.testing.assert_array_equal(request.inputs["image"].ravel(), values)


# -- every datatype, every direction ------------------------------------------------------------


def sample(datatype: str) -> np.ndarray:
    dtype = DATATYPES[datatype]
    if dtype.kind == "b":
        return np.array([[True, False, True], [False, False, True]])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, info.max, 0], [1, info.max // 3, info.min // 7]], dtype=dtype)
    info = np.finfo(dtype)
    values = [[info.min, info.max, info.tiny], [np.nan, -np.inf, -0.5]]
    return np.array(values, dtype=dtype)


def round_trip(array: np.ndarray, *, binary_in: bool, binary_out: bool) -> None:
    datatype = datatype_of(array.dtype)
    declared = (TensorMetadata("t", datatype, (-1,) * array.ndim),)
    entry: dict[str, Any] = {"name": "t", "shape": list(array.shape), "datatype": datatype}
    blobs = []
    if binary_in:
        entry["parameters"] = {"binary_data_size": array.nbytes}
        blobs.append(array.tobytes())
    else:
        entry["data"] = array.ravel().tolist()
    document = {"inputs": [entry], "outputs": [{"name": "t"} | {"parameters": {}}]}
    document["outputs"][0]["parameters"]["binary_data"] = binary_out
    request = parse(document, *blobs, inputs=declared, outputs=declared)
    assert_arrays_equal(request.inputs, {"t": array})

    body, headers = encode_infer_response(
        model_name="m", model_version="1", request=request, outputs=request.inputs
    )
    assert (HEADER_LENGTH in headers) is binary_out
    assert_arrays_equal(oracle_decode(body, headers), {"t": array})
    length = parse_header_length(headers.get(HEADER_LENGTH))
    assert_arrays_equal(parse_infer_response(body, header_length=length).outputs, {"t": array})


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize(("binary_in", "binary_out"), [(0, 0), (1, 1), (1, 0), (0, 1)])
def test_every_datatype_round_trips(datatype: str, binary_in: int, binary_out: int) -> None:
    round_trip(sample(datatype), binary_in=bool(binary_in), binary_out=bool(binary_out))


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(list(DATATYPES.values())),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    ),
    st.booleans(),
    st.booleans(),
)
def test_arbitrary_arrays_round_trip(array: np.ndarray, binary_in: bool, binary_out: bool) -> None:
    round_trip(array, binary_in=binary_in, binary_out=binary_out)


def test_json_response_data_is_flat_row_major() -> None:
    request = InferRequest(
        id=None, inputs={}, binary_outputs=None, default_binary=False, requested_outputs=None
    )
    column_major = np.asfortranarray(np.arange(6, dtype=np.uint16).reshape(2, 3))
    body, _ = encode_infer_response(
        model_name="m", model_version=None, request=request, outputs={"a": column_major}
    )
    (output,) = json.loads(body)["outputs"]
    assert output == {
        "name": "a",
        "datatype": "UINT16",
        "shape": [2, 3],
        "data": [0, 1, 2, 3, 4, 5],
    }


def test_json_response_writes_non_finite_floats_as_python_json_does() -> None:
    request = InferRequest(
        id=None, inputs={}, binary_outputs=None, default_binary=False, requested_outputs=None
    )
    values = np.array([np.nan, np.inf, -np.inf, 0.1], dtype=np.float32)
    body, _ = encode_infer_response(
        model_name="m", model_version=None, request=request, outputs={"a": values}
    )
    assert b"[NaN,Infinity,-Infinity," in body
    decoded = parse_infer_response(body, header_length=None).outputs["a"]
    np.testing.assert_array_equal(decoded, values)


def test_json_response_floats_round_trip_exactly() -> None:
    request = InferRequest(
        id=None, inputs={}, binary_outputs=None, default_binary=False, requested_outputs=None
    )
    values = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
    body, _ = encode_infer_response(
        model_name="m", model_version=None, request=request, outputs={"a": values}
    )
    decoded = parse_infer_response(body, header_length=None).outputs["a"]
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, values)


# -- datatypes, header length, metadata ---------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        ("float32", "FP32"),
        (">f4", "FP32"),
        (np.float16, "FP16"),
        ("float64", "FP64"),
        (bool, "BOOL"),
        ("uint8", "UINT8"),
        ("int64", "INT64"),
        ("uint64", "UINT64"),
    ],
)
def test_datatype_of(dtype: Any, datatype: str) -> None:
    assert datatype_of(np.dtype(dtype)) == datatype
    assert dtype_of(datatype) == np.dtype(dtype).newbyteorder("<")


@pytest.mark.parametrize(
    ("datatype", "message"),
    [("BYTES", "BYTES"), ("fp32", "unknown datatype 'fp32'"), ("", "unknown")],
)
def test_dtype_of_rejects_unsupported_datatypes(datatype: str, message: str) -> None:
    with pytest.raises(OipError, match=message):
        dtype_of(datatype)


@pytest.mark.parametrize("dtype", [np.complex64, np.dtype("U3"), object])
def test_datatype_of_rejects_dtypes_without_an_oip_name(dtype: Any) -> None:
    with pytest.raises(OipError, match="no OIP datatype"):
        datatype_of(np.dtype(dtype))


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("12", 12), (" 0 ", 0)])
def test_parse_header_length(value: str | None, expected: int | None) -> None:
    assert parse_header_length(value) == expected


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "0x10", "１２", "9" * 40])
def test_parse_header_length_rejects_non_integers(value: str) -> None:
    with pytest.raises(OipError, match=HEADER_LENGTH):
        parse_header_length(value)


def test_model_metadata_matches_the_oip_schema() -> None:
    metadata = model_metadata(
        name="tiny", versions=["1"], platform="onnxruntime_onnx", inputs=INPUTS, outputs=OUTPUTS
    )
    assert json.loads(json.dumps(metadata)) == {
        "name": "tiny",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "mask", "datatype": "BOOL", "shape": [2]},
        ],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "score", "datatype": "INT64", "shape": [-1]},
        ],
    }


# -- every way a request can be wrong -----------------------------------------------------------

DROP = object()
INTS = (TensorMetadata("n", "UINT8", (-1,)), TensorMetadata("k", "INT8", (-1,)))
DYNAMIC2 = (TensorMetadata("v", "FP32", (-1, -1)),)


def request_with(x: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A valid request for INPUTS with some keys of input "x" or of the top level changed."""
    entry: dict[str, Any] = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
    document: dict[str, Any] = {
        "inputs": [entry, {"name": "mask", "shape": [2], "datatype": "BOOL", "data": [True] * 2}]
    }
    for target, changes in ((entry, x or {}), (document, top)):
        for key, value in changes.items():
            if value is DROP:
                del target[key]
            else:
                target[key] = value
    return document


def binary_x(size: Any = 12) -> dict[str, Any]:
    """Input keys for binary data of ``size`` bytes instead of JSON data."""
    return {"data": DROP, "parameters": {"binary_data_size": size}}


@dataclass
class Bad:
    """A request that must fail with ``error`` and a message holding every ``expect`` piece."""

    id: str
    body: bytes | dict[str, Any]
    expect: tuple[str, ...]
    blobs: tuple[bytes, ...] = ()
    header_length: Any = "auto"
    inputs: tuple[TensorMetadata, ...] = INPUTS
    error: type[Exception] = OipError
    max_elements: int = 50_000_000


ONE_X = np.ones(3, np.float32).tobytes()
X_ENTRY, MASK_ENTRY = request_with()["inputs"]
EMPTY_BINARY = {"parameters": {"binary_data_size": 0}}
MASK_BINARY = {"name": "mask", "shape": [2], "datatype": "BOOL"} | {
    "parameters": {"binary_data_size": 2}
}
BAD = [
    # body and header length
    Bad("length-negative", request_with(), ("non-negative",), header_length=-1),
    Bad("length-past-body", request_with(), ("has only",), header_length=10_000),
    Bad("length-not-int", request_with(), ("non-negative integer",), header_length="12"),
    Bad("not-utf8", b'{"inputs": "\xff"}', ("UTF-8",)),
    Bad("not-json", b"{inputs: []}", ("not valid JSON",)),
    Bad("truncated-json", b'{"inputs": [', ("not valid JSON",)),
    Bad("top-level-array", b"[1, 2]", ("must be an object", "an array")),
    Bad("no-inputs", {"outputs": []}, ('"inputs" array', "null")),
    Bad("inputs-not-array", request_with(inputs={"x": 1}), ('"inputs" array', "an object")),
    Bad("input-not-object", request_with(inputs=[1]), ("inputs[0] must be an object",)),
    Bad("input-without-name", request_with({"name": DROP}), ('inputs[0] needs a string "name"',)),
    Bad("input-name-not-string", request_with({"name": 3}), ('string "name"', "a number")),
    # names
    Bad(
        "duplicate-input",
        request_with(inputs=[X_ENTRY, X_ENTRY, MASK_ENTRY]),
        ("input 'x' appears twice",),
    ),
    Bad("unknown-input", request_with({"name": "z"}), ("unknown input 'z'", "'x', 'mask'")),
    Bad(
        "missing-input",
        request_with(inputs=[X_ENTRY]),
        ("missing input 'mask'",),
    ),
    # datatype
    Bad("datatype-missing", request_with({"datatype": DROP}), ("input 'x'", '"datatype"')),
    Bad("datatype-mismatch", request_with({"datatype": "INT32"}), ("INT32", "declares FP32")),
    Bad("datatype-unknown", request_with({"datatype": "FLOAT32"}), ("'x'", "unknown datatype")),
    Bad("datatype-bytes", request_with({"datatype": "BYTES"}), ("'x'", "BYTES", "not supported")),
    # shape
    Bad("shape-missing", request_with({"shape": DROP}), ("'x'", '"shape" must be an array')),
    Bad("shape-string", request_with({"shape": "1,3"}), ("'x'", "non-negative integers")),
    Bad("shape-negative", request_with({"shape": [-1, 3]}), ("'x'", "non-negative integers")),
    Bad("shape-bool", request_with({"shape": [True, 3]}), ("'x'", "non-negative integers")),
    Bad("shape-float", request_with({"shape": [1.0, 3]}), ("'x'", "non-negative integers")),
    Bad("shape-huge-dim", request_with({"shape": [2**63, 3]}), ("'x'", "non-negative integers")),
    Bad("shape-rank", request_with({"shape": [3]}), ("'x'", "shape [3]", "declares [-1, 3]")),
    Bad("shape-dim", request_with({"shape": [1, 4]}), ("'x'", "shape [1, 4]", "[-1, 3]")),
    # JSON data
    Bad("data-count", request_with({"shape": [2, 3]}), ("'x'", "3 data elements", "needs 6")),
    Bad("data-not-array", request_with({"data": {"a": 1}}), ("'x'", '"data" must be an array')),
    Bad("data-scalar", request_with({"data": 1.5}), ("'x'", '"data" must be an array')),
    Bad("data-string", request_with({"data": ["1", 2, 3]}), ("'x'", "FP32", "found strings")),
    Bad("data-null", request_with({"data": [None, 2, 3]}), ("'x'", "numbers", "found null")),
    Bad("data-bool-in-float", request_with({"data": [True, 2, 3]}), ("'x'", "true/false")),
    Bad("data-object", request_with({"data": [{}, 2, 3]}), ("'x'", "found objects")),
    Bad("nesting-ragged", request_with({"data": [[1, 2], [3]]}), ("'x'", "nested", "depth 0")),
    Bad("nesting-partial", request_with({"data": [1, [2], 3]}), ("'x'", "nested")),
    Bad("nesting-too-deep", request_with({"data": [[[1], [2], [3]]]}), ("'x'", "found arrays")),
    Bad("nesting-inner", request_with({"data": [[1, 2, 3, 4]]}), ("'x'", "nested", "depth 1")),
    Bad("fp32-overflow", request_with({"data": [1e300, 2, 3]}), ("'x'", "out of range for FP32")),
    Bad("fp-huge-int", request_with({"data": [10**400, 2, 3]}), ("'x'", "too large for FP32")),
    Bad(
        "bool-as-int",
        request_with(inputs=[X_ENTRY, MASK_ENTRY | {"data": [1, 0]}]),
        ("input 'mask'", "true/false", "found integers"),
    ),
    Bad(
        "uint8-overflow",
        {"inputs": [{"name": "n", "shape": [2], "datatype": "UINT8", "data": [1, 300]}]},
        ("input 'n'", "300", "out of range for UINT8"),
        inputs=INTS[:1],
    ),
    Bad(
        "uint8-negative",
        {"inputs": [{"name": "n", "shape": [1], "datatype": "UINT8", "data": [-1]}]},
        ("input 'n'", "-1", "out of range"),
        inputs=INTS[:1],
    ),
    Bad(
        "int8-past-64-bits",
        {"inputs": [{"name": "k", "shape": [1], "datatype": "INT8", "data": [2**70]}]},
        ("input 'k'", str(2**70), "out of range for INT8"),
        inputs=INTS[1:],
    ),
    Bad(
        "int8-float",
        {"inputs": [{"name": "k", "shape": [1], "datatype": "INT8", "data": [1.5]}]},
        ("input 'k'", "integers", "non-integer"),
        inputs=INTS[1:],
    ),
    Bad(
        "int8-nan",
        b'{"inputs": [{"name": "k", "shape": [1], "datatype": "INT8", "data": [NaN]}]}',
        ("input 'k'", "integers"),
        inputs=INTS[1:],
    ),
    # binary data
    Bad("data-and-binary", request_with(binary_x() | {"data": [1, 2, 3]}), ("'x'", "both")),
    Bad("neither", request_with({"data": DROP}), ("'x'", "neither")),
    Bad(
        "binary-size-wrong",
        request_with(binary_x(8)),
        ("'x'", "binary_data_size is 8", "needs 12"),
        blobs=(b"\0" * 8,),
    ),
    Bad("binary-size-string", request_with(binary_x("12")), ("'x'", "non-negative integer")),
    Bad("binary-size-negative", request_with(binary_x(-12)), ("'x'", "non-negative integer")),
    Bad("binary-too-short", request_with(binary_x()), ("'x'", "only 4"), blobs=(b"1234",)),
    Bad("binary-trailing", request_with(binary_x()), ("1 bytes",), blobs=(ONE_X + b"!",)),
    Bad("json-trailing", request_with(), ("3 bytes",), blobs=(b"abc",)),
    Bad(
        "binary-without-length",
        request_with(binary_x()),
        ("bytes follow the JSON object", HEADER_LENGTH),
        blobs=(ONE_X,),
        header_length=None,
    ),
    Bad(
        "empty-binary-without-length",
        {"inputs": [{"name": "v", "shape": [0, 2], "datatype": "FP32"} | EMPTY_BINARY]},
        ("input 'v'", HEADER_LENGTH),
        inputs=DYNAMIC2,
    ),
    Bad(
        "binary-bool-not-0-1",
        request_with(inputs=[X_ENTRY, MASK_BINARY]),
        ("input 'mask'", "0 or 1"),
        blobs=(b"\x01\x02",),
    ),
    Bad(
        "shared-memory",
        request_with({"parameters": {"shared_memory_region": "r"}}),
        ("'x'", "shared_memory_region", "not supported"),
    ),
    # limits
    Bad(
        "too-many-elements",
        request_with({"shape": [1000, 3], "data": DROP}),
        ("input 'x'", "3000 elements", "limit 2999"),
        error=PayloadTooLargeError,
        max_elements=2999,
    ),
    Bad(
        "empty-but-absurd",
        {"inputs": [{"name": "v", "shape": [0, 10**12], "datatype": "FP32", "data": []}]},
        ("input 'v'", "limit"),
        inputs=DYNAMIC2,
        error=PayloadTooLargeError,
    ),
    # outputs, id, parameters
    Bad("outputs-not-array", request_with(outputs={"y": {}}), ('"outputs" must be an array',)),
    Bad("output-not-object", request_with(outputs=["y"]), ("outputs[0] must be an object",)),
    Bad("output-unknown", request_with(outputs=[{"name": "z"}]), ("unknown output 'z'", "'y'")),
    Bad(
        "output-twice",
        request_with(outputs=[{"name": "y"}, {"name": "y"}]),
        ("output 'y' is requested twice",),
    ),
    Bad(
        "output-binary-not-bool",
        request_with(outputs=[{"name": "y", "parameters": {"binary_data": "yes"}}]),
        ("output 'y'", "'binary_data' must be true or false"),
    ),
    Bad(
        "output-parameters-not-object",
        request_with(outputs=[{"name": "y", "parameters": [1]}]),
        ("output 'y'", '"parameters" must be an object'),
    ),
    Bad(
        "output-classification",
        request_with(outputs=[{"name": "y", "parameters": {"classification": 3}}]),
        ("output 'y'", "classification", "not supported"),
    ),
    Bad(
        "binary-data-output-not-bool",
        request_with(parameters={"binary_data_output": 1}),
        ("'binary_data_output' must be true or false",),
    ),
    Bad("id-not-string", request_with(id=7), ('"id" must be a string', "a number")),
    Bad("parameters-not-object", request_with(parameters=[]), ('"parameters" must be an object',)),
    Bad(
        "input-parameters-not-object",
        request_with({"parameters": "binary"}),
        ("input 'x'", '"parameters" must be an object'),
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_bad_requests_are_rejected_with_a_clear_message(case: Bad) -> None:
    header = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
    body = header + b"".join(case.blobs)
    length = len(header) if case.blobs else None
    if case.header_length != "auto":
        length = case.header_length
    with pytest.raises(case.error) as caught:
        parse_infer_request(
            body,
            header_length=length,
            inputs=case.inputs,
            outputs=OUTPUTS,
            max_elements=case.max_elements,
        )
    assert type(caught.value) is case.error
    for fragment in case.expect:
        assert fragment in caught.value.message, caught.value.message
    assert caught.value.status_code == (413 if case.error is PayloadTooLargeError else 400)


# -- nothing but OipError ever escapes ----------------------------------------------------------

FUZZ_INPUTS = (*INPUTS, TensorMetadata("n", "INT8", (-1,)))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def parse_never_crashes(body: bytes, header_length: int | None) -> None:
    with contextlib.suppress(OipError, PayloadTooLargeError):
        parse_infer_request(
            body,
            header_length=header_length,
            inputs=FUZZ_INPUTS,
            outputs=OUTPUTS,
            max_elements=10_000,
        )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.none() | st.integers(-3, 250))
def test_arbitrary_bytes_only_raise_oip_errors(body: bytes, header_length: int | None) -> None:
    parse_never_crashes(body, header_length)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "parameters", "inputs", "outputs"]) | st.text(max_size=4),
        json_values,
        max_size=5,
    )
)
def test_arbitrary_json_objects_only_raise_oip_errors(document: dict[str, Any]) -> None:
    parse_never_crashes(json.dumps(document).encode(), None)


# Values a mutation writes: anything JSON, and near misses of shapes, sizes and data.
near_misses = (
    json_values
    | st.integers(-1, 30)
    | st.integers(-(2**70), 2**70)
    | st.lists(st.integers(-1, 4), max_size=3)
    | st.lists(st.integers(-200, 300) | st.floats() | st.booleans(), max_size=7)
    | st.lists(st.lists(st.integers(0, 2), min_size=3, max_size=3), max_size=2)
    | st.sampled_from(["FP32", "BOOL", "INT8", "BYTES", "x", "mask", "n", "y"])
)


def mutate(draw: st.DrawFn, targets: list[dict[str, Any]]) -> None:
    """Delete, replace or add up to two keys anywhere in a valid document."""
    for _ in range(draw(st.integers(0, 2))):
        target = draw(st.sampled_from(targets))
        key = draw(st.sampled_from([*target, "parameters", "data", "binary_data_size", "id"]))
        if key in target and draw(st.booleans()):
            del target[key]
        else:
            target[key] = draw(near_misses)


def tail_of(draw: st.DrawFn, blobs: list[bytes]) -> bytes:
    """The binary section, usually intact, sometimes short or with trailing bytes."""
    tail = b"".join(blobs)
    change = draw(st.sampled_from([0, 0, 0, -1, -3, 1, 4]))
    return tail[:change] if change < 0 else tail + b"\1" * change


@st.composite
def mutated_requests(draw: st.DrawFn) -> tuple[bytes, int | None]:
    arrays = {
        "x": draw(hnp.arrays(np.float32, st.tuples(st.integers(0, 3), st.just(3)))),
        "mask": draw(hnp.arrays(np.bool_, (2,))),
        "n": draw(hnp.arrays(np.int8, st.tuples(st.integers(0, 4)))),
    }
    entries, blobs = [], []
    for name in draw(st.permutations(list(arrays))):
        array = arrays[name]
        entry = {"name": name, "shape": list(array.shape), "datatype": datatype_of(array.dtype)}
        if draw(st.booleans()):
            entry["parameters"] = {"binary_data_size": array.nbytes}
            blobs.append(array.tobytes())
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    output = {"name": "y", "parameters": {"binary_data": draw(st.booleans())}}
    document = {"id": "1", "inputs": entries, "outputs": [output]}
    mutate(draw, [document, *entries, output, output["parameters"]])
    header = json.dumps(document).encode()
    length = len(header) if blobs or draw(st.booleans()) else None
    return header + tail_of(draw, blobs), length


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_requests())
def test_mutated_requests_only_raise_oip_errors(request: tuple[bytes, int | None]) -> None:
    parse_never_crashes(*request)


@st.composite
def mutated_responses(draw: st.DrawFn) -> tuple[bytes, int | None]:
    outputs = {"y": draw(hnp.arrays(np.float32, (2, 3))), "score": np.arange(2)}
    binary = {name: draw(st.booleans()) for name in outputs}
    request = InferRequest(
        id="1", inputs={}, binary_outputs=binary, default_binary=False, requested_outputs=None
    )
    body, headers = encode_infer_response(
        model_name="m", model_version="1", request=request, outputs=outputs
    )
    length = len(body) if HEADER_LENGTH not in headers else int(headers[HEADER_LENGTH])
    document = json.loads(body[:length])
    mutate(draw, [document, *document["outputs"]])
    header = json.dumps(document).encode()
    tail = tail_of(draw, [body[length:]])
    return header + tail, len(header) if HEADER_LENGTH in headers or tail else None


@settings(max_examples=150, deadline=None)
@given(mutated_responses())
def test_mutated_responses_only_raise_oip_errors(response: tuple[bytes, int | None]) -> None:
    with contextlib.suppress(OipError, PayloadTooLargeError):
        parse_infer_response(response[0], header_length=response[1])
