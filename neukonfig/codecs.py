"""Codecs for the intermediate tensor: fewer bytes on the link, at a known cost.

A codec is a lossy stage and a lossless stage, either of which may be ``none``:

- ``fp16``: float32 tensors travel as float16. Error per element at most
  ``max(|x| * 2**-11, 2**-25)`` (half a unit in the last place of float16).
- ``int8``: float32 tensors travel as uint8, affine over the tensor's range
  ``[lo, hi]``: ``q = round((x - lo) / scale)``, ``scale = (hi - lo) / 255``. Error per
  element at most ``scale / 2`` plus float32 rounding (``int8_bound``).
- ``int8-channel``: the same, with ``lo`` and ``scale`` per channel (axis 1) for tensors of
  rank 3 or more (NCHW feature maps); smaller ranks fall back to one range per tensor.
- ``zstd`` (lossless): the frame after its fixed header is compressed with Zstandard
  (level 1, the fast end). ReLU feature maps are mostly zeros, and compress well.

Names join the stages with ``+``: ``none``, ``fp16``, ``int8+zstd``, ``zstd``. Only float32
tensors are coded; a tensor the lossy stage cannot represent (a non-finite value, or
beyond float16's range) travels as it is, so a codec never changes an answer's
correctness beyond its bound. A coded tensor carries its parameters in a side tensor
named ``"<name>\\0<stage>"`` (float32: empty for fp16, ``[lo, scale]`` for int8,
``[[lo...], [scale...]]`` per channel), so every frame says how to decode itself.

Codes in the frame header are part of the wire format: append only, never renumber.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import zstandard

from neukonfig.errors import WireFormatError

SIDE = "\0"  # separates a tensor's name from its side tensor's stage
FLOAT16_MAX = float(np.finfo(np.float16).max)
ZSTD_LEVEL = 1
# A decompressed frame may be at most this many times its compressed size (and at most
# MAX_FRAME_BYTES): a bound on what a hostile frame can make the receiver allocate.
MAX_EXPANSION = 1024
MAX_FRAME_BYTES = 1 << 31


class Lossy(str, enum.Enum):
    NONE = "none"
    FP16 = "fp16"
    INT8 = "int8"
    INT8_CHANNEL = "int8-channel"


class Lossless(str, enum.Enum):
    NONE = "none"
    ZSTD = "zstd"


_LOSSY_CODES = (Lossy.NONE, Lossy.FP16, Lossy.INT8, Lossy.INT8_CHANNEL)
_LOSSLESS_CODES = (Lossless.NONE, Lossless.ZSTD)


@dataclass(frozen=True)
class Codec:
    """A lossy stage followed by a lossless stage; ``Codec()`` sends tensors as they are."""

    lossy: Lossy = Lossy.NONE
    lossless: Lossless = Lossless.NONE

    @classmethod
    def parse(cls, name: str) -> Codec:
        """``"int8+zstd"`` -> Codec(INT8, ZSTD); a clear error for anything else."""
        lossy, lossless = Lossy.NONE, Lossless.NONE
        for part in name.strip().lower().split("+"):
            if part in Lossy._value2member_map_ and lossy is Lossy.NONE:
                lossy = Lossy(part)
            elif part in Lossless._value2member_map_ and lossless is Lossless.NONE:
                lossless = Lossless(part)
            elif part != "none":
                raise ValueError(f"unknown codec {name!r}; known: {', '.join(known_names())}")
        return cls(lossy, lossless)

    @classmethod
    def from_code(cls, code: int) -> Codec:
        lossy, lossless = code & 0xFF, code >> 8
        if lossy >= len(_LOSSY_CODES) or lossless >= len(_LOSSLESS_CODES):
            raise WireFormatError(f"frame uses unknown codec code {code:#06x}")
        return cls(_LOSSY_CODES[lossy], _LOSSLESS_CODES[lossless])

    @property
    def code(self) -> int:
        return _LOSSY_CODES.index(self.lossy) | _LOSSLESS_CODES.index(self.lossless) << 8

    @property
    def name(self) -> str:
        parts = [stage.value for stage in (self.lossy, self.lossless) if stage.value != "none"]
        return "+".join(parts) or "none"

    @property
    def lossless_only(self) -> bool:
        return self.lossy is Lossy.NONE

    def __str__(self) -> str:
        return self.name


NONE = Codec()


def known_names() -> list[str]:
    return [Codec(lossy, lossless).name for lossless in _LOSSLESS_CODES for lossy in _LOSSY_CODES]


# --- the lossy stage: arrays in, arrays out -----------------------------------------------


def apply_lossy(tensors: Mapping[str, np.ndarray], lossy: Lossy) -> dict[str, np.ndarray]:
    """The tensors to frame: float32 ones coded, each with its side tensor."""
    if lossy is Lossy.NONE:
        return dict(tensors)
    coded: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        if SIDE in name:
            raise WireFormatError(f"tensor name {name!r} contains NUL, reserved by codecs")
        result = _code(np.asarray(array), lossy)
        if result is None:
            coded[name] = array
            continue
        coded[name], coded[f"{name}{SIDE}{lossy.value}"] = result
    return coded


def restore_lossy(tensors: Mapping[str, np.ndarray], lossy: Lossy) -> dict[str, np.ndarray]:
    """Undo ``apply_lossy``: float32 tensors again, side tensors consumed and checked."""
    if lossy is Lossy.NONE:
        return dict(tensors)
    sides = {name: array for name, array in tensors.items() if SIDE in name}
    restored = {name: array for name, array in tensors.items() if SIDE not in name}
    for side_name, side in sides.items():
        name, _, stage = side_name.partition(SIDE)
        if stage != lossy.value or name not in restored:
            raise WireFormatError(f"side tensor {side_name!r} does not belong to the frame")
        restored[name] = _decode(name, restored[name], side, lossy)
    return restored


def _code(array: np.ndarray, lossy: Lossy) -> tuple[np.ndarray, np.ndarray] | None:
    if array.dtype != np.float32 or array.size == 0 or not np.isfinite(array).all():
        return None
    if lossy is Lossy.FP16:
        if np.abs(array).max() > FLOAT16_MAX:
            return None
        return array.astype(np.float16), np.zeros(0, np.float32)
    per_channel = lossy is Lossy.INT8_CHANNEL and array.ndim >= 3
    axes = tuple(a for a in range(array.ndim) if a != 1) if per_channel else None
    lo = array.min(axis=axes, keepdims=per_channel)
    scale = (array.max(axis=axes, keepdims=per_channel) - lo) / np.float32(255)
    safe = np.where(scale > 0, scale, np.float32(1))  # a constant range codes as all zeros
    quantized = np.clip(np.rint((array - lo) / safe), 0, 255).astype(np.uint8)
    side = np.stack([np.ravel(lo), np.ravel(scale)]).astype(np.float32)
    return quantized, side if per_channel else side.reshape(2)


def _decode(name: str, coded: np.ndarray, side: np.ndarray, lossy: Lossy) -> np.ndarray:
    if lossy is Lossy.FP16:
        if coded.dtype != np.float16 or side.shape != (0,):
            raise WireFormatError(f"tensor {name!r} is not a float16 tensor with its fp16 side")
        return coded.astype(np.float32)
    if coded.dtype != np.uint8 or side.dtype != np.float32:
        raise WireFormatError(f"tensor {name!r} is not a uint8 tensor with a float32 side")
    if side.shape == (2,):
        lo, scale = side[0], side[1]
    elif coded.ndim >= 3 and side.shape == (2, coded.shape[1]):
        shape = [1] * coded.ndim
        shape[1] = coded.shape[1]
        lo, scale = side[0].reshape(shape), side[1].reshape(shape)
    else:
        raise WireFormatError(f"tensor {name!r} has an int8 side of shape {list(side.shape)}")
    with np.errstate(over="ignore", invalid="ignore"):
        restored = coded.astype(np.float32) * scale + lo
    if not np.isfinite(restored).all():  # an encoder only codes finite tensors
        raise WireFormatError(f"tensor {name!r} decodes to non-finite values")
    return restored


def fp16_bound(original: np.ndarray) -> np.ndarray:
    """The documented per-element bound of the fp16 stage."""
    return np.maximum(np.abs(original) * 2.0**-11, 2.0**-25)


def int8_bound(original: np.ndarray, *, per_channel: bool) -> np.ndarray:
    """The documented per-element bound of the int8 stages: half a step of the range,
    plus the float32 rounding of ``q * scale + lo`` (a few units in the last place, and a
    scale that underflows for a range of subnormal width)."""
    axes = tuple(a for a in range(original.ndim) if a != 1) if per_channel else None
    lo = original.min(axis=axes, keepdims=True)
    hi = original.max(axis=axes, keepdims=True)
    finfo = np.finfo(np.float32)
    rounding = 4 * finfo.eps * np.maximum(np.abs(lo), np.abs(hi)) + 256 * finfo.smallest_subnormal
    return (hi - lo) / 510 * (1 + 1e-5) + rounding


# --- the lossless stage: the frame's bytes ------------------------------------------------


def compress(body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)


def decompress(data: bytes | memoryview, size: int) -> bytes:
    """Exactly ``size`` bytes back from one whole Zstandard frame, or a clear error. The
    frame must state its size, and that size must be the header's and within bounds,
    before anything is allocated."""
    if size > min(MAX_FRAME_BYTES, MAX_EXPANSION * max(len(data), 1)):
        raise WireFormatError(f"compressed frame claims {size} bytes, over the bound")
    try:
        stated = zstandard.frame_content_size(data)
        if stated != size:
            raise WireFormatError(f"compressed frame states {stated} bytes, header says {size}")
        inflater = zstandard.ZstdDecompressor().decompressobj()
        body = inflater.decompress(data)
    except zstandard.ZstdError as error:
        raise WireFormatError(f"compressed frame does not decompress: {error}") from error
    if not inflater.eof or inflater.unused_data or len(body) != size:
        raise WireFormatError("compressed frame is truncated, or has bytes after its end")
    return body
