"""What the kernel knows about a TCP connection: ``getsockopt(TCP_INFO)`` on Linux.

The layout is Linux's ``struct tcp_info`` (include/uapi/linux/tcp.h), a stable ABI that
only ever grows at the end; the fields read here exist since Linux 4.9 (delivery rate)
and 4.6 (not-sent bytes). Elsewhere, or on an older kernel, ``read_tcp_info`` returns
None and callers go on without it.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass

# Offsets into struct tcp_info (bytes), from include/uapi/linux/tcp.h.
_APP_LIMITED_BYTE = 7  # tcpi_delivery_rate_app_limited is bit 0 of the eighth byte
_SND_MSS = 16  # __u32 tcpi_snd_mss
_UNACKED = 24  # __u32 tcpi_unacked (segments)
_RTT = 68  # __u32 tcpi_rtt (µs)
_BYTES_ACKED = 120  # __u64 tcpi_bytes_acked
_NOTSENT = 144  # __u32 tcpi_notsent_bytes
_MIN_RTT = 148  # __u32 tcpi_min_rtt (µs)
_DELIVERY_RATE = 160  # __u64 tcpi_delivery_rate (bytes/s)
_NEEDED = _DELIVERY_RATE + 8
_BUFFER = 256


@dataclass(frozen=True)
class TcpInfo:
    delivery_rate_bps: float  # the kernel's latest delivery-rate sample, in bits/s
    app_limited: bool  # that sample was limited by the sender, not the path
    rtt_s: float  # smoothed round-trip time
    min_rtt_s: float
    bytes_acked: int  # since the connection opened
    unacked_segments: int  # sent, not yet acknowledged
    notsent_bytes: int  # written by the application, not yet sent
    mss: int

    @property
    def undelivered_bytes(self) -> int:
        """About how much the application wrote that the peer has not acknowledged."""
        return self.notsent_bytes + self.unacked_segments * self.mss

    @property
    def busy(self) -> bool:
        """Data is on its way: the connection is not idle."""
        return self.unacked_segments > 0 or self.notsent_bytes > 0


def read_tcp_info(sock: socket.socket) -> TcpInfo | None:
    """The connection's TCP_INFO, or None where the kernel does not give enough of it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _BUFFER)
    except OSError:
        return None
    if len(raw) < _NEEDED:
        return None
    (mss,) = struct.unpack_from("<I", raw, _SND_MSS)
    (unacked,) = struct.unpack_from("<I", raw, _UNACKED)
    (rtt,) = struct.unpack_from("<I", raw, _RTT)
    (bytes_acked,) = struct.unpack_from("<Q", raw, _BYTES_ACKED)
    notsent, min_rtt = struct.unpack_from("<II", raw, _NOTSENT)
    (delivery,) = struct.unpack_from("<Q", raw, _DELIVERY_RATE)
    return TcpInfo(
        delivery_rate_bps=delivery * 8.0,
        app_limited=bool(raw[_APP_LIMITED_BYTE] & 1),
        rtt_s=rtt / 1e6,
        min_rtt_s=min_rtt / 1e6,
        bytes_acked=bytes_acked,
        unacked_segments=unacked,
        notsent_bytes=notsent,
        mss=mss,
    )
