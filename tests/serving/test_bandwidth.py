"""The estimator on synthetic transfer streams with known bandwidth."""

from __future__ import annotations

import numpy as np
import pytest

from serving.bandwidth import (
    BURST_SAFE_BYTES,
    SMALL_BYTES,
    BandwidthEstimator,
    Sample,
    Source,
    arrival_tail,
    transfer_sample,
)

TICK = 0.1


def stream(
    estimator,
    bandwidth_of,
    *,
    until: float,
    size: int = 200_000,
    every: float = 0.05,
    noise: float = 0.0,
    seed: int = 0,
    rtt: float = 0.0,
):
    """Transfers of ``size`` bytes sent at a fixed rate over a FIFO link whose capacity
    follows ``bandwidth_of``; yield (time, estimate) each tick. A transfer's seconds
    count from its send, so queueing behind earlier ones is included, as on the edge."""
    rng = np.random.default_rng(seed)
    now, next_send, link_free = 0.0, 0.0, 0.0
    pending: list[Sample] = []
    while now < until:
        while next_send <= now:
            bps = bandwidth_of(next_send) * (1 + noise * rng.standard_normal())
            start = max(next_send, link_free)
            link_free = start + size * 8 / bps
            pending.append(Sample(link_free + rtt, size, link_free + rtt - next_send))
            next_send += every
        for sample in [s for s in pending if s.at_s <= now]:
            estimator.add(sample)
            pending.remove(sample)
        yield now, estimator.update(now).bits_per_second
        now += TICK


def test_steady_traffic_gives_the_true_bandwidth() -> None:
    estimates = [e for _, e in stream(BandwidthEstimator(), lambda t: 50e6, until=3)]
    assert estimates[-1] == pytest.approx(50e6, rel=1e-6)


def test_a_step_is_followed_within_a_second() -> None:
    estimator = BandwidthEstimator(window_s=0.5)
    trace = list(stream(estimator, lambda t: 50e6 if t < 5 else 5e6, until=8))
    after = [(t, e) for t, e in trace if t >= 5]
    settled = next(t for t, e in after if abs(e - 5e6) / 5e6 < 0.2)
    assert settled - 5 <= 1.0
    assert trace[-1][1] == pytest.approx(5e6, rel=0.05)


def test_noise_is_smoothed() -> None:
    estimator = BandwidthEstimator()
    trace = [e for t, e in stream(estimator, lambda t: 20e6, until=20, noise=0.1, seed=3) if t > 2]
    spread = np.std(trace) / np.mean(trace)
    assert spread < 0.05
    assert np.mean(trace) == pytest.approx(20e6, rel=0.05)


def test_known_rtt_is_taken_out_of_small_transfers() -> None:
    estimator = BandwidthEstimator(rtt_s=0.02)
    trace = list(stream(estimator, lambda t: 10e6, until=3, size=20_000, rtt=0.02))
    assert trace[-1][1] == pytest.approx(10e6, rel=0.01)


def test_probes_are_asked_for_only_when_traffic_is_thin() -> None:
    estimator = BandwidthEstimator(window_s=1.0, min_window_bytes=50_000)
    assert estimator.needs_probe(0.0)
    estimator.add(Sample(0.1, 100_000, 0.01))
    assert not estimator.needs_probe(0.5)
    assert estimator.needs_probe(1.5)  # the transfer left the window


def test_probes_fill_in_and_real_traffic_takes_over() -> None:
    estimator = BandwidthEstimator(min_window_bytes=50_000)
    estimator.add(Sample(0.0, 64_000, 64_000 * 8 / 10e6, Source.ACTIVE))
    first = estimator.update(0.1)
    assert first.source is Source.ACTIVE
    assert first.bits_per_second == pytest.approx(10e6)
    for i in range(5):
        estimator.add(Sample(0.2 + i * 0.02, 100_000, 100_000 * 8 / 40e6))
    second = estimator.update(0.3)
    assert second.source is Source.PASSIVE
    assert second.bits_per_second == pytest.approx(40e6)


def test_no_samples_means_no_estimate() -> None:
    assert BandwidthEstimator().update(1.0).bits_per_second is None


def test_a_saturated_link_with_queued_transfers_gives_its_capacity() -> None:
    """Four transfers queue on a 5 mbit link: each takes longer, but the link is busy."""
    estimator = BandwidthEstimator()
    size, capacity = 100_000, 5e6
    per_transfer = size * 8 / capacity
    for i in range(4):  # all sent at t=0, finished one after another
        estimator.add(Sample((i + 1) * per_transfer, size, (i + 1) * per_transfer))
    assert estimator.update(4 * per_transfer).bits_per_second == pytest.approx(capacity, rel=1e-6)


def test_big_transfers_on_a_saturated_slow_link_are_measured_across_completions() -> None:
    """600 KB tensors at 4 per second into 5 mbit: fewer than one completes per window,
    and each one's time is mostly queueing. The estimate must still be the link's rate."""
    estimator = BandwidthEstimator(window_s=1.0)
    trace = list(stream(estimator, lambda t: 5e6, until=20, size=600_000, every=0.25))
    assert trace[-1][1] == pytest.approx(5e6, rel=0.05)


def test_a_cap_lowers_the_estimate_at_once_and_old_samples_do_not_undo_it() -> None:
    """A probe that timed out says the link is at most size/timeout now; the samples of
    the fast link before it are dropped, so the next update cannot restore 50 mbit."""
    estimator = BandwidthEstimator(min_samples=3, max_age_s=10)
    for _ in stream(estimator, lambda t: 50e6, until=2):
        pass
    assert estimator.current == pytest.approx(50e6, rel=1e-6)
    estimator.cap(2.5, 1e6)
    assert estimator.update(2.6).bits_per_second == 1e6
    estimator.cap(2.7, 5e6)  # a looser bound than what is known changes nothing
    assert estimator.current == 1e6
    estimator.add(Sample(3.0, 2_500, 1.0, Source.ACTIVE))  # what the link really does now
    assert estimator.update(3.1).bits_per_second == pytest.approx(20e3, rel=0.01)


def test_small_transfers_teach_the_fixed_cost_and_do_not_drag_the_estimate() -> None:
    """At a cut that sends 256 bytes, every transfer is nearly all round trip. Mixed with
    a probe on a 50 mbit link they used to read it as ~10 mbit; now they only teach the
    fixed cost, which is taken out of the larger transfers."""
    estimator = BandwidthEstimator(min_window_bytes=16_384)
    overhead = 0.002
    for i in range(10):
        estimator.add(Sample(0.1 * i, 256, overhead + 256 * 8 / 50e6))
    assert estimator.overhead_s(Source.PASSIVE) == pytest.approx(overhead, rel=0.05)
    size = 64_000
    estimator.add(Sample(1.0, size, overhead + size * 8 / 50e6))
    assert estimator.update(1.0).bits_per_second == pytest.approx(50e6, rel=0.01)


def test_a_transfer_that_is_mostly_fixed_cost_is_not_evidence() -> None:
    estimator = BandwidthEstimator(rtt_s=0.005, min_net_s=0.002)
    estimator.add(Sample(1.0, 8_000, 0.006))  # 1 ms of link time under 5 ms of fixed cost
    estimate = estimator.update(1.0)
    assert estimate.bits_per_second is None
    assert estimate.age_s is None


def test_the_arrival_tail_leaves_out_the_burst_at_the_start() -> None:
    # 4 KB through at once (the shaper's bucket, read as two chunks), then 12 KB at 5 mbit
    # in 1 KB chunks.
    arrivals = [(0.0, 2000), (0.0, 4000)]
    arrivals += [(i * 8000 / 5e6, 4000 + i * 1000) for i in range(1, 13)]
    tail_bytes, tail_seconds = arrival_tail(arrivals)
    assert tail_bytes * 8 / tail_seconds == pytest.approx(5e6)
    end_to_end = arrivals[-1][1] * 8 / arrivals[-1][0]
    assert end_to_end > 6.5e6  # what timing the whole probe reads
    assert arrival_tail([(0.0, 16_000)]) == (0, 0.0)


def test_a_mid_sized_transfer_teaches_only_its_receiver_timed_tail() -> None:
    """A 5.3 KB tensor on a 5 mbit tbf with a 4 KB bucket: 4 KB go through at once, the
    last 1.3 KB at 5 mbit. End to end (with 1 ms of fixed cost left in) it reads about
    4x the link; its tail as the cloud timed it reads the link."""
    size, tail = 5_300, 1_300
    tail_seconds = tail * 8 / 5e6
    end_to_end = 0.001 + tail_seconds
    assert size * 8 / end_to_end > 12e6
    sample = transfer_sample(1.0, size, end_to_end, tail_bytes=tail, tail_seconds=tail_seconds)
    assert sample == Sample(1.0, tail, tail_seconds, net=True)
    estimator = BandwidthEstimator(min_net_s=0.002)
    estimator.add(sample)
    assert estimator.update(1.0).bits_per_second == pytest.approx(5e6)
    # Untimed (it came in one piece): end to end, the only timing there is.
    assert transfer_sample(1.0, size, end_to_end) == Sample(1.0, size, end_to_end)
    # Small ones still teach the fixed cost, large ones the rate end to end.
    assert transfer_sample(1.0, SMALL_BYTES, 0.001) == Sample(1.0, SMALL_BYTES, 0.001)
    big = transfer_sample(1.0, BURST_SAFE_BYTES, 0.06, tail_bytes=1, tail_seconds=1.0)
    assert big == Sample(1.0, BURST_SAFE_BYTES, 0.06)


def test_a_net_probe_sample_is_the_links_time_alone() -> None:
    estimator = BandwidthEstimator()
    estimator.add(Sample(1.0, 100_000, 100_000 * 8 / 20e6, Source.ACTIVE, net=True))
    estimate = estimator.update(1.5)
    assert estimate.bits_per_second == pytest.approx(20e6)
    assert estimate.age_s == pytest.approx(0.5)


def test_a_lone_kernel_reading_is_not_held_against_the_transfers() -> None:
    """The last reading of a busy spell alone (CI saw 10 mbit on a 5 mbit link): it moves
    the estimate while it is fresh, and the transfers move it back once it is not, not
    a second later."""
    estimator = BandwidthEstimator(kernel_window_s=0.3, kernel_hold_s=1.0)
    for i in range(4):  # 80 ms transfers every 100 ms
        estimator.add(Sample(0.1 * i, 50_000, 50_000 * 8 / 5e6))
    assert estimator.update(0.35).bits_per_second == pytest.approx(5e6, rel=0.01)
    estimator.add_kernel(0.4, 10e6)
    assert estimator.update(0.45).bits_per_second == 10e6
    for at in (0.5, 0.6, 0.7):
        estimator.add(Sample(at, 50_000, 50_000 * 8 / 5e6))
    # Past the kernel's 0.3 s window, well before a hold would have ended (1.4 s).
    assert estimator.update(0.75).bits_per_second == pytest.approx(5e6, rel=0.05)


def test_the_kernels_reading_wins_and_holds_against_transfer_windows() -> None:
    estimator = BandwidthEstimator(kernel_window_s=0.3, kernel_hold_s=1.0)
    for i in range(3):
        estimator.add(Sample(0.1 * i, 100_000, 100_000 * 8 / 50e6))
    assert estimator.update(0.3).bits_per_second == pytest.approx(50e6, rel=0.01)
    estimator.add_kernel(0.33, 5e6)  # a 10x step, read while the link was busy
    estimator.add_kernel(0.35, 5e6)
    estimate = estimator.update(0.4)
    assert (estimate.bits_per_second, estimate.source) == (5e6, Source.KERNEL)
    assert estimate.confident
    # Transfers queued before the step complete slowly, then fast: they do not move it.
    estimator.add(Sample(0.8, 100_000, 100_000 * 8 / 9e6))
    assert estimator.update(0.9).bits_per_second == 5e6
    # After the hold, transfers are evidence again.
    for i in range(4):
        estimator.add(Sample(1.5 + 0.1 * i, 100_000, 100_000 * 8 / 9e6))
    assert estimator.update(1.9).bits_per_second == pytest.approx(9e6, rel=0.05)


def _probe(at_s: float, rate_bps: float, size: int = 43_750) -> Sample:
    return Sample(at_s, size, size * 8 / rate_bps, Source.ACTIVE, net=True)


def test_one_late_probe_is_outvoted_and_two_make_a_step() -> None:
    """Probes alone on a 14 mbit link; one receiver descheduled for 40 ms reads 5.5 mbit.
    The estimate keeps 14 mbit and asks for another probe; a second such reading is a
    real drop, and the estimate follows it."""
    estimator = BandwidthEstimator(window_s=1.0)
    for at in (1.0, 2.0, 3.0):
        estimator.add(_probe(at, 14e6))
        estimator.update(at)
    assert not estimator.probe_disputed()
    estimator.add(_probe(4.0, 5.5e6))
    assert estimator.update(4.0).bits_per_second == pytest.approx(14e6)
    assert estimator.probe_disputed()
    estimator.add(_probe(4.25, 5.5e6))
    assert estimator.update(4.25).bits_per_second == pytest.approx(5.5e6)
    assert not estimator.probe_disputed()


def test_probes_win_over_real_traffic_kept_past_the_window() -> None:
    """The edge stopped sending (it runs its requests locally on a slow link): the
    estimator keeps its last transfers past the window, and the probes the thin window
    asks for must move the estimate, not the old transfers (a run froze at 4.05 mbit on
    a 5 mbit link for 3 s while three probes read 4.7)."""
    estimator = BandwidthEstimator(window_s=1.0, min_samples=3, max_age_s=10)
    size = 65_664
    for at, bps in ((0.5, 2e6), (0.75, 2e6)):  # queued behind each other: slow readings
        estimator.add(Sample(at, size, size * 8 / bps))
    assert estimator.update(1.0).bits_per_second == pytest.approx(2e6, rel=0.1)
    for at in (1.9, 2.9):
        assert estimator.needs_probe(at)
        estimator.add(_probe(at, 4.7e6))
        estimate = estimator.update(at)
        assert estimate.bits_per_second == pytest.approx(4.7e6, rel=0.05), at
        assert estimate.source is Source.ACTIVE


def test_transfers_win_over_a_probe_kept_from_before_the_link_got_busy() -> None:
    """Big tensors on a saturated slow link: no probe is sent while it is busy, and fewer
    than one transfer completes per window. A probe kept from before must not hold the
    estimate at the old link's rate."""
    estimator = BandwidthEstimator(window_s=1.0, min_samples=3, max_age_s=10)
    estimator.add(_probe(0.5, 50e6))
    size = 600_000
    for at in (1.7, 3.2):  # each 600 KB took 0.96 s of a 5 mbit link
        estimator.add(Sample(at, size, size * 8 / 5e6))
    estimate = estimator.update(4.4)  # the window has no transfer: thin
    assert estimate.bits_per_second == pytest.approx(5e6, rel=0.05)
    assert estimate.source is Source.PASSIVE
