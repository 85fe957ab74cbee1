"""Hand-made manifests and profiles whose planner answers can be computed by hand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from models.planner import CodecBudget, Planner, Statistic
from neukonfig.manifest import CutKind, CutSpec, Manifest, ModelSpec, TensorSpec
from neukonfig.profiles import (
    CodecAccuracy,
    CodecCost,
    CutProfile,
    MachineInfo,
    Profile,
    ProfiledModel,
    ProfileRole,
    SideProfile,
    TimingStats,
)

SHA256 = "ab" * 32
# p90 = this factor x median in every hand-made timing, so tests can tell them apart.
P90_FACTOR = 1.5


@dataclass(frozen=True)
class Cost:
    """One cut's costs in seconds and bytes. Cut 0 must have edge_s 0 (pass-through)."""

    edge_s: float
    cloud_s: float
    frame_bytes: int
    encode_s: float = 0.0
    decode_s: float = 0.0
    load_s: float = 0.0


def timing(seconds: float) -> TimingStats:
    return TimingStats(
        median_s=seconds,
        p90_s=seconds * P90_FACTOR,
        min_s=seconds,
        max_s=seconds * P90_FACTOR,
        samples=5,
    )


def kinds(count: int) -> list[CutKind]:
    middle = [CutKind.SPLIT] * (count - 2)
    return [CutKind.ALL_CLOUD, *middle, CutKind.ALL_EDGE][:count]


def manifest_for(costs: Sequence[Cost], *, sha256: str = SHA256) -> Manifest:
    tensor = TensorSpec(name="input", shape=["batch", 4], dtype="float32")
    cuts = [
        CutSpec(
            index=index,
            kind=kind,
            tensor=None if kind is CutKind.ALL_EDGE else f"t{index}",
            shape=None,
            dtype=None if kind is CutKind.ALL_EDGE else "float32",
            bytes=cost.frame_bytes,
            head=None if kind is CutKind.ALL_CLOUD else f"cut{index:03d}.head.onnx",
            tail=None if kind is CutKind.ALL_EDGE else f"cut{index:03d}.tail.onnx",
        )
        for index, (kind, cost) in enumerate(zip(kinds(len(costs)), costs, strict=True))
    ]
    model = ModelSpec(name="handmade", sha256=sha256, opset=17, inputs=[tensor], outputs=[tensor])
    return Manifest(model=model, full="full.onnx", weights=None, num_cuts=len(costs), cuts=cuts)


def profile_for(
    costs: Sequence[Cost], *, role: ProfileRole, sha256: str = SHA256, threads: int | None = None
) -> Profile:
    cuts = []
    for index, (kind, cost) in enumerate(zip(kinds(len(costs)), costs, strict=True)):
        crosses = kind is not CutKind.ALL_EDGE
        if kind is CutKind.ALL_CLOUD:
            assert cost.edge_s == 0, "the edge side of cut 0 is a pass-through"
        head = _side(None if kind is CutKind.ALL_CLOUD else cost.edge_s, cost.load_s)
        tail = _side(cost.cloud_s, cost.load_s) if crosses else None
        cuts.append(
            CutProfile(
                index=index,
                kind=kind,
                tensor=f"t{index}" if crosses else None,
                bytes=cost.frame_bytes,
                frame_bytes=cost.frame_bytes,
                head=head if role == "edge" else None,
                tail=tail if role == "cloud" else None,
                encode=timing(cost.encode_s) if crosses else None,
                decode=timing(cost.decode_s) if crosses else None,
            )
        )
    return Profile(
        model=ProfiledModel(name="handmade", sha256=sha256),
        roles=[role],
        threads=threads,
        emulated_edge=False,
        machine=MachineInfo(
            platform="test", architecture="test", cpu_model="test", cpu_count=1, python="3"
        ),
        onnxruntime_version="test",
        providers=["CPUExecutionProvider"],
        warmup=1,
        repeats=5,
        batch=1,
        created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        cuts=cuts,
    )


def planner_for(costs: Sequence[Cost], *, stat: Statistic = "median") -> Planner:
    return Planner.from_profiles(
        manifest_for(costs),
        profile_for(costs, role="edge"),
        profile_for(costs, role="cloud"),
        stat=stat,
    )


def _side(compute_s: float | None, load_s: float) -> SideProfile:
    if compute_s is None:
        return SideProfile(file=None, compute=None, load_s=0.0, first_run_s=0.0, rss_added_bytes=0)
    return SideProfile(
        file="x.onnx",
        compute=timing(compute_s),
        load_s=load_s,
        first_run_s=compute_s,
        rss_added_bytes=0,
    )


# Three cuts with round crossovers: above 40 mbit all-cloud (cut 0) wins, from 10 to
# 40 mbit the split (cut 1), below 10 mbit all-edge (cut 2). Latency in seconds at
# x = 1/bandwidth: cut 0 = 0.010 + 1.6e6 x, cut 1 = 0.040 + 0.4e6 x, cut 2 = 0.080.
THREE_CUTS = (
    Cost(edge_s=0.0, cloud_s=0.010, frame_bytes=200_000),
    Cost(edge_s=0.030, cloud_s=0.010, frame_bytes=50_000),
    Cost(edge_s=0.080, cloud_s=0.0, frame_bytes=0),
)
UPPER_CROSSOVER_BPS = 40e6
LOWER_CROSSOVER_BPS = 10e6


def with_codecs(profile: Profile, *, int8_agreement: float | None) -> Profile:
    """Cut 1 (50 kB plain) gets zstd (40 kB, 0.5 + 0.5 ms) and int8 (12.5 kB, 1 + 1 ms)."""
    costs = [
        CodecCost(
            codec=name,
            frame_bytes=size,
            frame_bytes_min=size,
            frame_bytes_max=size,
            samples=8,
            encode=timing(seconds),
            decode=timing(seconds),
        )
        for name, size, seconds in (("zstd", 40_000, 0.0005), ("int8", 12_500, 0.001))
    ]
    accuracy = (
        []
        if int8_agreement is None
        else [
            CodecAccuracy(
                codec="int8",
                inputs=256,
                max_relative_error=0.01,
                top1_agreement=int8_agreement,
                top5_agreement=1.0,
            )
        ]
    )
    cuts = list(profile.cuts)
    cuts[1] = cuts[1].model_copy(update={"codecs": costs, "accuracy": accuracy})
    return profile.model_copy(update={"cuts": cuts})


def codec_planner(budget: CodecBudget | None, *, int8_agreement: float | None = 0.996) -> Planner:
    """THREE_CUTS with zstd and int8 at cut 1: under a budget of 0.5% or more, 1/int8 is
    the best option from about 1 to 40 mbit."""
    return Planner.from_profiles(
        manifest_for(THREE_CUTS),
        with_codecs(profile_for(THREE_CUTS, role="edge"), int8_agreement=int8_agreement),
        with_codecs(profile_for(THREE_CUTS, role="cloud"), int8_agreement=int8_agreement),
        budget=budget,
    )
