"""Mutual TLS on the tensor link: the edge host calls cloud partitions over HTTPS with a
client certificate, and cloud partitions refuse anyone without one.

One deployment has its own small certificate authority (``make_certificates``, the
``neukonfig certs`` command). Each side gets one directory holding the same three files:

* ``ca.pem``: the deployment's CA, the only one a side trusts;
* ``cert.pem`` and ``key.pem``: the side's own certificate and private key.

Whom a certificate names: the cloud's is issued to ``CLOUD_NAME`` (plus any host names
or addresses given), the edge's to ``EDGE_NAME``. The edge checks the cloud's name as
``CLOUD_NAME`` whatever address it dialled: cloud partitions come and go on addresses
nobody knows in advance (a container's, a pod's), and the CA signs nothing but this
deployment's two sides, so "signed by our CA, issued to the cloud" is the identity that
matters. Extended key usage keeps the roles apart: the edge's certificate cannot serve,
the cloud's cannot be a client.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "CLOUD_NAME",
    "EDGE_NAME",
    "Certificates",
    "TlsDir",
    "check_tls_dir",
    "make_certificates",
    "tls_http_client",
]

CLOUD_NAME = "cloud.neukonfig.internal"
EDGE_NAME = "edge.neukonfig.internal"
CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"
# httpx request extensions that check an https peer's certificate against CLOUD_NAME.
AS_CLOUD = {"sni_hostname": CLOUD_NAME}
DEFAULT_DAYS = 825  # the longest validity browsers and most tools still accept


@dataclass(frozen=True)
class TlsDir:
    """One side's directory: the CA it trusts, its certificate and its key."""

    path: Path

    @property
    def ca(self) -> Path:
        return self.path / CA_FILE

    @property
    def cert(self) -> Path:
        return self.path / CERT_FILE

    @property
    def key(self) -> Path:
        return self.path / KEY_FILE

    def server_options(self) -> dict[str, Any]:
        """uvicorn's options for serving HTTPS that requires a client certificate."""
        return {
            "ssl_certfile": str(self.cert),
            "ssl_keyfile": str(self.key),
            "ssl_ca_certs": str(self.ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this deployment's CA and shows this side's
        certificate. The server's name is checked against ``CLOUD_NAME`` by the caller
        (``server_hostname``)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def check_tls_dir(path: Path) -> Path:
    """``path`` if it holds a usable CA, certificate and key; else ValueError saying
    what is missing or broken (settings call this, so a bad directory stops a start)."""
    tls = TlsDir(path)
    missing = [f.name for f in (tls.ca, tls.cert, tls.key) if not f.is_file()]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)}: make the directories with `neukonfig certs`"
        )
    try:
        tls.client_context()
    except (ssl.SSLError, OSError) as error:
        raise ValueError(f"{path}: the certificate, key or CA cannot be loaded: {error}") from None
    return path


class _CloudNameTransport(httpx.AsyncHTTPTransport):
    """Checks every HTTPS peer's certificate against ``CLOUD_NAME`` (see the module doc)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, **AS_CLOUD}
        return await super().handle_async_request(request)


def tls_http_client(tls_dir: Path | None, **options: Any) -> httpx.AsyncClient:
    """An httpx client for a process on the edge host that also reaches cloud partitions:
    plain ``http://`` as ever, and ``https://`` with this side's certificate when
    ``tls_dir`` is set."""
    if tls_dir is None:
        return httpx.AsyncClient(**options)
    transport = _CloudNameTransport(verify=TlsDir(tls_dir).client_context())
    return httpx.AsyncClient(transport=transport, **options)


# --- making a deployment's certificates ---------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """What ``make_certificates`` wrote under one directory: a side's directory each."""

    root: Path

    @property
    def edge(self) -> Path:
        return self.root / "edge"

    @property
    def cloud(self) -> Path:
        return self.root / "cloud"

    @classmethod
    def ensure(cls, root: Path, *, cloud_hosts: Iterable[str] = ()) -> Certificates:
        """The certificates under ``root``, made there first if there are none yet."""
        if not (root / CA_FILE).exists():
            make_certificates(root, cloud_hosts=cloud_hosts)
        return cls(root)


def make_certificates(
    out: Path, *, cloud_hosts: Iterable[str] = (), days: int = DEFAULT_DAYS
) -> dict[str, Path]:
    """Write a new CA and the two sides' directories under ``out``:

    * ``out/ca.pem``, ``out/ca-key.pem``: the CA; keep its key off both hosts;
    * ``out/cloud/``: for the cloud host (certificate for ``CLOUD_NAME`` and ``cloud_hosts``);
    * ``out/edge/``: for the edge host (the client certificate).

    Refuses to overwrite an existing CA (FileExistsError): new certificates would lock
    out every side that holds the old ones."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if (out / CA_FILE).exists():
        raise FileExistsError(f"{out / CA_FILE} exists: give a new directory")
    now = datetime.datetime.now(datetime.timezone.utc)
    valid_from, valid_to = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "neukonfig"),
                x509.NameAttribute(NameOID.COMMON_NAME, common),
            ]
        )

    def builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from)
            .not_valid_after(valid_to)
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("neukonfig deployment CA")
    ca_cert = (
        builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common: str, alt_names: list[x509.GeneralName], usage: x509.ObjectIdentifier):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(name(common), ca_name, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    cloud = leaf(
        CLOUD_NAME,
        [x509.DNSName(CLOUD_NAME), *(_alt_name(h) for h in cloud_hosts)],
        ExtendedKeyUsageOID.SERVER_AUTH,
    )
    edge = leaf(EDGE_NAME, [x509.DNSName(EDGE_NAME)], ExtendedKeyUsageOID.CLIENT_AUTH)

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    out.mkdir(parents=True, exist_ok=True)
    _write(out / "ca-key.pem", key_pem(ca_key), private=True)
    _write(out / CA_FILE, pem(ca_cert))
    written = {"ca": out / CA_FILE}
    for side, (cert, key) in (("cloud", cloud), ("edge", edge)):
        directory = out / side
        directory.mkdir(exist_ok=True)
        _write(directory / CA_FILE, pem(ca_cert))
        _write(directory / CERT_FILE, pem(cert))
        _write(directory / KEY_FILE, key_pem(key), private=True)
        written[side] = directory
    return written


def _usage(*, cert_sign: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _alt_name(host: str) -> Any:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, content: bytes, *, private: bool = False) -> None:
    path.write_bytes(content)
    # Keys readable by their owner only; certificates by the service user too (containers
    # run as another user than the one who made the files).
    path.chmod(0o600 if private else 0o644)
