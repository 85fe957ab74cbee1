"""Small pieces the ``neukonfig`` subcommand modules share."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neukonfig.codecs import Codec
    from testbed.edge_device import DeviceSpec


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def share(text: str) -> float:
    """``0.5%`` or ``0.005`` -> 0.005; a share between 0 and 1."""
    from neukonfig.errors import InvalidUnitError
    from neukonfig.units import parse_share

    try:
        return parse_share(text)
    except InvalidUnitError as error:
        raise argparse.ArgumentTypeError(error.message) from None


def codec_list(text: str) -> list[Codec]:
    """``fp16,int8+zstd`` -> the codecs, without ``none`` (always profiled); ``all``: every
    codec there is."""
    from neukonfig.codecs import Codec, known_names

    names = known_names() if text.strip() == "all" else text.split(",")
    try:
        codecs = [Codec.parse(name) for name in names]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return list(dict.fromkeys(codec for codec in codecs if codec != Codec()))


DEFAULT_EDGE_MEMORY = "2GiB"


def add_edge_device_arguments(parser: argparse.ArgumentParser) -> None:
    from testbed.edge_device import PRESETS

    group = parser.add_argument_group(
        "emulated edge device",
        "The gateway and the edge partitions run inside cgroups with a CPU quota and a memory "
        "limit (needs root). Without root, --edge-slowdown sleeps instead, and says so.",
    )
    group.add_argument(
        "--edge-device",
        choices=sorted(PRESETS),
        help="a real device by its published figures, calibrated on this machine",
    )
    group.add_argument(
        "--edge-cpus", type=float, help="raw: this machine's CPUs the edge may use, e.g. 0.5"
    )
    group.add_argument(
        "--edge-memory", help=f"memory limit with --edge-cpus (default {DEFAULT_EDGE_MEMORY})"
    )
    group.add_argument(
        "--edge-slowdown",
        type=float,
        default=1.0,
        help="fallback without cgroups: sleep so that each head run takes this many times longer",
    )


def edge_device_spec(args: argparse.Namespace, workdir: Path) -> DeviceSpec | None:
    """The device the arguments ask for, calibrated here; None when none is asked for."""
    from neukonfig.errors import NeukonfigError
    from neukonfig.units import parse_bytes
    from testbed.edge_device import PRESETS, calibrate, device_from_cpus

    if args.edge_device and args.edge_cpus:
        raise NeukonfigError("give --edge-device or --edge-cpus, not both")
    if (args.edge_device or args.edge_cpus) and args.edge_slowdown > 1:
        raise NeukonfigError("--edge-slowdown is the fallback without cgroups: not with a device")
    if args.edge_memory and not args.edge_cpus:
        raise NeukonfigError("--edge-memory goes with --edge-cpus (a preset has its own)")
    if args.edge_device:
        progress(f"calibrating the {args.edge_device} edge device on this machine ...")
        spec = calibrate(PRESETS[args.edge_device], workdir / "calibration")
        progress(f"edge device {spec.describe()}")
        return spec
    if args.edge_cpus:
        return device_from_cpus(
            args.edge_cpus, parse_bytes(args.edge_memory or DEFAULT_EDGE_MEMORY)
        )
    return None
