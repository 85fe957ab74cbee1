"""Small pieces the ``neukonfig`` subcommand modules share."""

from __future__ import annotations

import argparse
import sys


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
