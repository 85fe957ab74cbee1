"""Several partitions in one process: a partition host.

A host is a partition service started with ``hosting`` and no cut of its own. Each
partition it is asked to host (``POST /v1/hosted``) gets its own app, built by the
service's own ``create_app`` from the settings in the request (its own onnxruntime
session, compute queue, metrics and link monitor), mounted at ``/hosted/{name}``. So a
hosted partition answers on exactly the paths a partition process would, under that
prefix: callers use ``{host}/hosted/{name}`` as its base URL and nothing else changes.

Why: starting a partition becomes a session load in a running process (no interpreter,
no imports, no onnxruntime start), and the partitions kept warm share one interpreter
and one onnxruntime, and map one ``weights.bin`` (``share_weights``), instead of each
carrying its own.

    POST   /v1/hosted          {"name", "settings", "labels"} -> 201, once it is loading
    GET    /v1/hosted          what is hosted: names, settings (no secrets), labels
    DELETE /v1/hosted/{name}   stop and unmount it
    GET    /v1/host/memory     anonymous memory now and before anything was hosted
    GET    /health/live, /health/ready
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Response
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings
from starlette.routing import Mount

from neukonfig.errors import ConflictError, NeukonfigError
from neukonfig.protocol import HOST_MEMORY_PATH, HOSTED_PATH, HOSTED_PREFIX, LIVE_PATH, READY_PATH
from neukonfig.service import guard_internal_routes, install_error_handlers
from serving.memory_limit import anonymous_pss_bytes

# Settings a host is told that it must not show again (``GET /v1/hosted``).
SECRET_SETTINGS = frozenset({"internal_token"})
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class HostingSettings(BaseSettings):
    """What makes a partition service a host, or a partition loaded inside one; each
    service's settings class adds its own fields and env prefix."""

    hosting: bool = Field(
        default=False,
        description="Be a host of partitions of this kind instead (POST /v1/hosted): no cut "
        "of its own",
    )
    idle_priority_load: bool = Field(
        default=False,
        description="Load and warm up at the idle CPU priority (SCHED_IDLE), so that what this "
        "process already serves goes first; set for partitions in a host",
    )
    shared_arena: bool = Field(
        default=False,
        description="Take activations from one CPU arena shared by every partition of this "
        "process, instead of an arena each that keeps its own peak; set for partitions in "
        "a host, where a standby's arena would otherwise sit beside the active one's",
    )


class HostedSpec(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="Unique here; the mount path's last part")
    settings: dict[str, str] = Field(
        default_factory=dict, description="The partition service's settings, as env values"
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Kept for discovery")


class InvalidHostedSettingsError(NeukonfigError):
    status_code = 422


class NotHostedError(NeukonfigError):
    """No partition of that name is hosted here."""

    status_code = 404


@dataclass
class _Hosted:
    spec: HostedSpec
    mount: Mount
    running: contextlib.AsyncExitStack

    def describe(self) -> dict[str, object]:
        settings = {k: v for k, v in self.spec.settings.items() if k not in SECRET_SETTINGS}
        return {"name": self.spec.name, "settings": settings, "labels": self.spec.labels}


def create_host_app(
    *,
    title: str,
    build: Callable[[dict[str, str]], FastAPI],
    internal_token: SecretStr | None,
) -> FastAPI:
    """A host of partitions that ``build`` makes from settings (the service's own
    ``create_app`` over its settings class)."""
    hosted: dict[str, _Hosted] = {}
    changing = asyncio.Lock()  # one add or drop at a time: the route list is shared
    floor: dict[str, int | None] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        floor["anonymous_bytes"] = anonymous_pss_bytes()  # interpreter, imports, runtime
        yield
        for name in list(hosted):
            await drop(name)

    app = FastAPI(title=title, lifespan=lifespan)
    install_error_handlers(app)
    # The hosted apps guard their own paths (their health and /metrics stay open).
    guard_internal_routes(app, internal_token, open_prefixes=(HOSTED_PREFIX + "/",))

    @app.get(LIVE_PATH)
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get(READY_PATH)
    def ready() -> dict[str, object]:
        return {"ready": True, "hosted": len(hosted)}

    @app.get(HOSTED_PATH)
    def listing() -> list[dict[str, object]]:
        return [entry.describe() for entry in hosted.values()]

    @app.get(HOST_MEMORY_PATH)
    def memory() -> dict[str, object]:
        """What the hosted partitions hold beyond the process's floor is what a new one
        is reckoned by (``HostedBackend.added_bytes``): their anonymous memory, since
        the weights they map are shared file pages."""
        return {
            "hosted": len(hosted),
            "anonymous_bytes": anonymous_pss_bytes(),
            "anonymous_floor_bytes": floor.get("anonymous_bytes"),
        }

    @app.post(HOSTED_PATH, status_code=201)
    async def add(spec: HostedSpec) -> dict[str, object]:
        async with changing:
            if spec.name in hosted:
                raise ConflictError(f"{spec.name} is already hosted here")
            try:
                sub_app = build(spec.settings)
            except ValidationError as error:
                raise InvalidHostedSettingsError(_problems(error)) from None
            running = contextlib.AsyncExitStack()
            # Its lifespan starts loading in the background, as in its own process.
            await running.enter_async_context(sub_app.router.lifespan_context(sub_app))
            mount = Mount(f"{HOSTED_PREFIX}/{spec.name}", app=sub_app)
            app.router.routes.append(mount)
            hosted[spec.name] = _Hosted(spec, mount, running)
            return hosted[spec.name].describe()

    @app.delete(HOSTED_PATH + "/{name}", status_code=204)
    async def remove(name: str) -> Response:
        async with changing:
            await drop(name)
        return Response(status_code=204)

    async def drop(name: str) -> None:
        entry = hosted.pop(name, None)
        if entry is None:
            raise NotHostedError(f"no partition named {name} is hosted here")
        app.router.routes.remove(entry.mount)
        await entry.running.aclose()

    return app


def _problems(error: ValidationError) -> str:
    return "invalid settings: " + "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in error.errors()
    )
