"""``python -m cloud_service``: serve the tail partition named by ``NEUKONFIG_CLOUD_*``."""

from cloud_service.app import create_app
from cloud_service.settings import get_settings
from neukonfig.service import run_uvicorn, settings_or_exit

settings = settings_or_exit(get_settings)
run_uvicorn(create_app(settings), host=settings.host, port=settings.port)
