from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from neukonfig.wire import DTYPES, ExpectedTensor, WireFormatError, decode, encode

arrays = hnp.arrays(
    dtype=st.sampled_from(DTYPES).map(np.dtype),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), arrays, max_size=4))
def test_round_trip_is_exact(tensors: dict[str, np.ndarray]) -> None:
    decoded = decode(encode(tensors))
    assert list(decoded) == list(tensors)
    for name, array in tensors.items():
        assert decoded[name].dtype == array.dtype
        assert decoded[name].shape == array.shape
        np.testing.assert_array_equal(decoded[name], array)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_rejected_cleanly(junk: bytes) -> None:
    with contextlib.suppress(WireFormatError):
        decode(junk)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_corrupted_frames_never_crash(position: int, patch: bytes) -> None:
    frame = bytearray(encode({"x": np.arange(12, dtype=np.float32).reshape(3, 4)}))
    position %= len(frame)
    frame[position : position + len(patch)] = patch
    with contextlib.suppress(WireFormatError):
        decode(bytes(frame))


def test_decode_views_the_buffer_without_copying() -> None:
    frame = encode({"x": np.ones((64, 64), dtype=np.float32)})
    decoded = decode(frame)["x"]
    assert not decoded.flags.owndata
    assert not decoded.flags.writeable
    assert decoded.ctypes.data % 64 == np.frombuffer(frame, np.uint8).ctypes.data % 64


def test_non_contiguous_and_big_endian_arrays_are_sent_correctly() -> None:
    source = np.arange(24, dtype=">i4").reshape(4, 6)[:, ::2]
    decoded = decode(encode({"x": source}))["x"]
    np.testing.assert_array_equal(decoded, source)
    assert decoded.dtype == np.dtype("<i4")


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"x": np.zeros((1, 3), np.float64)}, "dtype float64, expected float32"),
        ({"x": np.zeros((1, 4), np.float32)}, r"shape \[1, 4\], expected \['batch', 3\]"),
        ({"x": np.zeros((1, 3, 1), np.float32)}, "shape"),
        ({"y": np.zeros((1, 3), np.float32)}, "unexpected tensor 'y'"),
        ({}, "missing tensor 'x'"),
    ],
)
def test_expected_shape_and_dtype_are_enforced(tensors, message: str) -> None:
    expected = [ExpectedTensor(name="x", dtype="float32", shape=["batch", 3])]
    with pytest.raises(WireFormatError, match=message):
        decode(encode(tensors), expected)


def test_symbolic_dims_accept_any_size() -> None:
    expected = [ExpectedTensor(name="x", dtype="float32", shape=["batch", 3])]
    assert decode(encode({"x": np.zeros((7, 3), np.float32)}), expected)["x"].shape == (7, 3)


def test_too_few_bytes_for_the_declared_shape() -> None:
    frame = encode({"x": np.zeros((4, 4), np.float32)})
    with pytest.raises(WireFormatError, match="outside the frame"):
        decode(frame[:-1])


def test_header_lies_about_size() -> None:
    frame = bytearray(encode({"x": np.zeros((2,), np.float32)}))
    nbytes_at = len(frame) - 8 - 8  # header ends with offset:u64, nbytes:u64, then padding
    header_end = 8 + 2 + 1 + 2 + 8 + 16
    struct.pack_into("<Q", frame, header_end - 8, 12)
    assert nbytes_at > 0
    with pytest.raises(WireFormatError, match="needs 8 bytes, header says 12"):
        decode(bytes(frame))


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(WireFormatError, match="trailing"):
        decode(encode({"x": np.zeros(2, np.float32)}) + b"\0")


def test_absurd_shapes_are_rejected_before_allocation() -> None:
    frame = bytearray(encode({"x": np.zeros((1, 1), np.float32)}))
    struct.pack_into("<QQ", frame, 8 + 2 + 1 + 2, 2**40, 2**40)
    with pytest.raises(WireFormatError, match="absurd shape"):
        decode(bytes(frame))


def test_unsupported_dtype_is_refused_on_encode() -> None:
    with pytest.raises(WireFormatError, match="cannot be sent"):
        encode({"x": np.array(["a"], dtype=object)})
