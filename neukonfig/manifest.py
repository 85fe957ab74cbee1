"""``manifest.json``: what a partition directory holds. Written by the partitioner,
read by the profiler, the planner and both partition services.

Paths inside are relative to the directory, so it can be copied or mounted anywhere.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neukonfig.errors import CutNotFoundError, InvalidModelError

MANIFEST_FILE = "manifest.json"
# Every large initializer of the partitions, once (models.onnx_io writes it).
WEIGHTS_FILE = "weights.bin"
FORMAT_VERSION = 1

Dim = int | str | None


class CutKind(str, enum.Enum):
    ALL_CLOUD = "all_cloud"
    SPLIT = "split"
    ALL_EDGE = "all_edge"


class TensorSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    shape: list[Dim] | None
    dtype: str | None


class CutSpec(BaseModel):
    """One cut. ``head`` is None for all-cloud (the edge forwards the raw input);
    ``tail`` is None for all-edge (nothing crosses the link)."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    kind: CutKind
    tensor: str | None
    shape: list[Dim] | None
    dtype: str | None
    bytes: int | None = Field(description="Size of the crossing tensor at batch 1")
    head: str | None
    tail: str | None


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class Manifest(BaseModel):
    format_version: int = FORMAT_VERSION
    model: ModelSpec
    full: str = Field(description="The whole model, sharing the weights file")
    weights: str | None
    num_cuts: int = Field(description="Cut points in the model, 0..N inclusive, written or not")
    cuts: list[CutSpec]

    def cut(self, index: int) -> CutSpec:
        for cut in self.cuts:
            if cut.index == index:
                return cut
        written = ", ".join(str(c.index) for c in self.cuts)
        raise CutNotFoundError(
            f"cut {index} is not in this partition directory (written: {written})"
        )


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST_FILE
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as error:
        raise InvalidModelError(
            f"{directory}: not a partition directory (no {MANIFEST_FILE})"
        ) from error
    except (json.JSONDecodeError, ValidationError) as error:
        raise InvalidModelError(f"{path}: unreadable manifest ({error})") from error


def write_manifest(directory: Path, manifest: Manifest) -> None:
    path = Path(directory) / MANIFEST_FILE
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(manifest.model_dump_json(indent=2) + "\n")
    temporary.replace(path)
