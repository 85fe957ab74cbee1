"""``python -m controller``: run the controller against a gateway (settings from env)."""

from __future__ import annotations

import logging

from controller.app import create_app
from controller.assemble import build_controller
from controller.settings import get_settings
from neukonfig.errors import NeukonfigError
from neukonfig.service import run_uvicorn, settings_or_exit

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
# One line per control-loop HTTP call would bury the switches.
logging.getLogger("httpx").setLevel(logging.WARNING)
settings = settings_or_exit(get_settings)
try:
    controller = build_controller(settings)
except NeukonfigError as error:  # an engine out of reach, a missing profile: one line
    raise SystemExit(f"neukonfig controller: {error.message}") from None
run_uvicorn(create_app(controller), host=settings.host, port=settings.port)
