"""`neukonfig up` as a user runs it: a real subprocess, stopped as systemd (SIGTERM) or a
terminal (Ctrl-C, SIGINT) stops it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from controller.backends.local import free_port

UP_START_TIMEOUT_S = 240  # model build, partition and profile on a loaded 2-core machine


def up_command(workdir: Path, gateway_port: int, controller_port: int) -> list[str]:
    return [
        sys.executable, "-m", "cli", "up", "--model", "tiny", "--workdir", str(workdir),
        "--gateway-port", str(gateway_port), "--controller-port", str(controller_port),
        "--profile-repeats", "1",
    ]  # fmt: skip


def read_until(process: subprocess.Popen[str], marker: str, lines: list[str]) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + UP_START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if marker in line or not line:
            return


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_serves_then_a_stop_signal_leaves_nothing_behind(
    stop_signal: signal.Signals, tmp_path: Path
) -> None:
    gateway_port, controller_port = free_port(), free_port()
    workdir = tmp_path / "up"
    up = subprocess.Popen(
        up_command(workdir, gateway_port, controller_port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        read_until(up, "Ctrl-C stops everything", lines)
        printed = "".join(lines)
        for endpoint in ("inference (OIP v2)", "/v1/history", "/v2/health/ready", "/metrics"):
            assert endpoint in printed, printed
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 3  # gateway, edge partition, probe target (and more)

        body = json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                         "data": [0.5] * 3072}]}
        )  # fmt: skip
        url = f"http://127.0.0.1:{gateway_port}/v2/models/tiny/infer"
        answer = httpx.post(url, content=body, timeout=30)
        assert answer.status_code == 200, answer.text
        state = httpx.get(f"http://127.0.0.1:{controller_port}/v1/state").json()
        assert state["current_cut"] is not None

        up.send_signal(stop_signal)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
    rest = up.stdout.read() if up.stdout else ""
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not list((workdir / "state").glob("*.json"))
    last = [line for line in (printed + rest).splitlines() if line.strip()][-1]
    assert last == "[neukonfig up] stopped everything it started", rest
    with socket.socket() as probe:  # nobody listens on the gateway's port any more
        assert probe.connect_ex(("127.0.0.1", gateway_port)) != 0


def test_a_bad_model_is_named_before_anything_else(tmp_path: Path) -> None:
    """Even with the gateway port taken, the unknown model is what is reported."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        command = up_command(tmp_path, port, free_port())
        command[command.index("tiny")] = "nosuchmodel"
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "nosuchmodel" in result.stderr
    assert "is neither a zoo model" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_left_in_time_wait_is_not_in_use(tmp_path: Path) -> None:
    """A quick restart: the last run's connections linger in TIME-WAIT on the port, and
    nothing listens; the port check must not refuse it."""
    from cli.up import check_port_free

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: it holds the TIME-WAIT
    client.close()
    server.close()
    check_port_free(port)  # raises if refused

    with socket.create_server(("127.0.0.1", 0)) as listening:
        taken = listening.getsockname()[1]
        with pytest.raises(Exception, match="in use"):
            check_port_free(taken)
