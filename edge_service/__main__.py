"""``python -m edge_service gateway|partition``: run one of the two edge processes."""

from __future__ import annotations

import sys

from neukonfig.service import HEADER_TIMEOUT_S, run_uvicorn, settings_or_exit

USAGE = "usage: python -m edge_service gateway|partition  (settings from NEUKONFIG_* env vars)"


def main(argv: list[str]) -> None:
    if argv == ["gateway"]:
        from edge_service.gateway.app import create_app
        from edge_service.settings import GatewaySettings

        settings = settings_or_exit(GatewaySettings)
        header_timeout_s = settings.header_timeout_s
    elif argv == ["partition"]:
        from edge_service.partition_app import create_app, create_host_app
        from edge_service.settings import EdgePartitionSettings

        settings = settings_or_exit(EdgePartitionSettings)
        header_timeout_s = HEADER_TIMEOUT_S
        if settings.hosting:
            create_app = create_host_app  # type: ignore[assignment]
    else:
        raise SystemExit(USAGE)
    run_uvicorn(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        header_timeout_s=header_timeout_s,
    )


main(sys.argv[1:])
