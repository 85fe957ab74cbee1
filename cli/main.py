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
from typing import TYPE_CHECKING

from cli.certs import add_certs_command
from cli.common import codec_list, positive_int, progress, share
from cli.shape import add_shape_command
from cli.stack import add_stack_commands
from neukonfig.errors import NeukonfigError

if TYPE_CHECKING:
    from models.planner import CutChoice, Planner
    from neukonfig.profiles import Profile


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
    progress(f"building {args.name} (seed {args.seed}) ...")
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
    manifest = partition_model(args.model, out, cuts=args.cuts, name=args.name, progress=progress)
    written = len(manifest.cuts)
    elapsed = time.perf_counter() - started
    print(f"wrote {written} of {manifest.num_cuts} cuts to {out} in {elapsed:.1f} s")
    if args.verify:
        checks = verify_partitions(out, manifest, seed=args.seed, progress=progress)
        worst = max((check.max_abs_error for check in checks), default=0.0)
        print(f"verified {len(checks)} split cuts against the full model (max |error| {worst:.2e})")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from models.profiler import loaded_cuts, profile_partitions
    from models.runtime import Role
    from neukonfig.profiles import with_edge_slowdown, write_profile

    roles = [Role.EDGE, Role.CLOUD] if args.role == "both" else [Role(args.role)]
    if args.accuracy and len(roles) < 2:
        raise NeukonfigError("--accuracy runs heads and tails: profile --role both")
    started = time.perf_counter()
    profile = profile_partitions(
        args.directory,
        roles=roles,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        codecs=args.codecs,
        progress=progress,
    )
    if args.accuracy:
        from models.codec_accuracy import measure_accuracy, with_accuracy

        measured = measure_accuracy(
            args.directory,
            args.codecs,
            inputs=args.accuracy,
            threads=args.threads,
            progress=progress,
        )
        profile = with_accuracy(profile, measured)
    if args.slowdown != 1.0:
        profile = with_edge_slowdown(profile, args.slowdown)
    write_profile(args.out, profile)
    print(
        f"wrote {args.out}: {len(profile.cuts)} cuts of {profile.model.name}, "
        f"{_profile_setup(profile)}, in {time.perf_counter() - started:.1f} s"
    )
    loaded = loaded_cuts(profile)
    if loaded:
        progress(
            f"warning: other processes used the CPU while {len(loaded)} cut(s) were timed "
            f"(cuts {', '.join(map(str, loaded[:8]))}{' ...' if len(loaded) > 8 else ''}); "
            f"their times may be inflated: profile again on a quiet machine"
        )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from models.planner import CodecBudget, Planner
    from neukonfig.manifest import read_manifest
    from neukonfig.profiles import read_profile
    from neukonfig.units import parse_duration

    manifest = read_manifest(Path(args.directory))
    edge, cloud = read_profile(args.profile_edge), read_profile(args.profile_cloud)
    planner = Planner.from_profiles(
        manifest,
        edge,
        cloud,
        stat=args.stat,
        edge_label=f"edge profile {args.profile_edge}",
        cloud_label=f"cloud profile {args.profile_cloud}",
        budget=CodecBudget(args.max_top1_disagreement),
    )
    rtt_s = parse_duration(args.rtt)
    setup = f"edge: {_profile_setup(edge)}; cloud: {_profile_setup(cloud)}"
    if args.sweep:
        return _print_sweep(planner, args, rtt_s=rtt_s, setup=setup)
    return _print_plan(planner, args, rtt_s=rtt_s, setup=setup)


def _print_plan(planner: Planner, args: argparse.Namespace, *, rtt_s: float, setup: str) -> int:
    from neukonfig.units import format_bandwidth, parse_bandwidth

    bandwidth = parse_bandwidth(args.bandwidth)
    ranked = planner.ranked(bandwidth, rtt_s)
    best = ranked[0]
    if args.json:
        shown = [_choice_dict(planner, choice) for choice in ranked[: args.top]]
        print(
            json.dumps(
                {
                    "model": planner.model,
                    "bandwidth_bps": bandwidth,
                    "rtt_s": rtt_s,
                    "stat": args.stat,
                    "best": _choice_dict(planner, best),
                    "ranked": shown,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"{planner.model}: {len(ranked)} {_rows_name(planner)} at {format_bandwidth(bandwidth)}, "
        f"rtt {rtt_s * 1e3:g} ms, {args.stat} times ({setup})"
    )
    width = _cut_width(planner)
    print(
        f"{'rank':>4}  {'cut':>{width}}  {'kind':<9}  {'sent':>10}  {'edge ms':>8}  "
        f"{'serial ms':>9}  {'rtt ms':>7}  {'transfer ms':>11}  {'cloud ms':>8}  "
        f"{'total ms':>9}  tensor"
    )
    for rank, choice in enumerate(ranked[: args.top], start=1):
        position = planner.position(choice.cut, choice.codec)
        spec = planner.cuts[position]
        part = choice.breakdown
        print(
            f"{rank:>4}  {choice.label:>{width}}  {spec.kind.value:<9}  "
            f"{human_bytes(int(planner.frame_bytes[position])):>10}  "
            f"{part.edge_s * 1e3:>8.2f}  {part.serialization_s * 1e3:>9.2f}  "
            f"{part.rtt_s * 1e3:>7.2f}  {part.transfer_s * 1e3:>11.2f}  "
            f"{part.cloud_s * 1e3:>8.2f}  {choice.latency_s * 1e3:>9.2f}  {spec.tensor or '-'}"
        )
    kind = planner.cuts[planner.position(best.cut)].kind.value
    coded = f", codec {best.codec}" if best.codec != "none" else ""
    print(f"best: cut {best.cut} ({kind}{coded}), predicted {best.latency_s * 1e3:.2f} ms")
    return 0


def _print_sweep(planner: Planner, args: argparse.Namespace, *, rtt_s: float, setup: str) -> int:
    from models.crossover import crossover_table
    from models.planner import option_label
    from neukonfig.units import format_bandwidth, parse_bandwidth_range

    low, high = parse_bandwidth_range(args.sweep)
    ranges = crossover_table(planner, low_bps=low, high_bps=high, rtt_s=rtt_s)
    if args.json:
        rows = [
            {
                "low_bps": r.low_bps,
                "high_bps": r.high_bps,
                **_cut_dict(planner, r.cut, r.codec),
                "latency_at_low_s": r.latency_at_low_s,
                "latency_at_high_s": r.latency_at_high_s,
            }
            for r in ranges
        ]
        document = {"model": planner.model, "low_bps": low, "high_bps": high, "rtt_s": rtt_s}
        print(json.dumps({**document, "stat": args.stat, "ranges": rows}, indent=2))
        return 0
    print(
        f"{planner.model}: fastest cut from {format_bandwidth(low)} to {format_bandwidth(high)}, "
        f"rtt {rtt_s * 1e3:g} ms, {args.stat} times ({setup})"
    )
    width = _cut_width(planner)
    print(
        f"{'from':>9}  {'to':>9}  {'cut':>{width}}  {'kind':<9}  {'sent':>10}  "
        f"{'latency ms (from -> to)':>23}  tensor"
    )
    for r in ranges:
        position = planner.position(r.cut, r.codec)
        spec = planner.cuts[position]
        sent = human_bytes(int(planner.frame_bytes[position]))
        latency = f"{r.latency_at_low_s * 1e3:.1f} -> {r.latency_at_high_s * 1e3:.1f}"
        cut = option_label(r.cut, r.codec)
        print(
            f"{format_bandwidth(r.low_bps):>9}  {format_bandwidth(r.high_bps):>9}  {cut:>{width}}  "
            f"{spec.kind.value:<9}  {sent:>10}  {latency:>23}  {spec.tensor or '-'}"
        )
    return 0


def _rows_name(planner: Planner) -> str:
    return "cuts" if set(planner.codecs) == {"none"} else "(cut, codec) options"


def _cut_width(planner: Planner) -> int:
    from models.planner import option_label

    rows = zip(planner.indices, planner.codecs, strict=True)
    labels = [option_label(cut, codec) for cut, codec in rows]
    return max(4, *map(len, labels))


def _cut_dict(planner: Planner, cut: int, codec: str = "none") -> dict[str, object]:
    position = planner.position(cut, codec)
    spec = planner.cuts[position]
    return {
        "cut": cut,
        "codec": codec,
        "kind": spec.kind.value,
        "tensor": spec.tensor,
        "frame_bytes": int(planner.frame_bytes[position]),
    }


def _choice_dict(planner: Planner, choice: CutChoice) -> dict[str, object]:
    part = choice.breakdown
    return {
        **_cut_dict(planner, choice.cut, choice.codec),
        "latency_s": choice.latency_s,
        "edge_s": part.edge_s,
        "serialization_s": part.serialization_s,
        "rtt_s": part.rtt_s,
        "transfer_s": part.transfer_s,
        "cloud_s": part.cloud_s,
    }


def _profile_setup(profile: Profile) -> str:
    threads = f"{profile.threads} thread(s)" if profile.threads else "all threads"
    emulated = ", emulated edge" if profile.emulated_edge else ""
    if profile.edge_slowdown > 1:
        emulated += f" {profile.edge_slowdown:g}x slower"
    machine = profile.machine
    return f"{threads}{emulated} on {machine.cpu_model} x{machine.cpu_count}"


def _add_profile_and_plan(commands: argparse._SubParsersAction) -> None:
    profile = commands.add_parser("profile", help="measure every cut's cost on this machine")
    profile.add_argument("directory", help="partition directory (from neukonfig partition)")
    profile.add_argument(
        "--role",
        choices=["edge", "cloud", "both"],
        default="both",
        help="side to measure: heads (edge), tails (cloud) or both (default)",
    )
    profile.add_argument(
        "--threads",
        type=positive_int,
        help="onnxruntime intra-op threads (default: one per core); fewer threads than "
        "this machine has, for the edge role, is recorded as an emulated edge",
    )
    profile.add_argument(
        "--slowdown",
        type=float,
        default=1.0,
        help="scale head compute for an edge emulated this many times slower (see "
        "NEUKONFIG_EDGE_SLOWDOWN)",
    )
    profile.add_argument("--repeats", type=positive_int, default=10, help="timed runs (10)")
    profile.add_argument("--warmup", type=positive_int, default=2, help="untimed runs first (2)")
    profile.add_argument(
        "--codecs",
        type=codec_list,
        default=[],
        help="also measure these codecs of the crossing tensor, comma-separated (e.g. "
        "fp16,int8,int8-channel,zstd,int8+zstd; 'all' for every one): frame sizes over "
        "the head's outputs, encode on the edge role, decode on the cloud role",
    )
    profile.add_argument(
        "--accuracy",
        type=positive_int,
        metavar="INPUTS",
        help="also compare the lossy codecs' outputs with the fp32 model's over this many "
        "seeded inputs (256 is a sound number; needs --role both)",
    )
    profile.add_argument("--out", required=True, help="profile JSON to write")
    profile.set_defaults(handler=cmd_profile)

    plan = commands.add_parser("plan", help="predict each cut's latency; pick the fastest")
    plan.add_argument("directory", help="partition directory (from neukonfig partition)")
    plan.add_argument("--profile-edge", required=True, help="profile with edge (head) timings")
    plan.add_argument("--profile-cloud", required=True, help="profile with cloud (tail) timings")
    link = plan.add_mutually_exclusive_group(required=True)
    link.add_argument("--bandwidth", help="link bandwidth, e.g. 500kbit, 10mbit, 1gbit")
    link.add_argument(
        "--sweep", metavar="LOW:HIGH", help="print the fastest cut per bandwidth range instead"
    )
    plan.add_argument("--rtt", default="0", help="round-trip time, e.g. 20ms (default 0)")
    plan.add_argument(
        "--stat", choices=["median", "p90"], default="median", help="profile time to use"
    )
    plan.add_argument(
        "--max-top1-disagreement",
        type=share,
        metavar="SHARE",
        help="let the plan use lossy codecs whose measured top-1 disagreement with the fp32 "
        "model is at most this (e.g. 0.5%%; needs a profile with --codecs and --accuracy). "
        "Default: lossless codecs only",
    )
    plan.add_argument("--top", type=positive_int, help="show only the N fastest cuts")
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plan.set_defaults(handler=cmd_plan)


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
    _add_profile_and_plan(commands)
    add_stack_commands(commands)
    add_shape_command(commands)
    add_certs_command(commands)
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
