"""What a lossy codec does to the model's answers, measured rather than assumed.

For every cut and lossy codec: seeded inputs go through the head, the crossing tensor
through ``wire.encode`` and ``wire.decode`` with the codec, and the result through the
tail; the outputs are compared with the full fp32 model's (cut 0's tail is the whole
model). Reported per (cut, codec):

- the largest ``|coded - fp32|`` over the largest ``|fp32|`` of any output (relative to
  the output's scale: an element-wise ratio explodes near zero);
- top-1 agreement (the same top class) and top-5 agreement (the fp32 top class among
  the coded top five), for a first output shaped ``[batch, classes]``.

A lossless stage stacked on a lossy one changes nothing the tail sees, so ``int8+zstd``
reports what ``int8`` measured; ``none`` and ``zstd`` are exact and not measured.

Every cut costs a pass of all the inputs through the model per lossy codec: on a 2-core
machine minutes per cut for ResNet-50. ``cuts_worth_measuring`` names the cuts where a
lossy codec ranks among the planner's best at given bandwidths if it were accurate
enough; measuring only those (``measure_accuracy(cuts=...)``) plans the same, because a
lossy row without a measured accuracy is never picked (``CodecBudget``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.planner import CodecBudget, Planner
from models.runtime import Role, load_partition, sample_input
from neukonfig.codecs import Codec
from neukonfig.manifest import CutKind, Manifest, read_manifest
from neukonfig.profiles import CodecAccuracy, Profile
from neukonfig.wire import decode, encode

Progress = Callable[[str], None]
TOP_K = 5


@dataclass
class _Tally:
    """Running comparison of one (cut, codec) against the fp32 outputs."""

    inputs: int = 0
    worst: float = 0.0
    top1: int = 0
    top5: int = 0
    classified: bool = True

    def add(self, coded: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
        for name, expected in reference.items():
            scale = float(np.abs(expected).max()) or 1.0
            self.worst = max(self.worst, float(np.abs(coded[name] - expected).max()) / scale)
        first = next(iter(reference))
        expected, got = reference[first], coded[first]
        self.inputs += len(expected)
        if expected.ndim != 2 or expected.shape[1] < TOP_K:
            self.classified = False
            return
        truth = expected.argmax(axis=1)
        self.top1 += int((got.argmax(axis=1) == truth).sum())
        top = np.argpartition(-got, TOP_K - 1, axis=1)[:, :TOP_K]
        self.top5 += int((top == truth[:, None]).any(axis=1).sum())

    def result(self, codec: str) -> CodecAccuracy:
        return CodecAccuracy(
            codec=codec,
            inputs=self.inputs,
            max_relative_error=self.worst,
            top1_agreement=self.top1 / self.inputs if self.classified else None,
            top5_agreement=self.top5 / self.inputs if self.classified else None,
        )


def measure_accuracy(
    directory: str | Path,
    codecs: Sequence[Codec],
    *,
    inputs: int = 256,
    batch: int = 32,
    threads: int | None = None,
    progress: Progress | None = None,
    cuts: Collection[int] | None = None,
) -> dict[int, list[CodecAccuracy]]:
    """Per cut index: the accuracy of each lossy codec in ``codecs`` over ``inputs``
    seeded inputs, run ``batch`` at a time; at every cut the tensor crosses, or at
    ``cuts`` only."""
    report = progress or (lambda _message: None)
    directory = Path(directory)
    manifest = read_manifest(directory)
    lossy = sorted({Codec(codec.lossy) for codec in codecs if not codec.lossless_only}, key=str)
    if not lossy or inputs < 1:
        return {}
    batches = _input_batches(directory, manifest, inputs, batch, threads)
    report(f"accuracy of {', '.join(map(str, lossy))} over {inputs} seeded inputs per cut")
    measured: dict[int, list[CodecAccuracy]] = {}
    crossing = [
        cut
        for cut in manifest.cuts
        if cut.kind is not CutKind.ALL_EDGE and (cuts is None or cut.index in cuts)
    ]
    for number, cut in enumerate(crossing, start=1):
        tallies = _measure_cut(directory, manifest, cut.index, lossy, batches, threads)
        measured[cut.index] = [
            tallies[Codec(codec.lossy)].result(codec.name)
            for codec in codecs
            if not codec.lossless_only
        ]
        worst = max(tally.worst for tally in tallies.values())
        report(f"[{number}/{len(crossing)}] cut {cut.index}: worst relative error {worst:.2e}")
    return measured


def cuts_worth_measuring(
    manifest: Manifest, edge: Profile, cloud: Profile, bandwidths: Sequence[float], top: int
) -> list[int]:
    """The cuts of the lossy rows among the ``top`` fastest at any of ``bandwidths``, if
    every lossy codec in the profiles were accurate enough."""
    optimistic = Planner.from_profiles(
        manifest, edge, cloud, budget=CodecBudget(assume_accurate=True)
    )
    ranked = (choice for bps in bandwidths for choice in optimistic.ranked(bps)[:top])
    return sorted({c.cut for c in ranked if not Codec.parse(c.codec).lossless_only})


Measure = Callable[[list[int]], dict[int, list[CodecAccuracy]]]


def accuracy_where_it_matters(
    manifest: Manifest,
    profiles: tuple[Profile, Profile],
    budget: CodecBudget,
    *,
    measure: Measure,
    bandwidths: Sequence[float],
    top: int,
) -> tuple[Profile, list[int]]:
    """The edge profile of ``profiles`` (edge, cloud) with the lossy codecs' accuracy
    (``measure``d per list of cuts) wherever it can change the ``top`` plans at
    ``bandwidths`` under ``budget``, and the cuts measured.

    First the cuts of ``cuts_worth_measuring``; then, while a lossy row not yet measured
    would rank among the ``top`` rows ``budget`` allows at one of the bandwidths if it
    were accurate enough, the cuts of the ``top`` fastest such rows, and again. So a lossy
    row within the budget is not missed because the faster ones were refused (MobileNetV2
    at 50 mbit: int8 at cuts 0 and 16 disagreed on 1.6% and 1.2% of top-1s, over a 1%
    budget, and int8 at cut 34, within it, was never measured)."""
    edge, cloud = profiles
    optimistic = Planner.from_profiles(
        manifest, edge, cloud, budget=CodecBudget(assume_accurate=True)
    )
    wanted = set(cuts_worth_measuring(manifest, edge, cloud, bandwidths, top))
    tried: set[int] = set()
    measured: dict[int, list[CodecAccuracy]] = {}
    while wanted - tried:
        batch = sorted(wanted - tried)
        tried |= set(batch)
        measured |= measure(batch)
        if budget.max_top1_disagreement is None:
            break  # no lossy row is ever allowed: nothing more can change a plan
        allowed = Planner.from_profiles(
            manifest, with_accuracy(edge, measured), cloud, budget=budget
        )
        for bps in bandwidths:
            ranked = allowed.ranked(bps)
            last_s = ranked[min(top, len(ranked)) - 1].latency_s  # the top-th allowed row
            wanted |= set(_unmeasured_winners(optimistic, last_s, bps, tried)[:top])
    return with_accuracy(edge, measured), sorted(tried)


def _unmeasured_winners(
    optimistic: Planner, best_s: float, bandwidth_bps: float, tried: set[int]
) -> list[int]:
    """Cuts not yet measured, fastest first, of the lossy rows faster than ``best_s`` at
    ``bandwidth_bps`` (they would rank above it if they were accurate enough)."""
    cuts = [
        choice.cut
        for choice in optimistic.ranked(bandwidth_bps)
        if choice.latency_s < best_s
        and not Codec.parse(choice.codec).lossless_only
        and choice.cut not in tried
    ]
    return list(dict.fromkeys(cuts))


def cached_measure(
    directory: Path, codecs: Sequence[Codec], *, inputs: int, progress: Progress | None = None
) -> Measure:
    """A ``Measure`` for ``accuracy_where_it_matters`` that runs ``cached_accuracy``."""
    return lambda cuts: cached_accuracy(
        directory, codecs, inputs=inputs, cuts=cuts, progress=progress
    )


def cached_accuracy(
    directory: Path,
    codecs: Sequence[Codec],
    *,
    inputs: int,
    cuts: Collection[int],
    progress: Progress | None = None,
) -> dict[int, list[CodecAccuracy]]:
    """``measure_accuracy`` at ``cuts``, each cut measured once and kept beside the
    partitions in ``directory`` (it depends only on them, the codecs and the inputs)."""
    lossy = sorted(str(codec) for codec in codecs if not codec.lossless_only)
    tag = "_".join(name.replace("+", "") for name in lossy)
    cache = directory / f"accuracy-{tag}-n{inputs}.json"
    known = _read_accuracy(cache)
    missing = [cut for cut in cuts if cut not in known]
    if missing:
        if progress is not None:
            progress(f"measuring codec accuracy at cuts {missing} (where a codec can win)")
        known |= measure_accuracy(directory, codecs, inputs=inputs, progress=progress, cuts=missing)
        found = {str(cut): [a.model_dump() for a in accuracy] for cut, accuracy in known.items()}
        cache.write_text(json.dumps(found))
    return {cut: known[cut] for cut in cuts if cut in known}


def _read_accuracy(path: Path) -> dict[int, list[CodecAccuracy]]:
    try:
        stored = json.loads(path.read_text())
        return {int(c): [CodecAccuracy(**a) for a in found] for c, found in stored.items()}
    except (OSError, ValueError, TypeError):
        return {}  # none yet, or unreadable: measure again


def with_accuracy(profile: Profile, measured: dict[int, list[CodecAccuracy]]) -> Profile:
    cuts = [
        cut.model_copy(update={"accuracy": measured.get(cut.index, cut.accuracy)})
        for cut in profile.cuts
    ]
    return profile.model_copy(update={"cuts": cuts})


Batch = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # (inputs, fp32 outputs)


def _input_batches(
    directory: Path, manifest: Manifest, inputs: int, batch: int, threads: int | None
) -> list[Batch]:
    full = load_partition(directory, 0, Role.CLOUD, threads=threads, manifest=manifest)
    batches = []
    for start in range(0, inputs, batch):
        size = min(batch, inputs - start)
        feeds = {spec.name: sample_input(spec, batch=size, seed=start) for spec in full.inputs}
        batches.append((feeds, full.run(feeds)))
    return batches


def _measure_cut(
    directory: Path,
    manifest: Manifest,
    index: int,
    lossy: Sequence[Codec],
    batches: Sequence[Batch],
    threads: int | None,
) -> dict[Codec, _Tally]:
    head = load_partition(directory, index, Role.EDGE, threads=threads, manifest=manifest)
    tail = load_partition(directory, index, Role.CLOUD, threads=threads, manifest=manifest)
    tallies = {codec: _Tally() for codec in lossy}
    for feeds, reference in batches:
        intermediate = head.run(feeds)
        for codec, tally in tallies.items():
            tally.add(tail.run(decode(encode(intermediate, codec))), reference)
    return tallies
