"""Settings of the controller (env vars ``NEUKONFIG_CONTROLLER_*``)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from neukonfig.errors import InvalidUnitError
from neukonfig.tls import check_tls_dir
from neukonfig.units import parse_bytes, parse_share


class StrategyName(str, enum.Enum):
    PAUSE_RESUME = "pause_resume"
    SWITCH_ON_DEMAND = "switch_on_demand"
    SWITCH_STANDBY = "switch_standby"


class ControllerSettings(BaseSettings):
    # Empty is unset: compose passes ${VAR:-} through for settings a user may leave out.
    model_config = SettingsConfigDict(env_prefix="NEUKONFIG_CONTROLLER_", env_ignore_empty=True)

    partition_dir: Path = Field(
        description="Partition directory shared with the partition services"
    )
    model_name: str
    gateway_url: str
    admin_token: SecretStr | None = None
    admin_token_file: Path | None = None
    edge_profile: Path = Field(description="Profile JSON of the edge (heads)")
    cloud_profile: Path = Field(description="Profile JSON of the cloud (tails)")
    internal_token: SecretStr | None = Field(
        default=None,
        description="Shared token the partition services require (x-neukonfig-internal-token); "
        "unset: they rely on their network binding",
    )
    tls_dir: Path | None = Field(
        default=None,
        description="The edge's directory from `neukonfig certs`: edge partitions call cloud "
        "partitions over mutual TLS with it, and the controller checks them with it. Needs "
        "cloud_tls_dir. Unset: plain HTTP, for one machine",
    )
    cloud_tls_dir: Path | None = Field(
        default=None,
        description="The cloud's directory from `neukonfig certs`, handed to every cloud "
        "partition (the docker backend copies its files into each container)",
    )
    strategy: StrategyName = StrategyName.SWITCH_ON_DEMAND
    backend: str = Field(default="process", description="process, docker or kubernetes")
    hosted_partitions: bool = Field(
        default=False,
        description="Run partitions as sessions in one host process per side (started by the "
        "backend), so a new pipeline is a session load, not a process start "
        "(controller/backends/hosted.py)",
    )
    edge_host_threads: int = Field(
        default=4,
        ge=1,
        description="Cores the edge host process may use (hosted_partitions): a Pi 4 has 4",
    )
    state_dir: Path = Field(default=Path(".neukonfig/state"), description="Backend records, logs")
    host: str = "127.0.0.1"
    port: int = Field(default=8300, ge=0, le=65535)

    tick_s: float = Field(default=0.1, gt=0, description="Control loop period")
    initial_bandwidth: str = Field(default="50mbit", description="Plan the first cut for this")
    rtt: str = Field(default="0ms", description="Link round-trip time the planner assumes")
    edge_threads: int = Field(default=1, ge=1, description="onnxruntime threads per edge partition")
    edge_slowdown: float = Field(
        default=1.0, ge=1.0, description="Edge partitions emulate a device this much slower"
    )
    edge_max_queue_wait_s: float | None = Field(
        default=None,
        gt=0,
        description="Edge partitions refuse (503) past this much queued compute; unset: "
        "theirs (2 s)",
    )
    cloud_threads: int | None = Field(default=None, ge=1)
    start_timeout_s: float = Field(default=120.0, gt=0, description="Bound on a pipeline start")
    drain_timeout_s: float = Field(default=30.0, ge=0)
    probe_bytes: int = Field(default=32 * 1024, ge=1024, description="Smallest active probe")
    max_standby: int = Field(default=2, ge=0, description="Standby pipelines kept (standby only)")
    edge_memory_budget: int | None = Field(
        default=None,
        gt=0,
        description="Edge memory all pipelines together may use (bytes, or e.g. 1.5GiB): a new "
        "pipeline that would not fit is refused (one that replaces the active pipeline, as "
        "switch_on_demand's does, may pass it until the old one has drained, up to the "
        "edge's memory limit). Unset: 80% of the memory the edge partitions report they may "
        "use (their cgroup's limit, at most the machine's RAM). A budget over that is cut "
        "to it",
    )
    max_top1_disagreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Codec budget: plan lossy codecs of the crossing tensor whose measured "
        "top-1 disagreement with the fp32 model is at most this share (0.01 or 1%; needs "
        "profiles made with --codecs and --accuracy). Unset: lossless codecs only",
    )
    auto: bool = Field(default=True, description="Switch on bandwidth changes (else manual only)")
    min_gain_s: float = Field(default=0.002, ge=0)
    min_gain_fraction: float = Field(default=0.05, ge=0, lt=1)
    dwell_s: float = Field(default=1.0, ge=0, description="How long an advantage must last")
    fast_gain_fraction: float = Field(
        default=0.3,
        gt=0,
        description="An advantage this large (a share of the current latency) is a real step",
    )
    fast_dwell_s: float = Field(
        default=0.2, ge=0, description="How long a large advantage must last"
    )
    cloud_check_s: float = Field(
        default=0.5, gt=0, description="How often the active pipeline's partitions' health is read"
    )
    cloud_failures_to_replace: int = Field(
        default=2, ge=1, description="Failed health reads in a row before replacing it"
    )
    cloud_replace_retry_s: float = Field(
        default=10.0, gt=0, description="Wait before another replacement if one failed"
    )
    stop_services_on_exit: bool = Field(
        default=False, description="Stop every pipeline on exit (neukonfig up) or leave them"
    )

    @field_validator("edge_memory_budget", mode="before")
    @classmethod
    def _bytes(cls, value: object) -> object:
        return _parsed(value, parse_bytes)

    @field_validator("max_top1_disagreement", mode="before")
    @classmethod
    def _share(cls, value: object) -> object:
        return _parsed(value, parse_share)

    @field_validator("tls_dir", "cloud_tls_dir")
    @classmethod
    def _usable_tls_dir(cls, path: Path | None) -> Path | None:
        return check_tls_dir(path) if path is not None else None

    @model_validator(mode="after")
    def _both_sides_or_neither(self) -> ControllerSettings:
        if (self.tls_dir is None) != (self.cloud_tls_dir is None):
            raise ValueError("set both tls_dir (the edge's) and cloud_tls_dir, or neither")
        return self

    @model_validator(mode="after")
    def _token_is_set(self) -> ControllerSettings:
        if self.admin_token is None and self.admin_token_file is not None:
            try:
                self.admin_token = SecretStr(self.admin_token_file.read_text().strip())
            except OSError as error:
                raise ValueError(f"cannot read admin_token_file: {error}") from error
        if self.admin_token is None:
            raise ValueError(
                "the gateway's admin token is required: set NEUKONFIG_CONTROLLER_ADMIN_TOKEN "
                "or NEUKONFIG_CONTROLLER_ADMIN_TOKEN_FILE"
            )
        return self

    @property
    def token(self) -> str:
        assert self.admin_token is not None
        return self.admin_token.get_secret_value()


def _parsed(value: object, parse: Callable[[str], object]) -> object:
    """A string as users write it (``1.5GiB``, ``1%``) through ``parse``; numbers as
    they are (pydantic checks them)."""
    if not isinstance(value, str):
        return value
    try:
        return parse(value)
    except InvalidUnitError as error:
        raise ValueError(error.message) from None


@lru_cache
def get_settings() -> ControllerSettings:
    return ControllerSettings()  # type: ignore[call-arg]  # filled from the environment
