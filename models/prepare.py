"""Everything the controller needs before it can serve a model, made once and cached.

``prepare`` builds the zoo model (or takes the user's ONNX file), partitions it at every
cut and profiles both sides, all in one work directory; a second call with the same
options reuses what is there. ``neukonfig up``, ``neukonfig prepare`` (the containers'
init step) and the benchmarks all start here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neukonfig.errors import NeukonfigError
from neukonfig.manifest import MANIFEST_FILE, Manifest, read_manifest

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PrepareOptions:
    """What ``prepare`` needs: the model and how the edge is profiled."""

    model: str
    workdir: Path
    edge_threads: int = 1
    edge_slowdown: float = 1.0
    profile_repeats: int = 5
    codecs: tuple[str, ...] = ()  # also profile these codecs (neukonfig.codecs names)
    accuracy_inputs: int = 0  # and their effect on the answers over this many inputs

    @property
    def codec_suffix(self) -> str:
        """Part of a profile's file name: which codecs (and accuracy) it holds."""
        if not self.codecs:
            return ""
        names = "_".join(sorted(name.replace("+", "") for name in self.codecs))
        return f"-{names}" + (f"-acc{self.accuracy_inputs}" if self.accuracy_inputs else "")


@dataclass(frozen=True)
class Prepared:
    """A model made ready to serve: its source file, partitions and both profiles."""

    model_file: Path
    manifest: Manifest
    partitions: Path
    edge_profile: Path
    cloud_profile: Path


def model_source(model: str, workdir: Path) -> tuple[str, Path]:
    """(name, ONNX path) for a zoo name or a file; refuses anything else before any work."""
    from models.zoo import ZOO_MODELS

    if model in ZOO_MODELS:
        return model, workdir / f"{model}.onnx"
    source = Path(model)
    if not source.is_file():
        raise NeukonfigError(
            f"--model {model!r} is neither a zoo model ({', '.join(ZOO_MODELS)}) nor an ONNX file"
        )
    return source.stem, source


def prepare(options: PrepareOptions, progress: Progress = lambda _message: None) -> Prepared:
    """Model, partitions and profiles in the work directory, reused when already there."""
    from models.partition import partition_model

    work = options.workdir
    work.mkdir(parents=True, exist_ok=True)
    name, source = model_source(options.model, work)
    if not source.exists():
        import onnx

        from models.zoo import build_model

        progress(f"building {name} from the zoo ...")
        onnx.save(build_model(name), str(source))
    parts = work / f"{name}-partitions"
    if not (parts / MANIFEST_FILE).exists():
        progress(f"partitioning {source} at every cut into {parts} ...")
        partition_model(source, parts, name=name, progress=progress)
    edge_profile, cloud_profile = _profiles(options, name, parts, progress)
    return Prepared(source, read_manifest(parts), parts, edge_profile, cloud_profile)


def _profiles(
    options: PrepareOptions, name: str, parts: Path, progress: Progress
) -> tuple[Path, Path]:
    from models.codec_accuracy import measure_accuracy, with_accuracy
    from models.profiler import profile_partitions
    from models.runtime import Role
    from neukonfig.codecs import Codec
    from neukonfig.profiles import with_edge_slowdown, write_profile

    codecs = [Codec.parse(name) for name in options.codecs]
    paths = {}
    for role, threads in ((Role.EDGE, options.edge_threads), (Role.CLOUD, None)):
        slower = f"-x{options.edge_slowdown:g}" if role is Role.EDGE else ""
        setup = f"{slower}-t{threads or 'all'}{options.codec_suffix}"
        path = options.workdir / f"{name}-{role.value}{setup}-profile.json"
        if not path.exists():
            progress(f"profiling the {role.value} side ({threads or 'all'} threads) into {path}")
            profile = profile_partitions(
                parts,
                roles=[role],
                threads=threads,
                warmup=1,
                repeats=options.profile_repeats,
                codecs=codecs,
                progress=progress,
            )
            if role is Role.EDGE:
                profile = with_edge_slowdown(profile, options.edge_slowdown)
            if role is Role.EDGE and options.accuracy_inputs:
                measured = measure_accuracy(
                    parts, codecs, inputs=options.accuracy_inputs, progress=progress
                )
                profile = with_accuracy(profile, measured)
            write_profile(path, profile)
        paths[role] = path
    return paths[Role.EDGE], paths[Role.CLOUD]


STABLE_NAMES = ("partitions", "edge-profile.json", "cloud-profile.json")


def link_stable_names(work: Path, prepared: Prepared) -> list[tuple[Path, Path]]:
    """Point ``work/partitions`` and ``work/{edge,cloud}-profile.json`` at what ``prepared``
    holds.

    Container settings name these fixed paths, whatever the model and slowdown; the links
    are relative so they resolve in any container that mounts ``work`` anywhere.
    """
    targets = (prepared.partitions, prepared.edge_profile, prepared.cloud_profile)
    linked = []
    for name, target in zip(STABLE_NAMES, targets, strict=True):
        link = work / name
        link.unlink(missing_ok=True)
        link.symlink_to(target.relative_to(work))
        linked.append((link, target))
    return linked
