"""`neukonfig up` as a user runs it: a real subprocess, then Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from controller.backends.local import free_port


def test_up_serves_then_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    gateway_port, controller_port = free_port(), free_port()
    workdir = tmp_path / "up"
    command = [
        sys.executable, "-m", "neukonfig", "up", "--model", "tiny", "--workdir", str(workdir),
        "--gateway-port", str(gateway_port), "--controller-port", str(controller_port),
        "--profile-repeats", "1",
    ]  # fmt: skip
    up = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert up.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops everything" in line or not line:
                break
        assert any("inference (OIP v2)" in line for line in lines), "".join(lines)
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

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not list((workdir / "state").glob("*.json"))
    assert "stopped everything it started" in "".join(lines) + (
        up.stdout.read() if up.stdout else ""
    )
