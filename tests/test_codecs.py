"""Codecs of the intermediate tensor: lossless ones are exact, lossy ones stay within their
documented bounds, and the decoder refuses every malformed frame with a clear error."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from neukonfig.codecs import Codec, Lossless, Lossy, fp16_bound, int8_bound, known_names
from neukonfig.wire import DTYPES, WireFormatError, decode, encode, frame_codec

LOSSY = [Codec.parse(name) for name in known_names() if not Codec.parse(name).lossless_only]
ALL = [Codec.parse(name) for name in known_names()]

any_arrays = hnp.arrays(
    dtype=st.sampled_from(DTYPES).map(np.dtype),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)
# Feature maps as a partition sends them: float32, finite, ranks 1-4 (NCHW at rank 4).
feature_maps = hnp.arrays(
    dtype=np.float32,
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6),
    elements=st.floats(-1e4, 1e4, width=32),
)


def test_every_codec_name_parses_back_to_itself_and_keeps_its_code() -> None:
    for name in known_names():
        codec = Codec.parse(name)
        assert codec.name == name
        assert Codec.from_code(codec.code) == codec
    assert Codec.parse("zstd+int8") == Codec(Lossy.INT8, Lossless.ZSTD)
    assert Codec.parse(" FP16 ") == Codec(Lossy.FP16)
    assert len({Codec.parse(name).code for name in known_names()}) == len(known_names())


@pytest.mark.parametrize("name", ["int4", "fp16+int8", "zstd+zstd", "", "lz4"])
def test_an_unknown_codec_name_is_refused_with_the_known_ones(name: str) -> None:
    with pytest.raises(ValueError, match="known: none, fp16"):
        Codec.parse(name)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), any_arrays, max_size=4))
def test_the_lossless_codec_is_exact_for_every_dtype(tensors: dict[str, np.ndarray]) -> None:
    decoded = decode(encode(tensors, Codec(lossless=Lossless.ZSTD)))
    assert list(decoded) == list(tensors)
    for name, array in tensors.items():
        assert decoded[name].dtype == array.dtype
        np.testing.assert_array_equal(decoded[name], array)


@pytest.mark.parametrize("codec", LOSSY, ids=str)
@settings(max_examples=150, deadline=None)
@given(array=feature_maps)
def test_a_lossy_codec_stays_within_its_bound(codec: Codec, array: np.ndarray) -> None:
    decoded = decode(encode({"x": array}, codec))
    assert list(decoded) == ["x"], "the side tensor is consumed"
    restored = decoded["x"]
    assert restored.dtype == np.float32
    assert restored.shape == array.shape
    if codec.lossy is Lossy.FP16:
        bound = fp16_bound(array)
    else:
        per_channel = codec.lossy is Lossy.INT8_CHANNEL and array.ndim >= 3
        bound = int8_bound(array, per_channel=per_channel)
    error = np.abs(restored.astype(np.float64) - array)
    assert (error <= bound).all(), f"worst {error.max()} over bound {np.max(bound)}"


@pytest.mark.parametrize("codec", LOSSY, ids=str)
def test_what_a_lossy_codec_cannot_code_travels_exactly(codec: Codec) -> None:
    tensors = {
        "ints": np.arange(12, dtype=np.int64).reshape(3, 4),
        "halves": np.linspace(-1, 1, 8, dtype=np.float16),
        "non_finite": np.array([1.0, np.nan, np.inf], np.float32),
        "beyond_fp16": np.array([1e6, -3.0], np.float32),
        "empty": np.zeros((2, 0), np.float32),
    }
    decoded = decode(encode(tensors, codec))
    assert list(decoded) == list(tensors)
    for name, array in tensors.items():
        if name == "beyond_fp16" and codec.lossy is not Lossy.FP16:
            continue  # within int8's reach: coded, and checked by the bound test
        assert decoded[name].dtype == array.dtype
        np.testing.assert_array_equal(decoded[name], array)


def test_the_codecs_send_fewer_bytes_of_a_relu_feature_map() -> None:
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.standard_normal((1, 64, 28, 28), dtype=np.float32) - 1.0, 0)
    sizes = {codec.name: len(encode({"x": relu}, codec)) for codec in ALL}
    raw = sizes["none"]
    assert sizes["fp16"] < 0.51 * raw
    assert sizes["int8"] < 0.26 * raw
    assert sizes["int8-channel"] < 0.27 * raw
    assert sizes["zstd"] < 0.5 * raw, "most of a ReLU map is zeros"
    assert sizes["int8+zstd"] < sizes["int8"]


def test_a_constant_tensor_is_restored_exactly_by_int8() -> None:
    constant = np.full((1, 3, 4, 4), 2.5, np.float32)
    for lossy in (Lossy.INT8, Lossy.INT8_CHANNEL):
        np.testing.assert_array_equal(decode(encode({"x": constant}, Codec(lossy)))["x"], constant)


def test_a_frame_names_its_codec() -> None:
    for codec in ALL:
        assert frame_codec(encode({"x": np.ones(4, np.float32)}, codec)) == codec


def test_a_tensor_name_with_nul_is_refused_by_a_lossy_codec() -> None:
    with pytest.raises(WireFormatError, match="NUL"):
        encode({"x\0int8": np.ones(3, np.float32)}, Codec(Lossy.INT8))


def test_an_unknown_codec_code_is_a_clear_error() -> None:
    frame = bytearray(encode({"x": np.ones(4, np.float32)}))
    struct.pack_into("<H", frame, 6, 0x0909)
    with pytest.raises(WireFormatError, match="unknown codec code 0x0909"):
        decode(bytes(frame))


def test_a_compressed_frame_cannot_make_the_receiver_allocate_unbounded() -> None:
    frame = bytearray(encode({"x": np.zeros(1000, np.float32)}, Codec(lossless=Lossless.ZSTD)))
    struct.pack_into("<Q", frame, 8, 1 << 40)
    with pytest.raises(WireFormatError, match="over the bound"):
        decode(bytes(frame))


def test_a_side_tensor_without_its_tensor_is_refused() -> None:
    orphan = encode({"y\0int8": np.zeros(2, np.float32)})  # framed without the codec's check
    frame = bytearray(orphan)
    struct.pack_into("<H", frame, 6, Codec(Lossy.INT8).code)
    with pytest.raises(WireFormatError, match="does not belong"):
        decode(bytes(frame))


@pytest.mark.parametrize("codec", ALL, ids=str)
@settings(max_examples=150, deadline=None)
@given(position=st.integers(0, 400), patch=st.binary(min_size=1, max_size=8))
def test_corrupted_coded_frames_are_refused_cleanly(
    codec: Codec, position: int, patch: bytes
) -> None:
    tensors = {"x": np.linspace(-2, 2, 48, dtype=np.float32).reshape(1, 3, 4, 4)}
    frame = bytearray(encode(tensors, codec))
    position %= len(frame)
    frame[position : position + len(patch)] = patch
    with contextlib.suppress(WireFormatError):
        decode(bytes(frame))


@settings(max_examples=300, deadline=None)
@given(code=st.integers(0, 0xFFFF), body=st.binary(max_size=200))
def test_garbage_behind_any_codec_code_is_refused_cleanly(code: int, body: bytes) -> None:
    with contextlib.suppress(WireFormatError):
        decode(struct.pack("<4sHH", b"NKW1", 1, code) + body)
