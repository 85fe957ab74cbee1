"""``python -m cloud_service``: serve the tail partition named by ``NEUKONFIG_CLOUD_*``,
or with ``hosting`` a host of tails (``serving.hosting``)."""

from cloud_service.app import create_app, create_host_app
from cloud_service.settings import get_settings
from neukonfig.service import run_uvicorn, settings_or_exit
from neukonfig.tls import TlsDir

settings = settings_or_exit(get_settings)
app = create_host_app(settings) if settings.hosting else create_app(settings)
tls = TlsDir(settings.tls_dir).server_options() if settings.tls_dir else {}
run_uvicorn(app, host=settings.host, port=settings.port, **tls)
