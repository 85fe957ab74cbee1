"""Everything the controller needs before it can serve a model, made once and cached.

``prepare`` builds the zoo model (or takes the user's ONNX file), partitions it at every
cut, optimizes the partitions for the edge's machine and profiles both sides, all in one
work directory; a second call with the same
options reuses what is there. ``neukonfig up``, ``neukonfig prepare`` (the containers'
init step) and the benchmarks all start here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from neukonfig.errors import NeukonfigError
from neukonfig.manifest import MANIFEST_FILE, Manifest, read_manifest

if TYPE_CHECKING:
    from models.runtime import Role
    from neukonfig.profiles import Profile

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
    """Model, partitions and profiles in the work directory, reused when already there;
    and the partitions optimized for this machine, whose edge heads then share weights
    (``models.optimized``: the edge runs here)."""
    from models.optimized import optimize_partitions
    from models.runtime import Role

    name, source, parts = _model_and_partitions(options, progress)
    optimize_partitions(parts, progress)
    profiles = _profiles(options, name, parts, progress, roles=(Role.EDGE, Role.CLOUD))
    return Prepared(source, read_manifest(parts), parts, profiles[Role.EDGE], profiles[Role.CLOUD])


def prepare_cloud_side(
    options: PrepareOptions, progress: Progress = lambda _message: None
) -> tuple[Path, Path]:
    """On the cloud host of a two-host deployment: the model, its partitions (the same
    files as the edge's: the zoo's models are seeded, partitioning is deterministic) and
    the cloud profile, measured where the tails will run. Returns the partitions and the
    profile, the file to hand to the edge host (``prepare_edge_side``)."""
    from models.runtime import Role

    name, _source, parts = _model_and_partitions(options, progress)
    return parts, _profiles(options, name, parts, progress, roles=(Role.CLOUD,))[Role.CLOUD]


def prepare_edge_side(
    options: PrepareOptions, cloud_profile: Path, progress: Progress = lambda _message: None
) -> Prepared:
    """On the edge host of a two-host deployment: everything but the cloud profile, which
    comes from the cloud host (``prepare_cloud_side``), never measured on the edge."""
    from models.optimized import optimize_partitions
    from models.runtime import Role
    from neukonfig.profiles import read_profile

    profile = read_profile(cloud_profile)  # a wrong file is refused before any work
    if "cloud" not in profile.roles:
        raise NeukonfigError(
            f"{cloud_profile} holds no cloud profile (roles: {', '.join(profile.roles)})"
        )
    name, source, parts = _model_and_partitions(options, progress)
    optimize_partitions(parts, progress)
    manifest = read_manifest(parts)
    handed = _check_cloud_profile(cloud_profile, profile, manifest)
    kept = options.workdir / f"{name}-cloud-handed-profile.json"
    if not kept.exists() or kept.read_bytes() != handed:
        progress(f"taking the cloud host's profile {cloud_profile} as {kept}")
        kept.write_bytes(handed)
    edge_profile = _profiles(options, name, parts, progress, roles=(Role.EDGE,))[Role.EDGE]
    return Prepared(source, manifest, parts, edge_profile, kept)


def _check_cloud_profile(path: Path, profile: Profile, manifest: Manifest) -> bytes:
    """The bytes of ``path`` if its ``profile`` is one of ``manifest``'s model."""
    if profile.model.sha256 != manifest.model.sha256:
        raise NeukonfigError(
            f"{path} profiles another model ({profile.model.name}, sha256 "
            f"{profile.model.sha256[:12]}) than this one ({manifest.model.name}, sha256 "
            f"{manifest.model.sha256[:12]}): prepare both hosts with the same --model"
        )
    return path.read_bytes()


def _model_and_partitions(options: PrepareOptions, progress: Progress) -> tuple[str, Path, Path]:
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
    return name, source, parts


def _profiles(
    options: PrepareOptions, name: str, parts: Path, progress: Progress, *, roles: tuple[Role, ...]
) -> dict[Role, Path]:
    from models.codec_accuracy import measure_accuracy, with_accuracy
    from models.profiler import profile_partitions
    from models.runtime import Role
    from neukonfig.codecs import Codec
    from neukonfig.profiles import with_edge_slowdown, write_profile

    codecs = [Codec.parse(name) for name in options.codecs]
    paths = {}
    for role in roles:
        threads = options.edge_threads if role is Role.EDGE else None
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
    return paths


STABLE_NAMES = ("partitions", "edge-profile.json", "cloud-profile.json")


def link_stable_names(
    work: Path, partitions: Path, edge_profile: Path | None, cloud_profile: Path | None
) -> list[tuple[Path, Path]]:
    """Point ``work/partitions`` and ``work/{edge,cloud}-profile.json`` at what was
    prepared (a cloud host has no edge profile).

    Container settings name these fixed paths, whatever the model and slowdown; the links
    are relative so they resolve in any container that mounts ``work`` anywhere.
    """
    targets = (partitions, edge_profile, cloud_profile)
    linked = []
    for name, target in zip(STABLE_NAMES, targets, strict=True):
        if target is None:
            continue
        link = work / name
        link.unlink(missing_ok=True)
        link.symlink_to(target.relative_to(work))
        linked.append((link, target))
    return linked
