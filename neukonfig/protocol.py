"""The internal HTTP protocol between gateway, edge partition and cloud partition:
paths, headers and the records that cross those boundaries, defined once.

Bodies of ``/v1/infer`` are ``neukonfig.wire`` frames (content type ``wire.CONTENT_TYPE``).
"""

from __future__ import annotations

from dataclasses import dataclass

INFER_PATH = "/v1/infer"
PROBE_PATH = "/v1/probe"
TRANSFERS_PATH = "/v1/transfers"
PARTITION_INFO_PATH = "/v1/partition"
METRICS_PATH = "/metrics"
LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"
# A partition host (serving.hosting): its hosted partitions, each mounted under the prefix.
HOSTED_PATH = "/v1/hosted"
HOSTED_PREFIX = "/hosted"
HOST_MEMORY_PATH = "/v1/host/memory"

# Stage timings ride on the response, so the gateway needs no second round trip.
COMPUTE_SECONDS_HEADER = "x-neukonfig-compute-seconds"  # cloud -> edge
# cloud -> edge: "<bytes> <seconds>", the request body's second half as the cloud's clock
# saw it arrive (serving.bandwidth.arrival_tail); "0 0" when it came in one piece.
ARRIVAL_TAIL_HEADER = "x-neukonfig-arrival-tail"
EDGE_SECONDS_HEADER = "x-neukonfig-edge-seconds"  # edge -> gateway, and the three below
TRANSFER_SECONDS_HEADER = "x-neukonfig-transfer-seconds"
CLOUD_SECONDS_HEADER = "x-neukonfig-cloud-seconds"
TRANSFER_BYTES_HEADER = "x-neukonfig-transfer-bytes"
# gateway -> edge -> cloud, controller -> partitions: the shared internal token, when the
# partition services are configured with one (everything but health and /metrics).
INTERNAL_TOKEN_HEADER = "x-neukonfig-internal-token"
# edge -> gateway -> client: the cloud partition failed and the edge ran the tail itself.
FALLBACK_HEADER = "x-neukonfig-fallback"
# gateway -> client: which pipeline (and cut) answered this request.
PIPELINE_HEADER = "x-neukonfig-pipeline"
CUT_HEADER = "x-neukonfig-cut"
# The codec the answering pipeline sent the crossing tensor with; absent when none.
CODEC_HEADER = "x-neukonfig-codec"


def parse_arrival_tail(value: str | None) -> tuple[int, float]:
    """``ARRIVAL_TAIL_HEADER``'s (bytes, seconds); (0, 0.0), not timed, when absent or
    malformed: a peer that cannot time its input teaches nothing, it breaks nothing."""
    parts = (value or "").split()
    try:
        size, seconds = int(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        return 0, 0.0
    if len(parts) != 2 or size < 0 or not seconds >= 0:  # NaN is not >= 0 either
        return 0, 0.0
    return size, seconds


@dataclass(frozen=True)
class Transfer:
    """One crossing of the link: what the bandwidth estimator learns from real traffic."""

    seq: int
    unix_time: float
    bytes: int
    seconds: float  # round trip minus the cloud's own compute time
    cloud_seconds: float
    warm: bool = True  # on a reused connection: no handshake or slow start in ``seconds``
    tail_bytes: int = 0  # the body's second half, timed by the receiver (0: not timed)
    tail_seconds: float = 0.0
