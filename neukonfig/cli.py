"""The ``neukonfig`` command: argument parsing and printing only.

Each subcommand is a thin handler that calls a library function and prints its
result. Errors from the project's exception tree become one line on stderr and
exit status 1; usage errors exit 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from neukonfig.errors import NeukonfigError


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def human_bytes(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def cmd_zoo_list(_args: argparse.Namespace) -> int:
    from models.zoo import ZOO_MODELS

    print("\n".join(ZOO_MODELS))
    return 0


def cmd_zoo_build(args: argparse.Namespace) -> int:
    import onnx

    from models.zoo import ZOO_MODELS, build_model, count_parameters

    if args.name not in ZOO_MODELS:
        build_model(args.name)  # raises the error that names the choices
    started = time.perf_counter()
    _progress(f"building {args.name} (seed {args.seed}) ...")
    model = build_model(args.name, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    print(
        f"wrote {out} ({args.name}, {count_parameters(model):,} parameters, "
        f"{human_bytes(out.stat().st_size)}) in {time.perf_counter() - started:.1f} s"
    )
    return 0


def cmd_cuts(args: argparse.Namespace) -> int:
    from models.cuts import find_cuts
    from models.graph import GraphIndex
    from models.onnx_io import load_model

    model = load_model(args.model)
    cuts = find_cuts(GraphIndex(model.proto))
    if args.json:
        print(json.dumps([cut.as_dict() for cut in cuts], indent=2))
        return 0
    print(f"{len(cuts)} cut points in {args.model} (0 = all-cloud, {len(cuts) - 1} = all-edge)")
    print(f"{'cut':>4}  {'kind':<9}  {'bytes@1':>10}  {'dtype':<8}  {'shape':<22}  tensor")
    for cut in cuts:
        shape = "x".join(str(dim) for dim in cut.shape) if cut.shape else "-"
        print(
            f"{cut.index:>4}  {cut.kind.value:<9}  {human_bytes(cut.bytes):>10}  "
            f"{cut.dtype or '-':<8}  {shape:<22}  {cut.tensor or '-'}"
        )
    return 0


def cmd_partition(args: argparse.Namespace) -> int:
    from models.partition import partition_model
    from models.verify import verify_partitions

    started = time.perf_counter()
    out = Path(args.out)
    manifest = partition_model(args.model, out, cuts=args.cuts, name=args.name, progress=_progress)
    written = len(manifest.cuts)
    elapsed = time.perf_counter() - started
    print(f"wrote {written} of {manifest.num_cuts} cuts to {out} in {elapsed:.1f} s")
    if args.verify:
        checks = verify_partitions(out, manifest, seed=args.seed, progress=_progress)
        worst = max((check.max_abs_error for check in checks), default=0.0)
        print(f"verified {len(checks)} split cuts against the full model (max |error| {worst:.2e})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neukonfig", description="Split a DNN between edge and cloud, and re-split it live."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    zoo = commands.add_parser("zoo", help="build reference models in code (no downloads)")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")
    zoo_commands.add_parser("list", help="list the zoo's models").set_defaults(handler=cmd_zoo_list)
    build = zoo_commands.add_parser("build", help="build a model with seeded weights")
    build.add_argument("name", help="tiny, mobilenetv2, resnet50 or vgg16")
    build.add_argument("--out", required=True, help="output .onnx file")
    build.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    build.set_defaults(handler=cmd_zoo_build)

    cuts = commands.add_parser("cuts", help="list the valid cut points of an ONNX model")
    cuts.add_argument("model", help="ONNX model file")
    cuts.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cuts.set_defaults(handler=cmd_cuts)

    partition = commands.add_parser("partition", help="write head/tail files for cuts")
    partition.add_argument("model", help="ONNX model file")
    partition.add_argument("--out", required=True, help="output partition directory")
    partition.add_argument(
        "--cuts", default="all", help="'all' or a comma list of cut indices and tensor names"
    )
    partition.add_argument("--name", help="model name for the manifest (default: file stem)")
    partition.add_argument("--verify", action="store_true", help="check head->tail == full model")
    partition.add_argument("--seed", type=int, default=0, help="seed of the --verify input")
    partition.set_defaults(handler=cmd_partition)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except NeukonfigError as error:
        print(f"neukonfig: error: {error.message}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"neukonfig: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("neukonfig: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
