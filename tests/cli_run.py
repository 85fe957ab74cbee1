"""Run the ``neukonfig`` command as a user does, and check its one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def neukonfig(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("neukonfig: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
