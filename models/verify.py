"""Check that head followed by tail reproduces the full model, with onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from models.runtime import sample_input
from neukonfig.errors import VerificationError
from neukonfig.manifest import CutKind, CutSpec, Manifest

RTOL = 1e-4
ATOL = 1e-5
# A batch of 2 also proves that the dynamic batch dimension survived the cut.
VERIFY_BATCH = 2


@dataclass(frozen=True)
class CutCheck:
    index: int
    max_abs_error: float


def session(path: Path) -> ort.InferenceSession:
    # Graph optimisations off: a cut stops onnxruntime from fusing e.g. Conv+BatchNorm
    # across it, and the fused and unfused sums round differently (5e-5 on MobileNetV2
    # logits). Without them both sides run the same ops, so any difference left is a
    # partitioning bug rather than optimiser rounding.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_partitions(
    directory: Path,
    manifest: Manifest,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[CutCheck]:
    """Run every written split cut head->tail on seeded input against ``full.onnx``."""
    report = progress or (lambda _message: None)
    model_input = manifest.model.inputs[0]
    feed = {model_input.name: sample_input(model_input, batch=VERIFY_BATCH, seed=seed)}
    expected = session(directory / manifest.full).run(None, feed)
    checks = []
    splits = [cut for cut in manifest.cuts if cut.kind is CutKind.SPLIT]
    for number, cut in enumerate(splits, start=1):
        check = _verify_cut(directory, cut, feed, expected)
        error = check.max_abs_error
        report(f"verify [{number}/{len(splits)}] cut {cut.index}: max |error| {error:.2e}")
        checks.append(check)
    return checks


def _verify_cut(
    directory: Path, cut: CutSpec, feed: dict[str, np.ndarray], expected: list[np.ndarray]
) -> CutCheck:
    if cut.head is None or cut.tail is None or cut.tensor is None:
        raise VerificationError(f"cut {cut.index} is not a split cut")
    for name in (cut.head, cut.tail):
        try:
            onnx.checker.check_model(str(directory / name), full_check=True)
        except onnx.checker.ValidationError as error:
            raise VerificationError(
                f"cut {cut.index}: {name} is not a valid model: {error}"
            ) from error
    (intermediate,) = session(directory / cut.head).run([cut.tensor], feed)
    _check_intermediate_shape(cut, intermediate)
    actual = session(directory / cut.tail).run(None, {cut.tensor: intermediate})
    worst = 0.0
    for got, want in zip(actual, expected, strict=True):
        if got.shape != want.shape or not np.allclose(got, want, rtol=RTOL, atol=ATOL):
            raise VerificationError(
                f"cut {cut.index} ({cut.tensor}): head->tail differs from the full model "
                f"(shape {got.shape} vs {want.shape}, max |error| {_max_error(got, want):.3g})"
            )
        worst = max(worst, _max_error(got, want))
    return CutCheck(cut.index, worst)


def _check_intermediate_shape(cut: CutSpec, intermediate: np.ndarray) -> None:
    if cut.shape is None:
        return
    for got, declared in zip(intermediate.shape, cut.shape, strict=False):
        if isinstance(declared, int) and got != declared:
            raise VerificationError(
                f"cut {cut.index}: head gave shape {intermediate.shape}, manifest says {cut.shape}"
            )


def _max_error(got: np.ndarray, want: np.ndarray) -> float:
    if got.shape != want.shape or got.size == 0:
        return float("inf") if got.shape != want.shape else 0.0
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
