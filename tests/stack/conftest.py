"""What the docker compose tests share: this machine's engine (root: they shape veths)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def engine():
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        pytest.skip(f"no Docker engine ({error}); .ci/run starts one")
    if os.geteuid() != 0:
        pytest.skip("shaping the links needs root")
    yield client
    client.close()
