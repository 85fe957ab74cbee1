"""Settings of the cloud partition service (env vars ``NEUKONFIG_CLOUD_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from neukonfig.tls import check_tls_dir
from serving.hosting import HostingSettings


class CloudSettings(HostingSettings):
    model_config = SettingsConfigDict(env_prefix="NEUKONFIG_CLOUD_")

    partition_dir: Path = Field(description="Partition directory written by `neukonfig partition`")
    cut: int | None = Field(
        default=None, ge=0, description="Cut whose tail this service runs; unset: probes only"
    )
    threads: int | None = Field(default=None, ge=1, description="onnxruntime intra-op threads")
    host: str = "127.0.0.1"
    port: int = Field(default=8200, ge=0, le=65535)
    max_body_bytes: int = Field(default=256 * 2**20, ge=1, description="Largest accepted body")
    max_queue_wait_s: float = Field(
        default=2.0,
        gt=0,
        description="503 with Retry-After when more compute than this is already queued",
    )
    internal_token: SecretStr | None = Field(
        default=None,
        description="Shared token the partition services require (x-neukonfig-internal-token); "
        "unset: they rely on their network binding",
    )

    tls_dir: Path | None = Field(
        default=None,
        description="The cloud's directory from `neukonfig certs` (ca.pem, cert.pem, key.pem): "
        "serve HTTPS and refuse clients without a certificate from the same CA (mutual TLS). "
        "Unset: plain HTTP, for one machine",
    )

    @field_validator("tls_dir")
    @classmethod
    def _usable_tls_dir(cls, path: Path | None) -> Path | None:
        return check_tls_dir(path) if path is not None else None

    @model_validator(mode="after")
    def _not_both(self) -> CloudSettings:
        if self.hosting and self.cut is not None:
            raise ValueError("a host of tails (hosting=true) has no cut of its own")
        return self


@lru_cache
def get_settings() -> CloudSettings:
    return CloudSettings()  # type: ignore[call-arg]  # filled from the environment
