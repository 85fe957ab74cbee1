"""Writing a benchmark's machine-readable report: one place for every benchmark."""

from __future__ import annotations

import json
from pathlib import Path

from models.profiler import machine_info


def machine() -> dict[str, object]:
    """What ran the benchmark (platform, architecture, CPU model and count, Python)."""
    return machine_info().model_dump()


def write_json(path: str | Path, report: object) -> Path:
    """Write ``report`` as indented JSON, creating the folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
