"""Shared fixtures: models are built once per session, in a temporary directory.

Tiers that need something this machine may lack (root, a Docker engine, the prometheus
binary, kubectl) skip with the reason elsewhere. In CI, which provides all of them,
``NEUKONFIG_NO_SKIPS=1`` turns any skip into a failure, so no tier goes quietly unrun.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

from models.partition import partition_model
from tests.graphs import branchy_model


@pytest.fixture(scope="session")
def zoo_file(tmp_path_factory: pytest.TempPathFactory):
    """Build a zoo model once per test session and return the path of its .onnx file."""
    from models.zoo import build_model

    built: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in built:
            path = tmp_path_factory.mktemp("zoo") / f"{name}.onnx"
            onnx.save(build_model(name), str(path))
            built[name] = path
        return built[name]

    return build


@pytest.fixture
def branchy_file(tmp_path: Path) -> Path:
    path = tmp_path / "branchy.onnx"
    onnx.save(branchy_model(), str(path))
    return path


@pytest.fixture(scope="session")
def tiny_parts(zoo_file, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-parts")
    partition_model(zoo_file("tiny"), out, name="tiny")
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and os.environ.get("NEUKONFIG_NO_SKIPS") == "1"
    ):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped where every tier must run (NEUKONFIG_NO_SKIPS=1): {reason}"
