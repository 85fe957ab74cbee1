"""``PROFILE.json``: what ``neukonfig profile`` measured for each cut on one machine.

A profile crosses machines: it is measured on the edge device (or on a bigger machine
emulating it) and on the cloud server, and read by the planner and the controller.
So it carries its own provenance (machine, threads, onnxruntime version, when) and
the sha256 of the model it describes; the planner refuses a profile of another model.

Times are seconds. Compute and serialization times are at batch 1.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neukonfig.errors import InvalidProfileError
from neukonfig.manifest import CutKind

PROFILE_FORMAT_VERSION = 1

ProfileRole = Literal["edge", "cloud"]


class TimingStats(BaseModel):
    """Summary of ``samples`` timed runs taken after warm-up."""

    model_config = ConfigDict(frozen=True)

    median_s: float = Field(ge=0)
    p90_s: float = Field(ge=0)
    min_s: float = Field(ge=0)
    max_s: float = Field(ge=0)
    samples: int = Field(ge=1)


class SideProfile(BaseModel):
    """One side of one cut: the head (edge) or the tail (cloud).

    ``compute`` is None for a pass-through side (the edge of cut 0 forwards the input),
    which costs no load, no memory and no compute.
    """

    model_config = ConfigDict(frozen=True)

    file: str | None = Field(description="Partition file, relative to the partition directory")
    compute: TimingStats | None
    load_s: float = Field(ge=0, description="Cold onnxruntime session creation")
    first_run_s: float = Field(ge=0, description="The first inference after load")
    rss_added_bytes: int = Field(description="Resident memory added by load + first inference")
    other_load_cores: float = Field(
        default=0.0,
        ge=0,
        description="CPU (in cores) that other processes used during the timed runs; "
        "well above 0 means the compute times are inflated",
    )


class CodecCost(BaseModel):
    """What one codec (``neukonfig.codecs``) costs for one cut's crossing tensor."""

    model_config = ConfigDict(frozen=True)

    codec: str
    frame_bytes: int = Field(ge=0, description="Median frame over the seeded head outputs")
    frame_bytes_min: int = Field(ge=0)
    frame_bytes_max: int = Field(ge=0)
    samples: int = Field(ge=1, description="Seeded inputs whose head outputs were coded")
    encode: TimingStats | None = Field(description="Edge role: wire.encode with this codec")
    decode: TimingStats | None = Field(description="Cloud role: wire.decode of its frame")


class CodecAccuracy(BaseModel):
    """How far head -> codec -> tail moves the model's outputs from the fp32 model's."""

    model_config = ConfigDict(frozen=True)

    codec: str
    inputs: int = Field(ge=1, description="Seeded inputs compared")
    max_relative_error: float = Field(
        ge=0, description="Largest |coded - fp32| over the largest |fp32|, of any output"
    )
    top1_agreement: float | None = Field(
        ge=0, le=1, description="Share of inputs whose top class is the fp32 model's"
    )
    top5_agreement: float | None = Field(
        ge=0, le=1, description="Share whose fp32 top class is among the coded top five"
    )


class CutProfile(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    kind: CutKind
    tensor: str | None
    bytes: int = Field(ge=0, description="Crossing tensor at batch 1, as in the manifest")
    frame_bytes: int = Field(ge=0, description="Wire frame that carries it (0: nothing crosses)")
    head: SideProfile | None = Field(description="Measured when the edge role was profiled")
    tail: SideProfile | None = Field(
        description="Measured when the cloud role was profiled; None for all-edge"
    )
    encode: TimingStats | None = Field(description="wire.encode of the crossing tensor")
    decode: TimingStats | None = Field(description="wire.decode (with checks) of its frame")
    codecs: list[CodecCost] = Field(
        default_factory=list, description="Other codecs' costs, when profiled (--codecs)"
    )
    accuracy: list[CodecAccuracy] = Field(
        default_factory=list, description="Lossy codecs' effect on the outputs (--accuracy)"
    )

    def codec_cost(self, codec: str) -> CodecCost | None:
        return next((cost for cost in self.codecs if cost.codec == codec), None)

    def codec_accuracy(self, codec: str) -> CodecAccuracy | None:
        return next((found for found in self.accuracy if found.codec == codec), None)


class MachineInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    platform: str
    architecture: str
    cpu_model: str
    cpu_count: int = Field(ge=1, description="CPUs this process may run on")
    python: str


class ProfiledModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str


class Profile(BaseModel):
    format_version: int = PROFILE_FORMAT_VERSION
    model: ProfiledModel
    roles: list[ProfileRole] = Field(min_length=1)
    threads: int | None = Field(
        description="onnxruntime intra-op threads; None is its default (one per core)"
    )
    emulated_edge: bool = Field(
        description="The edge role was measured with fewer threads than this machine has, "
        "to stand in for a slower edge device"
    )
    edge_slowdown: float = Field(
        default=1.0,
        ge=1.0,
        description="Head compute times were multiplied by this, matching edge partitions "
        "started with the same slowdown (a slower device emulated by sleeping)",
    )
    machine: MachineInfo
    onnxruntime_version: str
    providers: list[str]
    warmup: int = Field(ge=1)
    repeats: int = Field(ge=1)
    batch: int = Field(ge=1)
    created_at: datetime
    cuts: list[CutProfile]

    def cut(self, index: int) -> CutProfile | None:
        for cut in self.cuts:
            if cut.index == index:
                return cut
        return None


def with_edge_slowdown(profile: Profile, factor: float) -> Profile:
    """The profile of an edge ``factor`` times slower: head compute scaled, loads not
    (an emulated edge sleeps after each run; it loads sessions at the host's speed)."""
    if factor < 1:
        raise InvalidProfileError(f"an edge slowdown must be at least 1, got {factor:g}")

    def scale(stats: TimingStats | None) -> TimingStats | None:
        if stats is None:
            return None
        return stats.model_copy(
            update={k: getattr(stats, k) * factor for k in ("median_s", "p90_s", "min_s", "max_s")}
        )

    cuts = []
    for cut in profile.cuts:
        head = cut.head
        if head is not None:
            head = head.model_copy(update={"compute": scale(head.compute)})
        cuts.append(cut.model_copy(update={"head": head}))
    emulated = profile.emulated_edge or factor > 1
    return profile.model_copy(
        update={
            "cuts": cuts,
            "edge_slowdown": profile.edge_slowdown * factor,
            "emulated_edge": emulated,
        }
    )


def read_profile(path: str | Path) -> Profile:
    path = Path(path)
    try:
        profile = Profile.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as error:
        raise InvalidProfileError(f"{path}: no such profile file") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidProfileError(f"{path}: not a profile (invalid JSON: {error})") from error
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        raise InvalidProfileError(
            f"{path}: not a valid profile ({where}: {first['msg']})"
        ) from error
    if profile.format_version != PROFILE_FORMAT_VERSION:
        raise InvalidProfileError(
            f"{path}: profile format {profile.format_version}; this neukonfig reads "
            f"{PROFILE_FORMAT_VERSION}. Re-run neukonfig profile."
        )
    return profile


def write_profile(path: str | Path, profile: Profile) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(profile.model_dump_json(indent=2) + "\n")
    temporary.replace(path)
