"""Bad input and bad control-plane calls: 4xx JSON errors, never a 500, nothing lost."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from neukonfig import wire
from tests.services.oip_client import binary_request, json_request, outputs_of
from tests.services.stack import Stack, expected_logits, start_stack

MAX_BODY = 200_000
BODY_TIMEOUT_S = 1.0
HEADER_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def stack(services, tiny_parts: Path, admin_token: str) -> Stack:
    stack = start_stack(
        services,
        tiny_parts,
        "tiny",
        admin_token,
        [1, 4],
        max_body_bytes=str(MAX_BODY),
        ready_check_timeout_s="1",
        body_timeout_s=str(BODY_TIMEOUT_S),
        header_timeout_s=str(HEADER_TIMEOUT_S),
    )
    assert stack.switch("p1").status_code == 200
    return stack


def still_serves(stack: Stack, parts: Path) -> None:
    batch = np.random.default_rng(5).standard_normal((1, 3, 32, 32), dtype=np.float32)
    body, headers = binary_request("input", batch)
    response = httpx.post(stack.infer_url, content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        outputs_of(response)["logits"], expected_logits(parts, batch), rtol=1e-4
    )


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


def oip(name: str, shape, datatype: str, data) -> bytes:
    return json.dumps(
        {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}
    ).encode()


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        (oip("input", [1, 3, 32, 31], "FP32", [0.0] * 2976), {}, "shape"),
        (oip("input", [1, 3, 32, 32], "FP64", [0.0] * 3072), {}, "FP64"),
        (oip("input", [1, 3, 32, 32], "FP32", [0.0] * 3000), {}, "3072"),
        (oip("image", [1, 3, 32, 32], "FP32", [0.0] * 3072), {}, "image"),
        (b"{not json", {}, "JSON"),
        (b"[]", {}, ""),
        (
            b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": "x"}]}',
            {},
            "",
        ),
    ],
)
def test_malformed_requests_get_400(
    stack: Stack, tiny_parts: Path, body, headers, fragment
) -> None:
    message = error_of(httpx.post(stack.infer_url, content=body, headers=headers), 400)
    assert fragment in message
    still_serves(stack, tiny_parts)


def test_binary_body_with_too_few_bytes(stack: Stack, tiny_parts: Path) -> None:
    body, headers = binary_request("input", np.zeros((1, 3, 32, 32), np.float32))
    error_of(httpx.post(stack.infer_url, content=body[:-4], headers=headers), 400)
    headers["inference-header-content-length"] = "banana"
    error_of(httpx.post(stack.infer_url, content=body, headers=headers), 400)
    still_serves(stack, tiny_parts)


def test_oversize_body_gets_413(stack: Stack, tiny_parts: Path) -> None:
    big = np.full((8, 3, 32, 32), 0.123456, np.float32)  # about 250 KB as JSON text
    body, headers = json_request("input", big)
    assert len(body) > MAX_BODY
    error_of(httpx.post(stack.infer_url, content=body, headers=headers), 413)
    still_serves(stack, tiny_parts)


def test_oversize_body_without_content_length_gets_413(stack: Stack) -> None:
    def chunks():
        for _ in range(50):
            yield b"\0" * 10_000

    error_of(httpx.post(stack.infer_url, content=chunks()), 413)


def test_slow_drip_body_gets_408_while_others_are_served(stack: Stack, tiny_parts: Path) -> None:
    """A client that sends its headers and then one byte every 0.1 s must not hold the
    connection (and a growing buffer) forever: 408 once the body timeout passes."""
    url = httpx.URL(stack.infer_url)
    with socket.create_connection((url.host, url.port), timeout=10) as client:
        head = f"POST {url.raw_path.decode()} HTTP/1.1\r\nhost: {url.host}\r\n"
        client.sendall(f"{head}content-length: 100000\r\n\r\n".encode())
        started = time.monotonic()
        client.setblocking(False)
        answer = b""
        while not answer and time.monotonic() - started < BODY_TIMEOUT_S + 5:
            with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                client.send(b"\0")
                answer = client.recv(4096)
            time.sleep(0.1)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"took longer than" in answer
    assert BODY_TIMEOUT_S * 0.9 < elapsed < BODY_TIMEOUT_S + 2
    still_serves(stack, tiny_parts)


def test_slow_drip_headers_are_cut_off_while_others_are_served(
    stack: Stack, tiny_parts: Path
) -> None:
    """slowloris: a request head that never completes (one header line every 0.2 s) must
    not hold a connection forever; the gateway closes it after its header timeout."""
    url = httpx.URL(stack.infer_url)
    with socket.create_connection((url.host, url.port), timeout=10) as client:
        client.sendall(f"POST {url.raw_path.decode()} HTTP/1.1\r\n".encode())
        started = time.monotonic()
        client.settimeout(0.2)
        closed = False
        while not closed and time.monotonic() - started < HEADER_TIMEOUT_S + 5:
            try:
                client.sendall(b"x-drip: 1\r\n")
                closed = client.recv(1024) == b""
            except TimeoutError:
                pass
            except OSError:
                closed = True
        elapsed = time.monotonic() - started
    assert closed, "the connection was still open"
    assert HEADER_TIMEOUT_S * 0.9 < elapsed < HEADER_TIMEOUT_S + 2
    still_serves(stack, tiny_parts)


def test_unknown_model_and_version_get_404(stack: Stack) -> None:
    body, headers = json_request("input", np.zeros((1, 3, 32, 32), np.float32))
    base = stack.gateway.url
    assert "nosuch" in error_of(
        httpx.post(f"{base}/v2/models/nosuch/infer", content=body, headers=headers), 404
    )
    error_of(
        httpx.post(f"{base}/v2/models/tiny/versions/7/infer", content=body, headers=headers), 404
    )
    error_of(httpx.get(f"{base}/v2/models/nosuch"), 404)
    ok = httpx.post(f"{base}/v2/models/tiny/versions/1/infer", content=body, headers=headers)
    assert ok.status_code == 200


@pytest.mark.parametrize("token", [None, "wrong-token-wrong-token", "x"])
def test_admin_calls_without_the_token_get_401(stack: Stack, token: str | None) -> None:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    url = stack.gateway.url
    for method, path, body in [
        ("GET", "/admin/pipelines", None),
        ("POST", "/admin/switch", {"pipeline_id": "p4"}),
        ("POST", "/admin/pipelines", {"cut": 1, "edge_url": "http://127.0.0.1:1"}),
        ("POST", "/admin/pipelines/p4/retire", {}),
    ]:
        response = httpx.request(method, url + path, json=body, headers=headers)
        error_of(response, 401)
    assert stack.admin("GET", "/pipelines").json()["active"] == "p1"


def test_registering_a_pipeline_that_does_not_answer_is_refused(stack: Stack, tiny_parts) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    message = error_of(stack.register(2, dead, None, "dead"), 409)
    assert dead in message
    assert "dead" not in {p["id"] for p in stack.admin("GET", "/pipelines").json()["pipelines"]}
    still_serves(stack, tiny_parts)


def test_switching_to_a_pipeline_that_died_is_refused_and_the_old_one_stays(
    services, stack: Stack, tiny_parts: Path
) -> None:
    edge = services.edge(tiny_parts, 2, None).wait_ready()
    assert stack.register(5, edge.url, None, "doomed").status_code == 201
    edge.stop()
    error_of(stack.switch("doomed"), 409)
    assert stack.admin("GET", "/pipelines").json()["active"] == "p1"
    still_serves(stack, tiny_parts)


def test_switch_to_unknown_pipeline_is_404_and_bad_admin_bodies_are_400(stack: Stack) -> None:
    error_of(stack.switch("no-such-pipeline"), 404)
    error_of(stack.admin("POST", "/switch", json={"pipeline": "p4"}), 400)
    error_of(stack.admin("POST", "/pipelines", json={"cut": -1, "edge_url": "x"}), 400)
    error_of(stack.admin("POST", "/pipelines/p1/retire", json={}), 409)  # p1 is active


def test_partition_services_reject_malformed_frames(stack: Stack) -> None:
    edge, cloud = stack.pipelines[1]
    assert "magic" in error_of(httpx.post(f"{edge.url}/v1/infer", content=b"garbage!"), 400)
    wrong = wire.encode({"input": np.zeros((1, 3, 32, 31), np.float32)})
    assert "shape" in error_of(httpx.post(f"{edge.url}/v1/infer", content=wrong), 400)
    frame = bytearray(wire.encode({"x": np.zeros(4, np.float32)}))
    struct.pack_into("<H", frame, 4, 60)
    error_of(httpx.post(f"{cloud.url}/v1/infer", content=bytes(frame)), 400)
