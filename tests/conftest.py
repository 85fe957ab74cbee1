"""Shared fixtures: models are built once per session, in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from models.partition import partition_model

from graphs import branchy_model


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
