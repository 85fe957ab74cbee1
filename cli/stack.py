"""``neukonfig up``, ``prepare`` and ``bench``: the subcommands that run the whole stack."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cli.common import (
    add_edge_device_arguments,
    codec_list,
    edge_device_spec,
    positive_int,
    progress,
    share,
)
from neukonfig.errors import NeukonfigError


def cmd_prepare(args: argparse.Namespace) -> int:
    from models.prepare import (
        PrepareOptions,
        link_stable_names,
        prepare,
        prepare_cloud_side,
        prepare_edge_side,
    )

    options = PrepareOptions(
        model=args.model,
        workdir=Path(args.workdir),
        edge_threads=args.edge_threads,
        edge_slowdown=args.edge_slowdown,
        profile_repeats=args.profile_repeats,
    )
    if args.side != "edge" and args.cloud_profile:
        raise NeukonfigError("--cloud-profile is for --side edge: the cloud profile handed over")
    if args.side == "edge" and not args.cloud_profile:
        raise NeukonfigError(
            "--side edge needs --cloud-profile: the cloud's profile is measured on the cloud "
            "host (neukonfig prepare --side cloud there) and its cloud-profile.json copied here"
        )
    if args.side == "cloud":
        parts, cloud_profile = prepare_cloud_side(options, progress=progress)
        links = link_stable_names(options.workdir, parts, None, cloud_profile)
    else:
        prepared = (
            prepare_edge_side(options, Path(args.cloud_profile), progress=progress)
            if args.side == "edge"
            else prepare(options, progress=progress)
        )
        links = link_stable_names(
            options.workdir, prepared.partitions, prepared.edge_profile, prepared.cloud_profile
        )
    for name, target in links:
        print(f"{name} -> {target}")
    return 0


def _add_prepare(commands: argparse._SubParsersAction) -> None:
    prepare = commands.add_parser(
        "prepare",
        help="build, partition and profile a model into a directory (containers' init step)",
        description="Writes MODEL.onnx, its partitions and both profiles into WORKDIR (reused "
        "when there), then points WORKDIR/partitions, WORKDIR/edge-profile.json and "
        "WORKDIR/cloud-profile.json at them, the fixed paths the services are configured with. "
        "On two hosts, each profiles its own side: --side cloud on the server, then --side "
        "edge --cloud-profile FILE on the edge with the server's cloud-profile.json.",
    )
    prepare.add_argument("--model", default="mobilenetv2", help="zoo model name or .onnx file")
    prepare.add_argument("--workdir", default="/data", help="output directory (a shared volume)")
    prepare.add_argument(
        "--side",
        choices=["both", "edge", "cloud"],
        default="both",
        help="profile both sides here (one host), or only this host's side (two hosts)",
    )
    prepare.add_argument(
        "--cloud-profile", help="with --side edge: the cloud-profile.json made on the cloud host"
    )
    prepare.add_argument("--edge-threads", type=positive_int, default=1)
    prepare.add_argument("--edge-slowdown", type=float, default=1.0)
    prepare.add_argument("--profile-repeats", type=positive_int, default=5)
    prepare.set_defaults(handler=cmd_prepare)


def add_stack_commands(commands: argparse._SubParsersAction) -> None:
    _add_prepare(commands)
    _add_up(commands)
    _add_bench(commands)


def cmd_bench_downtime(args: argparse.Namespace) -> int:

    from controller.settings import StrategyName
    from neukonfig.units import parse_schedule
    from testbed.downtime import DowntimeScenario, markdown_table, run_downtime
    from testbed.links import resolve_link_kind
    from testbed.report import write_json

    try:
        strategies = [StrategyName(name.strip()) for name in args.strategies.split(",")]
    except ValueError as error:
        known = ", ".join(s.value for s in StrategyName)
        raise NeukonfigError(f"{error}; strategies are {known}") from None
    if args.max_top1_disagreement is not None and not args.codecs:
        raise NeukonfigError("--max-top1-disagreement needs --codecs (e.g. int8,int8+zstd)")
    schedule = parse_schedule(args.schedule)
    if not schedule or schedule[0][0] != 0:
        raise NeukonfigError("--schedule must start with a rate at 0, e.g. 50mbit@0,5mbit@20")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = Path(args.results_dir or f"results/downtime-{args.model}-{stamp}")
    device = edge_device_spec(args, Path(args.workdir))
    results.mkdir(parents=True, exist_ok=True)
    scenario = DowntimeScenario(
        link=resolve_link_kind(args.link),
        model=args.model,
        strategies=strategies,
        schedule=schedule,
        rate_per_s=args.rate,
        duration_s=args.duration or schedule[-1][0] + 30,
        workdir=Path(args.workdir),
        device=device,
        edge_slowdown=args.edge_slowdown,
        edge_threads=args.edge_threads,
        seed=args.seed,
        repeats=args.repeats,
        control=not args.no_control,
        hosted=args.hosted,
        codecs=tuple(codec.name for codec in args.codecs),
        accuracy_inputs=args.accuracy,
        max_top1_disagreement=args.max_top1_disagreement,
    )
    report = run_downtime(scenario, progress)
    table = markdown_table(report)
    out = Path(args.json) if args.json else results / "downtime.json"
    write_json(out, report)
    (results / "table.md").write_text(table + "\n")
    try:
        from testbed.plot import plot_downtime
    except ImportError as error:
        raise NeukonfigError(
            f"the plot needs matplotlib ({error}): pip install 'neukonfig[bench]'"
        ) from None
    picture = plot_downtime(report, results / "downtime.png")
    print(table)
    print(f"\nresults in {results} (JSON: {out}, plot: {picture})")
    return 0


def add_codec_budget_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--codecs",
        type=codec_list,
        default=[],
        help="plan (cut, codec) pairs over these codecs too (e.g. int8,int8+zstd; 'all')",
    )
    parser.add_argument(
        "--accuracy", type=positive_int, default=256, help="inputs for the codecs' accuracy"
    )
    parser.add_argument(
        "--max-top1-disagreement", type=share, help="the accuracy budget for lossy codecs"
    )


def _add_bench(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="run the benchmarks")
    kinds = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    downtime = kinds.add_parser("downtime", help="every strategy through one bandwidth schedule")
    downtime.add_argument("--model", default="mobilenetv2", help="zoo model name or .onnx")
    downtime.add_argument("--strategies", default="pause_resume,switch_on_demand,switch_standby")
    downtime.add_argument("--schedule", default="50mbit@0,5mbit@30,50mbit@60")
    downtime.add_argument("--rate", type=float, default=10.0, help="probe requests per second")
    downtime.add_argument("--duration", type=float, help="seconds per run (last step + 30)")
    downtime.add_argument(
        "--repeats", type=positive_int, default=3, help="runs per strategy (median and range)"
    )
    downtime.add_argument(
        "--no-control",
        action="store_true",
        help="skip the control run (controller pinned to the first cut)",
    )
    downtime.add_argument(
        "--link",
        choices=["auto", "tc", "proxy"],
        default="auto",
        help="tc in a network namespace (root) or the user-space proxy; auto: tc when root",
    )
    downtime.add_argument(
        "--hosted",
        action="store_true",
        help="partitions as sessions in one edge and one cloud host process (hosted_partitions)",
    )
    add_codec_budget_arguments(downtime)
    add_edge_device_arguments(downtime)
    downtime.add_argument("--edge-threads", type=positive_int, default=1)
    downtime.add_argument("--workdir", default=".neukonfig/bench")
    downtime.add_argument("--results-dir", help="default results/downtime-MODEL-TIMESTAMP")
    downtime.add_argument("--json", help="also write the JSON here")
    downtime.add_argument("--seed", type=int, default=0)
    downtime.set_defaults(handler=cmd_bench_downtime)

    planner = kinds.add_parser("planner", help="regret of the planner's cut, measured end to end")
    planner.add_argument("--model", default="resnet50", help="zoo model name or .onnx")
    planner.add_argument("--bandwidths", default="1mbit,5mbit,10mbit,25mbit,50mbit,100mbit")
    planner.add_argument("--top", type=positive_int, default=3, help="candidates per bandwidth")
    planner.add_argument("--requests", type=positive_int, default=10, help="per candidate, at most")
    planner.add_argument("--seconds", type=float, default=8.0, help="per candidate, at most")
    planner.add_argument("--link", choices=["auto", "tc", "proxy"], default="auto")
    add_edge_device_arguments(planner)
    planner.add_argument("--edge-threads", type=positive_int, default=1)
    planner.add_argument("--workdir", default=".neukonfig/bench")
    add_codec_budget_arguments(planner)
    planner.add_argument("--json", default="results/planner_regret.json")
    planner.set_defaults(handler=cmd_bench_planner)


def cmd_bench_planner(args: argparse.Namespace) -> int:

    from neukonfig.units import parse_bandwidth
    from testbed.links import resolve_link_kind
    from testbed.regret import RegretScenario, markdown_table, run_regret
    from testbed.report import write_json

    scenario = RegretScenario(
        model=args.model,
        bandwidths=[parse_bandwidth(b) for b in args.bandwidths.split(",")],
        top=args.top,
        requests=args.requests,
        seconds_per_cut=args.seconds,
        workdir=Path(args.workdir),
        link=resolve_link_kind(args.link),
        edge_slowdown=args.edge_slowdown,
        edge_threads=args.edge_threads,
        codecs=tuple(codec.name for codec in args.codecs),
        accuracy_inputs=args.accuracy,
        max_top1_disagreement=args.max_top1_disagreement,
        device=edge_device_spec(args, Path(args.workdir)),
    )
    report = run_regret(scenario, progress)
    out = write_json(args.json, report)
    print(markdown_table(report))
    print(f"\nwrote {out}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from cli.up import UpOptions, run_up
    from controller.settings import StrategyName
    from models.prepare import model_source
    from neukonfig.units import parse_schedule
    from testbed.links import resolve_link_kind

    workdir = Path(args.workdir)
    model_source(args.model, workdir)  # a bad --model is named before any calibration
    options = UpOptions(
        model=args.model,
        workdir=workdir,
        strategy=StrategyName(args.strategy),
        gateway_port=args.gateway_port,
        controller_port=args.controller_port,
        edge_threads=args.edge_threads,
        edge_slowdown=args.edge_slowdown,
        link_rate=args.link_rate,
        schedule=parse_schedule(args.schedule),
        traffic_rate=args.traffic,
        duration_s=args.duration,
        initial_bandwidth=args.initial_bandwidth,
        profile_repeats=args.profile_repeats,
        device=edge_device_spec(args, workdir),
        link_kind=resolve_link_kind(args.link),
        hosted=args.hosted,
        tls=args.tls,
    )
    if options.schedule and not options.link_rate:
        raise NeukonfigError("--schedule changes the emulated link: give --link-rate too")
    return run_up(options)


def _add_up(commands: argparse._SubParsersAction) -> None:
    up = commands.add_parser(
        "up", help="run gateway, partitions and controller locally (the embedded default)"
    )
    up.add_argument("--model", default="mobilenetv2", help="zoo model name or .onnx file")
    up.add_argument("--workdir", default=".neukonfig/up", help="cache of model, partitions, logs")
    up.add_argument(
        "--strategy",
        choices=["pause_resume", "switch_on_demand", "switch_standby"],
        default="switch_standby",
    )
    up.add_argument("--gateway-port", type=int, default=8000)
    up.add_argument("--controller-port", type=int, default=8300)
    up.add_argument(
        "--edge-threads", type=positive_int, default=1, help="threads per edge partition (1)"
    )
    add_edge_device_arguments(up)
    up.add_argument("--link-rate", help="emulate the edge-cloud link at this rate, e.g. 50mbit")
    up.add_argument(
        "--link",
        choices=["auto", "tc", "proxy"],
        default="auto",
        help="how --link-rate is emulated: tc in a network namespace (root) or the user-space "
        "proxy; auto: tc when root",
    )
    up.add_argument("--schedule", help="change the emulated rate: 5mbit@20,50mbit@40 (seconds)")
    up.add_argument("--traffic", type=float, default=0.0, help="send N requests/s as a demo")
    up.add_argument("--duration", type=float, help="stop after this many seconds")
    up.add_argument("--initial-bandwidth", default="50mbit", help="plan the first cut for this")
    up.add_argument("--profile-repeats", type=positive_int, default=5)
    up.add_argument(
        "--hosted",
        action="store_true",
        help="run partitions as sessions in one edge and one cloud host process: a new "
        "pipeline is a session load, not a process start",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS between edge and cloud partitions, as across a real WAN "
        "(certificates made once in WORKDIR/certs)",
    )
    up.set_defaults(handler=cmd_up)
