"""``python -m cloud_service.healthcheck``: the cloud image's HEALTHCHECK.

Plain HTTP: the ready path answers 200. With mutual TLS (``NEUKONFIG_CLOUD_TLS_DIR``)
the service answers no one without the edge's client certificate, which the cloud host
does not hold, so only its port is checked; the controller reads the ready path itself,
with the edge's certificate.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request

PORT = int(os.environ.get("NEUKONFIG_CLOUD_PORT", "8200"))


def healthy() -> bool:
    try:
        if os.environ.get("NEUKONFIG_CLOUD_TLS_DIR"):
            socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
            return True
        url = f"http://127.0.0.1:{PORT}/health/ready"
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(0 if healthy() else 1)
