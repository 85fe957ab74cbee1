"""Mutual TLS on the tensor link: a cloud partition with certificates serves HTTPS to
edges holding a client certificate from the same CA, and refuses everyone else, before
any byte of a request is read."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import numpy as np
import pytest

from controller.backends.local import LocalService, ServiceKind
from neukonfig import wire
from neukonfig.errors import UpstreamUnansweredError
from neukonfig.peer_client import PeerClient
from neukonfig.protocol import FALLBACK_HEADER
from neukonfig.tls import AS_CLOUD, CLOUD_NAME, Certificates, TlsDir, make_certificates
from tests.services.conftest import Services
from tests.services.oip_client import binary_request, outputs_of
from tests.services.stack import Stack, expected_logits, start_stack

BATCH = np.random.default_rng(21).standard_normal((1, 3, 32, 32), dtype=np.float32)
CUT = 4


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    root = tmp_path_factory.mktemp("certs")
    make_certificates(root, cloud_hosts=["127.0.0.1"])
    return Certificates(root)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Another deployment's certificates: valid, but from a CA the cloud does not trust."""
    root = tmp_path_factory.mktemp("other-certs")
    make_certificates(root)
    return Certificates(root)


@pytest.fixture(scope="module")
def stack(services: Services, tiny_parts: Path, admin_token: str, certificates) -> Stack:
    stack = start_stack(
        services,
        tiny_parts,
        "tiny",
        admin_token,
        [CUT],
        edge_env={"tls_dir": str(certificates.edge)},
        cloud_env={"tls_dir": str(certificates.cloud)},
        cloud_ready_tls=certificates.edge,
        tls_dir=str(certificates.edge),
    )
    assert stack.switch(f"p{CUT}").status_code == 200
    return stack


def _cloud(stack: Stack) -> LocalService:
    cloud = stack.pipelines[CUT][1]
    assert cloud is not None
    return cloud


def test_inference_crosses_the_link_over_mutual_tls(stack: Stack, tiny_parts: Path) -> None:
    assert _cloud(stack).url.startswith("https://")
    body, headers = binary_request("input", BATCH)
    response = httpx.post(stack.infer_url, content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        outputs_of(response)["logits"], expected_logits(tiny_parts, BATCH), rtol=1e-4, atol=1e-5
    )
    # Answered by the cloud, not by the edge's local tail after a failed call.
    assert FALLBACK_HEADER not in response.headers, response.headers[FALLBACK_HEADER]


def _tls_refusal(url: str, context: ssl.SSLContext | bool) -> BaseException | None:
    try:
        with httpx.Client(verify=context, timeout=10) as client:
            client.get(url + "/health/live", extensions=AS_CLOUD)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError) as error:
        return error
    return None


def test_the_cloud_refuses_clients_without_a_certificate_of_its_ca(
    stack: Stack, certificates: Certificates, stranger: Certificates
) -> None:
    url = _cloud(stack).url
    trusts_only_the_ca = ssl.create_default_context(cafile=str(TlsDir(certificates.edge).ca))
    assert _tls_refusal(url, trusts_only_the_ca) is not None, "served a client without a cert"
    other_ca_cert = TlsDir(stranger.edge).client_context()
    other_ca_cert.load_verify_locations(str(TlsDir(certificates.edge).ca))
    assert _tls_refusal(url, other_ca_cert) is not None, "served another CA's client"
    assert _tls_refusal(url, TlsDir(certificates.edge).client_context()) is None


def test_plain_http_gets_nothing_from_the_cloud(stack: Stack) -> None:
    plain = _cloud(stack).url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.post(plain + "/v1/infer", content=wire.encode({"x": BATCH}), timeout=10)


def test_the_edge_refuses_a_cloud_of_another_deployment(
    stack: Stack, stranger: Certificates
) -> None:
    """A peer that is not this deployment's cloud never gets a tensor: the edge's client
    checks the server's certificate before it sends anything."""

    async def call() -> None:
        client = PeerClient(
            _cloud(stack).url,
            timeout=10,
            connect_timeout=5,
            tls=TlsDir(stranger.edge).client_context(),
            server_hostname=CLOUD_NAME,
        )
        async with client:
            await client.get("/health/live")

    with pytest.raises(UpstreamUnansweredError, match="TLS handshake failed"):
        asyncio.run(call())


def test_an_https_cloud_url_without_certificates_is_refused_at_start(
    services: Services, tiny_parts: Path, tmp_path: Path
) -> None:
    edge = LocalService(
        ServiceKind.EDGE_PARTITION,
        {"partition_dir": str(tiny_parts), "cut": str(CUT), "cloud_url": "https://127.0.0.1:9"},
        tmp_path / "edge.log",
    ).start()
    try:
        assert edge.process is not None
        assert edge.process.wait(timeout=60) != 0
        assert "needs tls_dir" in edge.log_tail()
    finally:
        edge.stop()
    with pytest.raises(ValueError, match="needs a TLS context"):
        PeerClient("https://127.0.0.1:9", timeout=1, connect_timeout=1)


def test_a_directory_without_certificates_is_refused_at_start(
    tiny_parts: Path, tmp_path: Path
) -> None:
    cloud = LocalService(
        ServiceKind.CLOUD_PARTITION,
        {"partition_dir": str(tiny_parts), "cut": str(CUT), "tls_dir": str(tmp_path)},
        tmp_path / "cloud.log",
    ).start()
    try:
        assert cloud.process is not None
        assert cloud.process.wait(timeout=60) != 0
        assert "lacks ca.pem, cert.pem, key.pem" in cloud.log_tail()
        assert "neukonfig certs" in cloud.log_tail()
    finally:
        cloud.stop()


def test_certificates_are_never_overwritten(certificates: Certificates) -> None:
    with pytest.raises(FileExistsError):
        make_certificates(certificates.root)
