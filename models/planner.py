"""The latency model: which cut serves one request fastest at a given bandwidth and RTT.

For cut ``i`` at bandwidth ``B`` (bits/s) and round-trip time ``R`` (s):

    latency_i = edge_i + serialization_i + R + 8 * frame_bytes_i / B + cloud_i

``edge_i`` is the head's compute on the edge (0 for cut 0, whose edge forwards the
input), ``cloud_i`` the tail's compute in the cloud, ``serialization_i`` the edge's
wire encode plus the cloud's wire decode. The all-edge cut sends nothing: no transfer,
no RTT, no serialization. The reply (the model's small output) is not modelled.

Everything per-cut is precomputed into arrays once, so a plan is a few vectorised
operations on ~100 numbers: the controller calls it on every bandwidth estimate.

**Codecs.** With a ``CodecBudget``, each cut has one row per codec the budget allows
(``neukonfig.codecs``), with that codec's frame size and its encode plus decode time as
the serialization term: the planner picks a (cut, codec) pair. Lossless codecs are
always allowed; a lossy one only where the profile measured its top-1 disagreement with
the fp32 model (``neukonfig profile --accuracy``) within the budget. Without a budget
(the default) every cut has its plain row only, and nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from neukonfig.codecs import NONE, Codec
from neukonfig.errors import ProfileMismatchError
from neukonfig.manifest import CutKind, CutSpec, Manifest, read_manifest
from neukonfig.profiles import (
    CodecAccuracy,
    CodecCost,
    CutProfile,
    Profile,
    ProfileRole,
    SideProfile,
    TimingStats,
    read_profile,
)

Statistic = Literal["median", "p90"]


@dataclass(frozen=True)
class LatencyBreakdown:
    edge_s: float
    serialization_s: float
    rtt_s: float
    transfer_s: float
    cloud_s: float

    @property
    def total_s(self) -> float:
        return self.edge_s + self.serialization_s + self.rtt_s + self.transfer_s + self.cloud_s


def option_label(cut: int, codec: str) -> str:
    """How tables and reports name a planner row: ``36``, or ``36/int8+zstd`` when coded."""
    return str(cut) if codec == NONE.name else f"{cut}/{codec}"


@dataclass(frozen=True, order=True)
class Option:
    """What a pipeline serves and the controller plans: a cut, and the codec its edge
    sends the crossing tensor with. Two pipelines at one cut with different codecs are
    different options (a codec changes by a new pipeline and a pointer flip)."""

    cut: int
    codec: str = NONE.name

    @classmethod
    def of(cls, option: int | Option) -> Option:
        """A bare cut is that cut's plain (uncoded) option."""
        return option if isinstance(option, Option) else cls(option)

    @property
    def label(self) -> str:
        return option_label(self.cut, self.codec)


@dataclass(frozen=True)
class CutChoice:
    """One cut's (and codec's) predicted latency at one bandwidth and RTT."""

    cut: int
    latency_s: float
    breakdown: LatencyBreakdown
    codec: str = NONE.name

    @property
    def label(self) -> str:
        return option_label(self.cut, self.codec)

    @property
    def option(self) -> Option:
        return Option(self.cut, self.codec)


@dataclass(frozen=True)
class CodecBudget:
    """Which profiled codecs the planner may pick: lossless ones always, and lossy ones
    whose measured top-1 disagreement with the fp32 model is at most
    ``max_top1_disagreement`` (a share, 0.005 for 0.5%; None: lossless only)."""

    max_top1_disagreement: float | None = None
    # Plan as if every lossy codec were accurate enough: where a lossy row then ranks
    # high is where measuring its accuracy can change a plan (``cuts_worth_measuring``).
    assume_accurate: bool = False

    def allows(self, codec: Codec, accuracy: CodecAccuracy | None) -> bool:
        if codec.lossless_only or self.assume_accurate:
            return True
        if self.max_top1_disagreement is None or accuracy is None:
            return False
        agreement = accuracy.top1_agreement
        return agreement is not None and 1 - agreement <= self.max_top1_disagreement


class Planner:
    """Predicts per-cut latency from per-cut costs; built once, queried many times."""

    def __init__(
        self,
        *,
        model: str,
        cuts: Sequence[CutSpec],
        edge_s: Sequence[float],
        cloud_s: Sequence[float],
        serialization_s: Sequence[float],
        frame_bytes: Sequence[int],
        edge_load_s: Sequence[float] | None = None,
        cloud_load_s: Sequence[float] | None = None,
        codecs: Sequence[str] | None = None,
    ) -> None:
        """One row per entry of ``cuts``: a cut may have several rows, one per codec
        (``codecs``, default ``none`` for every row); its first row is its plain one."""
        count = len(cuts)
        if count == 0:
            raise ValueError("a planner needs at least one cut")
        if codecs is not None and len(codecs) != count:
            raise ValueError(f"every per-cut column must have {count} entries")
        columns = (edge_s, cloud_s, serialization_s, frame_bytes, edge_load_s, cloud_load_s)
        if any(column is not None and len(column) != count for column in columns):
            raise ValueError(f"every per-cut column must have {count} entries")
        self.model = model
        self.cuts: tuple[CutSpec, ...] = tuple(cuts)
        self.indices: tuple[int, ...] = tuple(cut.index for cut in cuts)
        self.codecs: tuple[str, ...] = tuple(codecs or [NONE.name] * count)
        self._position: dict[int, int] = {}
        self._rows: dict[tuple[int, str], int] = {}
        for position, (index, codec) in enumerate(zip(self.indices, self.codecs, strict=True)):
            self._position.setdefault(index, position)
            self._rows[index, codec] = position
        crosses = np.array([cut.kind is not CutKind.ALL_EDGE for cut in cuts])
        # Read-only: the sums below are computed once from these.
        self.edge_s = _frozen(edge_s)
        self.cloud_s = _frozen(cloud_s)
        self.serialization_s = _frozen(np.where(crosses, serialization_s, 0.0))
        self.frame_bytes = _frozen(np.where(crosses, frame_bytes, 0), dtype=np.int64)
        self.edge_load_s = _frozen(np.zeros(count) if edge_load_s is None else edge_load_s)
        self.cloud_load_s = _frozen(np.zeros(count) if cloud_load_s is None else cloud_load_s)
        # latency = fixed + rtt * crosses + bits / bandwidth: three arrays, one plan.
        self._fixed = self.edge_s + self.serialization_s + self.cloud_s
        self._crosses = crosses.astype(np.float64)
        self._bits = self.frame_bytes.astype(np.float64) * 8.0
        self._columns = [
            column.tolist()
            for column in (self.edge_s, self.serialization_s, self._crosses, self._bits)
        ]
        self._cloud = self.cloud_s.tolist()

    @classmethod
    def from_profiles(
        cls,
        manifest: Manifest,
        edge: Profile,
        cloud: Profile,
        *,
        stat: Statistic = "median",
        edge_label: str = "edge profile",
        cloud_label: str = "cloud profile",
        budget: CodecBudget | None = None,
    ) -> Planner:
        """Combine the edge's head timings and the cloud's tail timings for every cut (and
        every codec the budget allows, when there is one)."""
        edge_cuts = _profiled_cuts(edge, manifest, role="edge", label=edge_label)
        cloud_cuts = _profiled_cuts(cloud, manifest, role="cloud", label=cloud_label)
        rows: list[tuple[CutSpec, CutProfile, CutProfile, CodecCost | None]] = []
        for spec, e, c in zip(manifest.cuts, edge_cuts, cloud_cuts, strict=True):
            rows.append((spec, e, c, None))
            if budget is not None:
                rows += [(spec, e, c, cost) for cost in _allowed_codecs(e, c, budget)]
        return cls(
            model=manifest.model.name,
            cuts=[spec for spec, *_ in rows],
            edge_s=[_compute(e.head, stat) for _, e, _, _ in rows],
            cloud_s=[_compute(c.tail, stat) for _, _, c, _ in rows],
            serialization_s=[_serialization(e, c, cost, stat) for _, e, c, cost in rows],
            frame_bytes=[cost.frame_bytes if cost else e.frame_bytes for _, e, _, cost in rows],
            edge_load_s=[_load(e.head) for _, e, _, _ in rows],
            cloud_load_s=[_load(c.tail) for _, _, c, _ in rows],
            codecs=[cost.codec if cost else NONE.name for *_, cost in rows],
        )

    def predict(self, bandwidth_bps: float, rtt_s: float = 0.0) -> np.ndarray:
        """Predicted latency of every cut (seconds), in the order of ``indices``."""
        _check_link(bandwidth_bps, rtt_s)
        return self._fixed + self._crosses * rtt_s + self._bits / bandwidth_bps

    def best(self, bandwidth_bps: float, rtt_s: float = 0.0) -> CutChoice:
        """The fastest cut; on a tie, the lowest cut index."""
        latencies = self.predict(bandwidth_bps, rtt_s)
        position = int(latencies.argmin())
        return self._choice(position, float(latencies[position]), bandwidth_bps, rtt_s)

    def ranked(self, bandwidth_bps: float, rtt_s: float = 0.0) -> list[CutChoice]:
        """Every cut, fastest first."""
        latencies = self.predict(bandwidth_bps, rtt_s)
        order = np.argsort(latencies, kind="stable")
        return [self._choice(int(p), float(latencies[p]), bandwidth_bps, rtt_s) for p in order]

    def latency_of(self, option: int | Option, bandwidth_bps: float, rtt_s: float = 0.0) -> float:
        """Predicted latency of one row: a cut's plain row, or an ``Option``'s."""
        position = self.row(option)
        _check_link(bandwidth_bps, rtt_s)
        edge, serial, crosses, bits = (column[position] for column in self._columns)
        return edge + serial + crosses * rtt_s + bits / bandwidth_bps + self._cloud[position]

    def lines(self, rtt_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Latency is ``a + b / bandwidth`` per cut: returns (a in s, b in bits)."""
        _check_rtt(rtt_s)
        return self._fixed + self._crosses * rtt_s, self._bits.copy()

    def load_s(self, option: int | Option) -> float:
        """Cold load of both sides of a row: what bringing its pipeline up costs."""
        position = self.row(option)
        return float(self.edge_load_s[position] + self.cloud_load_s[position])

    def position(self, cut: int, codec: str = NONE.name) -> int:
        """The row of ``cut`` with ``codec`` (its plain row by default)."""
        try:
            return self._position[cut] if codec == NONE.name else self._rows[cut, codec]
        except KeyError:
            raise ValueError(f"cut {cut} with codec {codec} is not planned") from None

    def row(self, option: int | Option) -> int:
        """The row of a cut's plain option, or of an ``Option``."""
        option = Option.of(option)
        return self.position(option.cut, option.codec)

    def options(self) -> list[Option]:
        """Every row's option, in row order."""
        return [Option(cut, codec) for cut, codec in zip(self.indices, self.codecs, strict=True)]

    def plans(self, option: int | Option) -> bool:
        """Whether ``option`` is one of this planner's rows."""
        option = Option.of(option)
        return (option.cut, option.codec) in self._rows

    def _choice(
        self, position: int, latency_s: float, bandwidth_bps: float, rtt_s: float
    ) -> CutChoice:
        edge, serial, crosses, bits = (column[position] for column in self._columns)
        breakdown = LatencyBreakdown(
            edge_s=edge,
            serialization_s=serial,
            rtt_s=crosses * rtt_s,
            transfer_s=bits / bandwidth_bps,
            cloud_s=self._cloud[position],
        )
        return CutChoice(
            cut=self.indices[position],
            latency_s=latency_s,
            breakdown=breakdown,
            codec=self.codecs[position],
        )


def load_planner(
    directory: str | Path,
    *,
    edge_profile: str | Path,
    cloud_profile: str | Path,
    stat: Statistic = "median",
    budget: CodecBudget | None = None,
) -> Planner:
    """The planner for a partition directory from the two profile files (with the
    codec rows ``budget`` allows, when given)."""
    return Planner.from_profiles(
        read_manifest(Path(directory)),
        read_profile(edge_profile),
        read_profile(cloud_profile),
        stat=stat,
        edge_label=f"edge profile {edge_profile}",
        cloud_label=f"cloud profile {cloud_profile}",
        budget=budget,
    )


def _check_link(bandwidth_bps: float, rtt_s: float) -> None:
    # "not x > 0" also rejects NaN, which would otherwise make every cut look equal.
    if not bandwidth_bps > 0:
        raise ValueError(f"bandwidth must be a positive number of bits/s, got {bandwidth_bps}")
    _check_rtt(rtt_s)


def _check_rtt(rtt_s: float) -> None:
    if not 0 <= rtt_s < float("inf"):
        raise ValueError(f"rtt must be a finite number of seconds >= 0, got {rtt_s}")


def _frozen(values: Sequence[float] | np.ndarray, *, dtype: type = np.float64) -> np.ndarray:
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


def _profiled_cuts(
    profile: Profile, manifest: Manifest, *, role: ProfileRole, label: str
) -> list[CutProfile]:
    """The profile's entry for every cut of the manifest, or a clear refusal."""
    if profile.model.sha256 != manifest.model.sha256:
        raise ProfileMismatchError(
            f"{label} was measured on model {profile.model.name} "
            f"(sha256 {profile.model.sha256[:12]}), but the partition directory holds "
            f"{manifest.model.name} (sha256 {manifest.model.sha256[:12]}); "
            f"profile this directory again"
        )
    if role not in profile.roles:
        raise ProfileMismatchError(
            f"{label} has no {role} timings (it profiled {', '.join(profile.roles)}); "
            f"run neukonfig profile --role {role}"
        )
    found = {cut.index: cut for cut in profile.cuts}
    missing = [cut.index for cut in manifest.cuts if cut.index not in found]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ProfileMismatchError(
            f"{label} has no timings for cut {shown}; profile this directory again"
        )
    return [found[cut.index] for cut in manifest.cuts]


def _allowed_codecs(edge: CutProfile, cloud: CutProfile, budget: CodecBudget) -> list[CodecCost]:
    """The codecs both profiles measured for this cut that the budget allows."""
    allowed = []
    for cost in edge.codecs:
        codec = Codec.parse(cost.codec)
        accuracy = edge.codec_accuracy(cost.codec) or cloud.codec_accuracy(cost.codec)
        decoded = cloud.codec_cost(cost.codec)
        if decoded is not None and budget.allows(codec, accuracy):
            allowed.append(cost.model_copy(update={"decode": decoded.decode}))
    return allowed


def _serialization(
    edge: CutProfile, cloud: CutProfile, cost: CodecCost | None, stat: Statistic
) -> float:
    if cost is None:
        return _timing(edge.encode, stat) + _timing(cloud.decode, stat)
    return _timing(cost.encode, stat) + _timing(cost.decode, stat)


def _compute(side: SideProfile | None, stat: Statistic) -> float:
    return 0.0 if side is None or side.compute is None else _timing(side.compute, stat)


def _timing(stats: TimingStats | None, stat: Statistic) -> float:
    if stats is None:
        return 0.0
    return stats.p90_s if stat == "p90" else stats.median_s


def _load(side: SideProfile | None) -> float:
    return 0.0 if side is None else side.load_s
