"""What the edge knows about its link to the cloud, right now.

Three kinds of evidence, freshest first:

- **The kernel.** ``TCP_INFO`` on the sockets toward the cloud: the delivery rate the
  sender measured from acknowledgements (per ACK, so within a round trip of a change),
  and the bytes written but not yet acknowledged. Trusted only when the kernel's TCP
  path is the link itself (``kernel_evidence``): behind the user-space shaping proxy the
  kernel sees loopback.
- **Transfers in flight.** A transfer that has taken X s for B bytes says the link is at
  most (B + what completed meanwhile) / X *now*, before it completes.
- **Completed transfers** (bytes, seconds), as before.

The partition service records every cloud call here (``begin``/``end``), answers
``/v1/transfers`` from ``snapshot`` (the controller's estimator reads it), and asks
``link_seconds`` whether a frame sent now would take longer than finishing locally.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import asdict, dataclass

from neukonfig.peer_client import PeerClient
from neukonfig.protocol import Transfer
from neukonfig.tcp_info import TcpInfo, read_tcp_info
from serving.bandwidth import BandwidthEstimator, transfer_sample

# A kernel reading older than this is not "now".
KERNEL_FRESH_S = 0.5
# The link's rate is measured over the latest busy stretch, between these lengths.
KERNEL_STRETCH_MIN_S = 0.08
KERNEL_STRETCH_MAX_S = 0.25
# A connection that has delivered less than this is still in TCP slow start.
YOUNG_CONNECTION_BYTES = 256 * 1024
# A transfer younger than this says nothing yet (round trip, HTTP and cloud compute).
IN_FLIGHT_EVIDENCE_S = 0.05
# How far back "normal" reaches: the quickest transfer in this time is the unloaded link.
NORMAL_HORIZON_S = 30.0


# Which connection a socket is, across readings (``_connection_key``).
_Key = tuple[int, object]


@dataclass(frozen=True)
class KernelReading:
    at_s: float  # monotonic
    delivery_bps: float | None  # summed over connections busy and not app-limited
    undelivered_bytes: int  # written to the sockets, not yet acknowledged
    busy_connections: int
    min_rtt_s: float | None


@dataclass
class _InFlight:
    bytes: int
    started_s: float  # monotonic


class LinkMonitor:
    def __init__(
        self, cloud: PeerClient | None, *, kernel_evidence: bool, history_size: int = 4096
    ) -> None:
        self.cloud = cloud
        self.kernel_evidence = kernel_evidence
        self._in_flight: dict[int, _InFlight] = {}
        self._ids = itertools.count(1)
        self._history: deque[Transfer] = deque(maxlen=history_size)
        self._seq = 0
        self._last_kernel: KernelReading | None = None
        self._recent: deque[tuple[float, float]] = deque()
        # Bytes acked per connection (``_connection_key``) at the last reading.
        self._acked: dict[_Key, int] = {}
        self._delivered = 0  # bytes acked over every connection since this service began
        self._marks: deque[tuple[float, int, bool]] = deque()  # (time, delivered, busy)
        # The edge's own view, for deciding per request; the controller keeps its own.
        self.estimator = BandwidthEstimator(window_s=1.0)

    # -- the partition service's calls -------------------------------------------------

    def begin(self, size: int) -> int:
        token = next(self._ids)
        self._in_flight[token] = _InFlight(size, time.monotonic())
        return token

    def end(
        self,
        token: int,
        *,
        seconds: float,
        cloud_seconds: float,
        delivered: bool,
        warm: bool = True,
        tail: tuple[int, float] = (0, 0.0),
    ) -> None:
        """A cloud call ended; ``delivered``: it completed (a failure teaches no rate);
        ``warm``: on a connection past its handshake and slow start. A cold transfer is
        recorded but teaches no rate: slow start would read a fast link as a slow one.
        ``tail``: the body's second half as the cloud timed it (bytes, seconds)."""
        flight = self._in_flight.pop(token, None)
        if flight is None or not delivered:
            return
        self._seq += 1
        self._history.append(
            Transfer(self._seq, time.time(), flight.bytes, seconds, cloud_seconds, warm, *tail)
        )
        if not warm:
            return
        now = time.monotonic()
        self.estimator.add(
            transfer_sample(now, flight.bytes, seconds, tail_bytes=tail[0], tail_seconds=tail[1])
        )
        self._recent.append((now, seconds))
        while self._recent and self._recent[0][0] < now - NORMAL_HORIZON_S:
            self._recent.popleft()

    def normal_seconds(self) -> float | None:
        """The quickest recent transfer: what crossing takes when the link is not backed up."""
        return min((seconds for _, seconds in self._recent), default=None)

    # -- what it knows -------------------------------------------------------------------

    def kernel(self) -> KernelReading | None:
        """TCP_INFO over the open connections to the cloud (None: not trusted or none).

        The rate is the bytes the cloud acknowledged, over all connections, per second
        of a stretch in which the link was busy all along: concurrent transfers share
        the link, so their per-connection rates must not be added up. Before there is
        such a stretch, one busy connection's own delivery rate stands in for it."""
        if not self.kernel_evidence or self.cloud is None:
            return None
        now = time.monotonic()
        infos: dict[_Key, TcpInfo] = {}
        for sock in self.cloud.sockets():
            info = read_tcp_info(sock)
            key = _connection_key(sock)
            if info is not None and key is not None:
                infos[key] = info
        if not infos:
            return None
        acking = set()  # connections acknowledged since the last reading
        for key, info in infos.items():
            previous = self._acked.get(key)
            if previous is not None:
                self._delivered += max(0, info.bytes_acked - previous)
                if info.bytes_acked > previous:
                    acking.add(key)
            self._acked[key] = info.bytes_acked
        self._acked = {key: self._acked[key] for key in infos}
        busy = {key: info for key, info in infos.items() if info.busy}
        # A young connection is in slow start, below the link's rate: not a measure of it.
        young = any(i.bytes_acked < YOUNG_CONNECTION_BYTES for i in busy.values())
        self._marks.append((now, self._delivered, bool(busy) and not young))
        while self._marks and self._marks[0][0] < now - KERNEL_STRETCH_MAX_S:
            self._marks.popleft()
        rate = self._busy_stretch_rate(now)
        if rate is None:
            rate = self._lone_connection_rate(busy, acking)
        reading = KernelReading(
            at_s=now,
            delivery_bps=rate,
            undelivered_bytes=sum(i.undelivered_bytes for i in busy.values()),
            busy_connections=len(busy),
            min_rtt_s=min((i.min_rtt_s for i in infos.values() if i.min_rtt_s), default=None),
        )
        self._last_kernel = reading
        return reading

    @staticmethod
    def _lone_connection_rate(busy: dict[_Key, TcpInfo], acking: set[_Key]) -> float | None:
        """The only busy connection's own delivery rate, if it is a measure of the link now:
        not limited by the application, past slow start, and acknowledged since the last
        reading. The kernel keeps the rate of the last acknowledgement, which on a connection
        busy again after an idle spell is from before it: one read 43.8 mbit two seconds
        after a step down to 5 (and the estimate went back up for 0.2 s)."""
        if len(busy) != 1:
            return None
        ((key, info),) = busy.items()
        if info.app_limited or info.bytes_acked < YOUNG_CONNECTION_BYTES or key not in acking:
            return None
        return info.delivery_rate_bps or None

    @property
    def delivered_bytes(self) -> int:
        """Bytes the cloud acknowledged over every connection, as of the last reading."""
        return self._delivered

    def _busy_stretch_rate(self, now: float) -> float | None:
        """Acknowledged bytes per second since the earliest mark from which the link has
        been busy at every mark, if that stretch is long enough to measure."""
        start = None
        for at, delivered, busy in reversed(self._marks):
            if not busy:
                break
            start = (at, delivered)
        if start is None or now - start[0] < KERNEL_STRETCH_MIN_S:
            return None
        return (self._delivered - start[1]) * 8 / (now - start[0])

    def rate_bps(self) -> float | None:
        """The edge's best current figure for the link: the kernel's when fresh; else the
        completed transfers', lowered by what the transfers in flight show."""
        now = time.monotonic()
        reading = self._last_kernel
        fresh = reading is not None and now - reading.at_s < KERNEL_FRESH_S
        if fresh and reading is not None and reading.delivery_bps is not None:
            return reading.delivery_bps
        rate = self.estimator.update(now).bits_per_second
        bound = self.in_flight_bound_bps(now)
        if bound is not None and (rate is None or bound < rate):
            return bound
        return rate

    def in_flight_bound_bps(self, now_s: float) -> float | None:
        """At most this fast now: no transfer in flight has been quicker so far. (A
        transfer's time includes the cloud's compute, so this errs on the slow side.)"""
        bounds = [
            f.bytes * 8 / (now_s - f.started_s)
            for f in self._in_flight.values()
            if now_s - f.started_s > IN_FLIGHT_EVIDENCE_S
        ]
        return min(bounds, default=None)

    def queued_bytes(self) -> int:
        """Bytes of cloud calls in flight not yet delivered: the kernel's count when it is
        trusted, else every in-flight frame in full."""
        reading = self.kernel()
        if reading is not None:
            return reading.undelivered_bytes
        return sum(f.bytes for f in self._in_flight.values())

    def link_seconds(self, size: int) -> float | None:
        """How long ``size`` more bytes would take to cross, behind what is queued."""
        queued = self.queued_bytes()
        rate = self.rate_bps()
        if rate is None or rate <= 0:
            return None
        return (queued + size) * 8 / rate

    def snapshot(self, after: int) -> dict[str, object]:
        """``/v1/transfers``: completed transfers after ``after``, those in flight, and the
        kernel's reading."""
        now = time.monotonic()
        reading = self.kernel()
        return {
            "transfers": [asdict(t) for t in self._history if t.seq > after],
            "in_flight": [
                {"bytes": f.bytes, "age_s": now - f.started_s} for f in self._in_flight.values()
            ],
            "kernel": asdict(reading) | {"age_s": now - reading.at_s} if reading else None,
        }


def _connection_key(sock: object) -> _Key | None:
    """Which connection this is, across readings. Not ``id(sock)`` alone: a closed
    connection's socket object is freed and a new connection's often gets its address, and
    its whole count of acknowledged bytes would then read as delivered since the last
    reading (a 5 mbit link read as 10). The local address tells them apart: a closed
    connection's port stays in TIME_WAIT. None: the socket is already closed."""
    try:
        return id(sock), sock.getsockname()  # type: ignore[attr-defined]
    except OSError:
        return None
