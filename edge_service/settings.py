"""Settings of the two edge processes: the edge partition service (``NEUKONFIG_EDGE_*``)
and the gateway (``NEUKONFIG_GATEWAY_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from neukonfig.codecs import Codec
from neukonfig.peer_client import check_base_url
from neukonfig.tls import check_tls_dir
from serving.hosting import HostingSettings


class EdgePartitionSettings(HostingSettings):
    model_config = SettingsConfigDict(env_prefix="NEUKONFIG_EDGE_")

    partition_dir: Path = Field(description="Partition directory written by `neukonfig partition`")
    cut: int | None = Field(
        default=None, ge=0, description="Cut index whose head this service runs (unless hosting)"
    )
    cloud_url: str | None = Field(
        default=None, description="Base URL of the cloud partition of the same cut (not for cut N)"
    )
    tls_dir: Path | None = Field(
        default=None,
        description="The edge's directory from `neukonfig certs` (ca.pem, cert.pem, key.pem): "
        "call an https:// cloud_url with this client certificate (mutual TLS)",
    )
    threads: int | None = Field(default=None, ge=1, description="onnxruntime intra-op threads")
    share_weights: bool = Field(
        default=True,
        description="Keep weights memory-mapped and shared between heads (no pre-packing); "
        "see docs/weight_sharing.md",
    )
    slowdown: float = Field(
        default=1.0, ge=1.0, description="Emulate an edge this many times slower than the host"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 2**20, ge=1)
    cloud_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Bound on one cloud call; below the gateway's request timeout, so that "
        "a request can still be answered by the local fallback",
    )
    fallback_local_tail: bool = Field(
        default=True,
        description="When the cloud partition cannot answer, run this cut's tail here "
        "(loaded on the first failure) instead of failing the request",
    )
    cloud_retry_s: float = Field(
        default=1.0,
        gt=0,
        description="After a cloud failure, answer locally for this long before one request "
        "tries the cloud again",
    )
    connect_timeout_s: float = Field(default=2.0, gt=0)
    internal_token: SecretStr | None = Field(
        default=None,
        description="Shared token the partition services require (x-neukonfig-internal-token); "
        "unset: they rely on their network binding",
    )
    transfer_log_size: int = Field(
        default=4096, ge=16, description="Transfers kept for /v1/transfers"
    )
    max_queue_wait_s: float = Field(
        default=2.0,
        gt=0,
        description="503 with Retry-After when more compute than this is already queued",
    )
    kernel_link_evidence: bool = Field(
        default=True,
        description="Read the link's rate and backlog from TCP_INFO on the sockets to the "
        "cloud; off when the kernel's path is not the link (the user-space shaping proxy)",
    )
    preload_local_tail: bool = Field(
        default=True,
        description="Load the local tail after the head, once it serves its first request "
        "(a standby's stays unloaded), so that requests can finish here when the link is "
        "backed up (not only when the cloud fails)",
    )
    local_margin: float = Field(
        default=1.2,
        ge=1.0,
        description="Finish here when the link path is predicted this many times slower",
    )

    codec: str = Field(
        default="none",
        description="Codec of the tensor sent to the cloud partition (neukonfig.codecs): none, "
        "fp16, int8, int8-channel, zstd, or a lossy one + zstd. The lossy ones change answers "
        "within their documented bounds. The controller sets it per pipeline when it plans "
        "codecs (NEUKONFIG_CONTROLLER_MAX_TOP1_DISAGREEMENT)",
    )

    @field_validator("codec")
    @classmethod
    def _known_codec(cls, name: str) -> str:
        return Codec.parse(name).name

    @field_validator("cloud_url")
    @classmethod
    def _reachable_by_peer_client(cls, url: str | None) -> str | None:
        return check_base_url(url) if url is not None else None

    @field_validator("tls_dir")
    @classmethod
    def _usable_tls_dir(cls, path: Path | None) -> Path | None:
        return check_tls_dir(path) if path is not None else None

    @model_validator(mode="after")
    def _a_cut_or_a_host(self) -> EdgePartitionSettings:
        if self.hosting == (self.cut is not None):
            raise ValueError("set either cut (serve that head) or hosting=true (a host of heads)")
        if self.cloud_url and self.cloud_url.startswith("https://") and self.tls_dir is None:
            raise ValueError("an https:// cloud_url needs tls_dir (the edge's certificates)")
        return self

    @property
    def head_cut(self) -> int:
        """The cut whose head this service runs (the validator makes it set, not hosting)."""
        if self.cut is None:
            raise ValueError("a host of heads has no cut of its own")
        return self.cut


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEUKONFIG_GATEWAY_")

    model_name: str = Field(description="Name clients use in /v2/models/{name}")
    partition_dir: Path = Field(description="Partition directory: the model's inputs and outputs")
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token for /admin; or give admin_token_file"
    )
    admin_token_file: Path | None = Field(default=None, description="File holding the token")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 2**20, ge=1, description="413 above this")
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="408 when a request body takes longer to arrive"
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Close a connection whose request head takes longer"
    )
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Bound on one pipeline call; above the edge's cloud_timeout_s, so the edge "
        "can still answer with its local tail",
    )
    max_in_flight: int = Field(
        default=256, ge=1, description="503 with Retry-After past this many requests in flight"
    )
    connect_timeout_s: float = Field(default=2.0, gt=0)
    ready_check_timeout_s: float = Field(default=2.0, gt=0, description="Bound on a health check")
    drain_timeout_s: float = Field(default=30.0, ge=0, description="Default bound on a drain")
    pause_wait_timeout_s: float = Field(
        default=30.0, ge=0, description="How long a request waits while no pipeline is active"
    )
    max_elements: int = Field(default=50_000_000, ge=1, description="Largest tensor accepted")
    parse_in_thread_bytes: int = Field(
        default=256 * 2**10,
        ge=0,
        description="A request whose JSON part is larger is parsed in a worker thread, between "
        "the event loop's turns for other requests",
    )
    internal_token: SecretStr | None = Field(
        default=None,
        description="Shared token the partition services require (x-neukonfig-internal-token); "
        "unset: they rely on their network binding",
    )
    tls_dir: Path | None = Field(
        default=None,
        description="The edge's directory from `neukonfig certs`, to check that an https:// "
        "cloud partition is ready before registering it",
    )
    fault_stall_at_flip_s: float = Field(
        default=0.0,
        ge=0,
        le=5,
        description="Fault injection, for tests only: block the event loop this long at "
        "every flip, so a test can prove that its client-felt bound catches a stall",
    )

    @field_validator("tls_dir")
    @classmethod
    def _usable_tls_dir(cls, path: Path | None) -> Path | None:
        return check_tls_dir(path) if path is not None else None

    @model_validator(mode="after")
    def _token_is_set(self) -> GatewaySettings:
        """The control plane is never open: refuse to start without a token."""
        if self.admin_token is None and self.admin_token_file is not None:
            try:
                token = self.admin_token_file.read_text().strip()
            except OSError as error:
                raise ValueError(f"cannot read admin_token_file: {error}") from error
            self.admin_token = SecretStr(token)
        if self.admin_token is None or len(self.admin_token.get_secret_value()) < 16:
            raise ValueError(
                "an admin token of at least 16 characters is required: set "
                "NEUKONFIG_GATEWAY_ADMIN_TOKEN or NEUKONFIG_GATEWAY_ADMIN_TOKEN_FILE"
            )
        return self
