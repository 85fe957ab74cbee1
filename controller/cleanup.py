"""``python -m controller.cleanup``: remove the partition containers of a compose stack
when the stack goes down (docker-compose.yml's ``cleanup`` service).

Why a service of its own: the controller cannot tell ``docker compose restart
controller`` from ``docker compose down``; both send it SIGTERM. If it removed its
partitions on exit, a routine restart would cost every pipeline and a cold start; if it
left them, ``down`` could not remove the network they are attached to, nor the volume
they mount. So the controller leaves them (``stop_services_on_exit`` false) and adopts
them when it comes back, and this process, which the controller depends on, does the
removing: compose stops dependents first, so on ``down`` (or ``stop``) it stops the
controller, then this, whose SIGTERM removes every container the docker backend
started for this stack (both engines, with ``NEUKONFIG_DOCKER_CLOUD_DOCKER_HOST``), and
only then the network and volumes. A restart of the controller alone never reaches it.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from controller.backends.docker import DockerBackend, DockerBackendSettings
from neukonfig.errors import NeukonfigError

log = logging.getLogger("neukonfig.cleanup")


async def remove_partitions(backend: DockerBackend) -> int:
    """Stop and remove every container ``backend`` finds as its own; how many."""
    handles = await backend.discover()
    await asyncio.gather(*(backend.stop(handle) for handle in handles))
    return len(handles)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        backend = DockerBackend(DockerBackendSettings())
    except NeukonfigError as error:
        raise SystemExit(f"neukonfig cleanup: {error.message}") from None
    # Docker stops a container with SIGTERM: handled as Ctrl-C is. (A handler, not the
    # default action, also because PID 1 ignores signals it has no handler for.)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    log.info("waiting for the stack to go down (instance %s)", backend.settings.instance)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    removed = asyncio.run(remove_partitions(backend))
    log.info("the stack is going down: removed %d partition containers", removed)


if __name__ == "__main__":
    main()
