"""Estimate the edge-to-cloud bandwidth from real traffic, and from probes when idle.

Passive samples are the edge partition's transfer records: bytes of the cut tensor
and the time it took, minus the cloud's compute time. Active samples are probes of
a known size to the cloud's probe endpoint, sent only when traffic is too thin.

Every transfer also pays a fixed cost that is not the link's rate: the round trip and
the HTTP handling at both ends, a millisecond or more. A 256-byte tensor is nearly all
fixed cost, and counting it as link time would read a 50 mbit link as a few mbit. So
the estimator learns each source's fixed cost (the fastest small transfers of the last
``overhead_horizon_s``), takes it out of every sample, and uses only *informative*
samples, those whose time is still ``min_net_s`` or more once it is out. Active probes
are timed by the receiver instead (``arrival_tail``): the second half of the probe's
bytes over the time they took to arrive, with neither the fixed cost nor the link's
burst allowance in it. So are real tensors too small to outlast that burst
(``transfer_sample``): the cloud reports their tail on its answer.

Freshest of all is the kernel: TCP_INFO's delivery rate on the sockets toward the cloud,
measured by the sender per acknowledgement while the link is busy (read by the edge,
``edge_service.link``). Readings from the last ``kernel_window_s`` are used instead of
any transfer window: they follow a step within a round trip, saturated link or not.

Otherwise the estimate is the bytes in a sliding window over the time the link was busy
carrying them: the union of the transfers' intervals, so transfers that overlap (a
saturated link, requests queueing behind each other) are not counted twice, and tiny
transfers that are mostly round-trip time weigh little. It is smoothed across
updates. A real step change (the window disagreeing with the smoothed value by more
than ``step_ratio``) replaces the smoothed value at once, so the estimate follows a
step within about one window, while noise within the ratio is averaged away.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

# A transfer counts as at least this long: guards against division by ~0 when a
# tiny tensor fits in the link's burst.
MIN_SECONDS = 1e-5
# Transfers up to this size measure the fixed cost (round trip, HTTP), not the rate.
SMALL_BYTES = 2048
# Below this a transfer may fit largely in the link's burst allowance (a shaper's token
# bucket, a radio's grant): timed end to end it reads near line rate (a 5 KiB tensor on a
# 5 mbit tbf with a 4 KB bucket read 7-13 mbit), so the receiver's timing of its second
# half counts where there is one: that leaves out a bucket under half the tensor (one
# over half, the tensor really does cross that fast). The controller's probes are never
# smaller, for the same reason.
BURST_SAFE_BYTES = 32 * 1024
# When probes alone inform the estimate, it is the median of this many, the newest: one
# probe is one receiver's reading, and a receiver descheduled for 40 ms on a loaded machine
# read a 14 mbit link as 5.5 mbit (and switched the service) in a probe of 50 ms.
PROBE_VOTES = 3


def arrival_tail(arrivals: list[tuple[float, int]]) -> tuple[int, float]:
    """The bytes of a body that arrived after its first half, and the time they took
    (from the arrival of the chunk that completed the first half to the last chunk).

    The receiver's clock times the link alone: no round trip, no HTTP handling, and none
    of the link's burst allowance, which a shaper (a token bucket) or a radio lets through
    at line rate at the start of a transfer after an idle spell. A probe timed end to end
    counts that burst as if the link had carried it at its rate and reads a slow link as
    faster than it is (a 16 KiB probe on a 5 mbit tbf with a 4 KB bucket: 6.3 mbit).
    (0, 0.0) when the body came in one chunk."""
    if len(arrivals) < 2:
        return 0, 0.0
    total = arrivals[-1][1]
    mid_at, mid_bytes = next((at, size) for at, size in arrivals if size * 2 >= total)
    return total - mid_bytes, arrivals[-1][0] - mid_at


class Source(str, enum.Enum):
    PASSIVE = "passive"
    ACTIVE = "active"
    KERNEL = "kernel"  # TCP_INFO's delivery rate, read while the link was busy


@dataclass(frozen=True)
class Sample:
    at_s: float  # monotonic time the transfer finished
    bytes: int
    seconds: float  # as measured, fixed cost included unless ``net``
    source: Source = Source.PASSIVE
    net: bool = False  # the fixed cost is already out (a probe timed by its receiver)


def transfer_sample(
    at_s: float, size: int, seconds: float, *, tail_bytes: int = 0, tail_seconds: float = 0.0
) -> Sample:
    """What one completed transfer teaches: small ones the fixed cost, large ones the rate
    end to end, those in between their tail as the receiver timed it. One that came in one
    piece (a link that hands over whole chunks, like the shaping proxy, or a loop too busy
    to read in between) has no tail and is timed end to end, as before."""
    if SMALL_BYTES < size < BURST_SAFE_BYTES and tail_bytes > 0 and tail_seconds > 0:
        return Sample(at_s, tail_bytes, tail_seconds, net=True)
    return Sample(at_s, size, seconds)


@dataclass(frozen=True)
class Estimate:
    bits_per_second: float | None
    samples_in_window: int
    source: Source | None
    age_s: float | None = None  # since the newest informative sample; None: never one
    # Enough to act on: a kernel reading, a few transfers or probes, or a probe that just
    # capped or raised the estimate by itself.
    confident: bool = False


class BandwidthEstimator:
    def __init__(
        self,
        *,
        window_s: float = 1.0,
        smoothing: float = 0.3,
        step_ratio: float = 1.5,
        min_window_bytes: int = 16 * 1024,
        rtt_s: float = 0.0,
        min_samples: int = 3,
        max_age_s: float = 10.0,
        min_net_s: float = 0.002,
        overhead_horizon_s: float = 30.0,
        kernel_window_s: float = 0.3,
        kernel_hold_s: float = 1.0,
    ) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")
        self.window_s = window_s
        self.smoothing = smoothing
        self.step_ratio = step_ratio
        self.min_window_bytes = min_window_bytes
        self.rtt_s = rtt_s  # the fixed cost until one is measured
        self.min_net_s = min_net_s
        self.overhead_horizon_s = overhead_horizon_s
        # On a slow, saturated link a big tensor may complete less than once per window,
        # and one transfer's time is mostly queueing: keep a few older ones to measure
        # the busy link across completions.
        self.min_samples = min_samples
        self.max_age_s = max_age_s
        self._samples: deque[Sample] = deque()
        self._smoothed: float | None = None
        self._source: Source | None = None
        self._small: dict[Source, deque[Sample]] = {source: deque() for source in Source}
        self.kernel_window_s = kernel_window_s
        # After the kernel's last reading, transfer windows (queueing, drained backlogs)
        # are worse evidence than it: they do not move the estimate for this long.
        self.kernel_hold_s = kernel_hold_s
        self._last_kernel_s: float | None = None
        # The hold keeps only what two readings or more agreed on: the last reading of a
        # busy spell can be far off (cut short by cancelled calls), and holding it alone
        # froze the estimate at 2x or 1/3 of the link for a second in CI.
        self._kernel_agreed = False
        self._kernel: deque[tuple[float, float]] = deque()  # (monotonic time, bits/s)
        self._newest_informative_s: float | None = None
        self._decisive_s: float | None = None  # the latest cap or floor

    def add(self, sample: Sample) -> None:
        if sample.bytes <= 0 or sample.seconds < 0:
            return
        if not sample.net and sample.bytes <= SMALL_BYTES:
            small = self._small[sample.source]
            small.append(sample)
            while small and small[0].at_s < sample.at_s - self.overhead_horizon_s:
                small.popleft()
            return
        if self._net_seconds(sample) < self.min_net_s:
            return  # mostly fixed cost: it would read the link as far slower than it is
        self._samples.append(sample)
        self._newest_informative_s = max(self._newest_informative_s or sample.at_s, sample.at_s)

    def add_kernel(self, at_s: float, bits_per_second: float) -> None:
        """A delivery-rate reading from the kernel, taken while data was in flight."""
        if bits_per_second > 0:
            self._kernel.append((at_s, bits_per_second))
            self._last_kernel_s = max(self._last_kernel_s or at_s, at_s)
            self._newest_informative_s = max(self._newest_informative_s or at_s, at_s)

    def overhead_s(self, source: Source) -> float:
        """The fixed cost of one transfer from ``source``: its fastest recent small one."""
        small = self._small[source]
        return min((s.seconds for s in small), default=self.rtt_s)

    def _net_seconds(self, sample: Sample) -> float:
        if sample.net:
            return sample.seconds
        return sample.seconds - self.overhead_s(sample.source)

    def cap(self, now_s: float, bits_per_second: float) -> None:
        """The link is at most this fast now (a probe that did not finish in time): lower
        the estimate at once, and forget the samples of the faster link before it, which
        would otherwise pull it back up."""
        if self._smoothed is None or self._smoothed > bits_per_second:
            self._smoothed = bits_per_second
            self._source = Source.ACTIVE
            self._decisive_s = now_s
        while self._samples and self._samples[0].at_s < now_s:
            self._samples.popleft()

    def raise_floor(self, now_s: float, bits_per_second: float) -> None:
        """The link is at least this fast now (a probe too quick to time: it finished within
        ``min_net_s``): raise the estimate at once, and forget the samples of the slower
        link before it. The next probe, sized at the new estimate, measures it."""
        if self._smoothed is None or self._smoothed < bits_per_second:
            self._smoothed = bits_per_second
            self._source = Source.ACTIVE
            self._newest_informative_s = now_s
            self._decisive_s = now_s
        while self._samples and self._samples[0].at_s < now_s:
            self._samples.popleft()

    def needs_probe(self, now_s: float) -> bool:
        """True when real traffic in the window is too thin to estimate from."""
        self._expire(now_s)
        recent = [s for s in self._samples if s.at_s >= now_s - self.window_s]
        passive = sum(s.bytes for s in recent if s.source is Source.PASSIVE)
        return passive < self.min_window_bytes

    def update(self, now_s: float) -> Estimate:
        """Fold the current window into the estimate; call once per control tick."""
        self._expire(now_s)
        while self._kernel and self._kernel[0][0] < now_s - self.kernel_window_s:
            self._kernel.popleft()
        held = (
            self._kernel_agreed
            and self._last_kernel_s is not None
            and now_s - self._last_kernel_s < self.kernel_hold_s
        )
        if self._kernel:
            readings = sorted(bps for _, bps in self._kernel)
            self._smoothed = self._blend(readings[len(readings) // 2])
            self._source = Source.KERNEL
            self._kernel_agreed = len(readings) >= 2
        elif held:
            pass
        elif (window := self._window_rate(samples := self._preferred_samples(now_s))) is not None:
            self._smoothed = self._blend(window)
            self._source = _source_of(samples)
        age = None if self._newest_informative_s is None else now_s - self._newest_informative_s
        decisive = self._decisive_s is not None and now_s - self._decisive_s < 3 * self.window_s
        confident = bool(self._kernel) or len(self._samples) >= self.min_samples or decisive
        return Estimate(self._smoothed, len(self._samples), self._source, age, confident)

    @property
    def current(self) -> float | None:
        return self._smoothed

    def _blend(self, window: float) -> float:
        previous = self._smoothed
        if previous is None:
            return window
        if self._is_step(window, previous):
            return window  # a step, not noise: follow it now
        return previous + self.smoothing * (window - previous)

    def probe_disputed(self) -> bool:
        """The newest probe disagrees with the estimate by a step: another probe, soon,
        decides which of them to believe (a step on probes alone needs two of three)."""
        probes = [s for s in self._samples if s.source is Source.ACTIVE]
        if not probes or self._smoothed is None:
            return False
        return self._is_step(self._rate(max(probes, key=lambda s: s.at_s)), self._smoothed)

    def _is_step(self, one: float, other: float) -> bool:
        return max(one, other) / min(one, other) > self.step_ratio

    def _rate(self, sample: Sample) -> float:
        return sample.bytes * 8 / max(self._net_seconds(sample), MIN_SECONDS)

    def _window_rate(self, preferred: list[Sample]) -> float | None:
        samples = sorted(preferred, key=lambda s: s.at_s)
        if not samples:
            return None
        if len(samples) == 1:
            return self._rate(samples[0])
        if len(samples) >= PROBE_VOTES and all(s.source is Source.ACTIVE for s in samples):
            # Probes never overlap, so each is a reading of its own; their median outvotes
            # one late receiver.
            rates = sorted(self._rate(s) for s in samples[-PROBE_VOTES:])
            return rates[len(rates) // 2]
        # Measure from the end of the oldest transfer on: the bytes that completed after
        # it, over the time the link was busy after it. On a saturated link a transfer's
        # time includes its wait in the queue, which reaches back to before that point.
        start = samples[0].at_s
        later = samples[1:]
        return sum(s.bytes for s in later) * 8 / max(self._busy_seconds(later, start), MIN_SECONDS)

    def _busy_seconds(self, samples: list[Sample], start: float) -> float:
        """Length of the union of the transfers' [end - net seconds, end], from ``start``."""
        intervals = sorted(
            (max(s.at_s - max(self._net_seconds(s), MIN_SECONDS), start), s.at_s) for s in samples
        )
        busy, reach = 0.0, float("-inf")
        for begin, end in intervals:
            if end > reach:
                busy += end - max(begin, reach)
                reach = end
        return busy

    def _preferred_samples(self, now_s: float) -> list[Sample]:
        """Real traffic when the window has enough of it, as ``needs_probe`` judges; else
        the kind of evidence that spoke last. Probes are sent because the window is thin,
        and real traffic kept past the window (the few samples ``min_samples`` keeps)
        preferred to them froze the estimate at 4.05 mbit on a 5 mbit link for 3 s while
        three probes read 4.7 (the edge ran its requests locally: no new transfer came).
        Nor the other way: on a busy link no probe is sent, and a probe kept from before
        must not outweigh the transfers that completed since."""
        if not self.needs_probe(now_s):
            return [s for s in self._samples if s.source is Source.PASSIVE]
        if not self._samples:
            return []
        newest = max(self._samples, key=lambda s: s.at_s)
        return [s for s in self._samples if s.source is newest.source]

    def _expire(self, now_s: float) -> None:
        while self._samples and self._samples[0].at_s < now_s - self.window_s:
            if (
                len(self._samples) <= self.min_samples
                and self._samples[0].at_s >= now_s - self.max_age_s
            ):
                break
            self._samples.popleft()


def _source_of(samples: list[Sample]) -> Source:
    return Source.PASSIVE if {s.source for s in samples} == {Source.PASSIVE} else Source.ACTIVE
