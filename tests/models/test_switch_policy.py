"""The switch rule on synthetic bandwidth traces, against a naive "always the best" rule.

The hand-made profile has exact crossovers: cut 0 (all-cloud) is best above 40 mbit,
cut 1 (split) from 10 to 40 mbit, cut 2 (all-edge) below 10 mbit. Estimates arrive at
10 Hz, so the default 2 s dwell is 20 estimates.
"""

from __future__ import annotations

import pytest

from models.planner import Planner
from models.switch_policy import (
    Decision,
    Reason,
    SwitchPolicy,
    SwitchRule,
    replay,
)
from models.traces import naive_switches, noise_around, ramp, square_wave, wander
from tests.profile_cases import THREE_CUTS, UPPER_CROSSOVER_BPS, planner_for

RATE_HZ = 10.0
# The plain dwell for every advantage, however large: what the older tests below test.
PLAIN = SwitchRule(fast_gain_fraction=1.0)


@pytest.fixture
def planner() -> Planner:
    return planner_for(THREE_CUTS)


def test_square_wave_switches_once_per_level_change_after_the_dwell(planner: Planner) -> None:
    trace = square_wave(high=50e6, low=5e6, half_period_s=30.0, periods=5, rate_hz=RATE_HZ)
    rule = PLAIN
    events = replay(SwitchPolicy(planner, rule=rule), trace, start_cut=0)
    level_changes = [
        t for (t, b), (_, before) in zip(trace[1:], trace, strict=False) if b != before
    ]
    assert len(level_changes) == 9
    assert len(events) == len(level_changes)
    assert naive_switches(planner, trace, start=0) == len(level_changes)
    for event, changed_at in zip(events, level_changes, strict=True):
        # Straight from all-cloud to all-edge and back: the split is never best at 5 or 50.
        assert (event.from_cut, event.to_cut) in {(0, 2), (2, 0)}
        delay = event.time_s - changed_at
        assert rule.dwell_s <= delay < rule.dwell_s + 1.5 / RATE_HZ


@pytest.mark.parametrize(("start", "end"), [(50e6, 5e6), (5e6, 50e6)])
@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_slow_ramp_moves_monotonically(
    planner: Planner, start: float, end: float, noise: float
) -> None:
    trace = ramp(start=start, end=end, duration_s=300.0, rate_hz=RATE_HZ, noise=noise, seed=7)
    first = planner.best(trace[0][1]).cut
    events = replay(SwitchPolicy(planner), trace, start_cut=first)
    path = [first, *(event.to_cut for event in events)]
    # Falling bandwidth walks 0 -> 1 -> 2, rising walks back, never back and forth.
    assert path == ([0, 1, 2] if start > end else [2, 1, 0])
    if noise:
        assert naive_switches(planner, trace, start=first) > len(events)


def test_noise_around_a_boundary_does_not_cause_a_switch_storm(planner: Planner) -> None:
    trace = noise_around(UPPER_CROSSOVER_BPS, spread=0.20, samples=1000, rate_hz=RATE_HZ, seed=3)
    policy_switches = len(replay(SwitchPolicy(planner), trace, start_cut=0))
    naive = naive_switches(planner, trace, start=0)
    assert policy_switches <= 1
    assert naive >= 50, naive


@pytest.mark.parametrize("seed", range(5))
def test_without_hysteresis_the_policy_is_the_naive_rule(planner: Planner, seed: int) -> None:
    trace = noise_around(UPPER_CROSSOVER_BPS, spread=0.20, samples=1000, rate_hz=RATE_HZ, seed=seed)
    bare = SwitchRule(min_gain_s=0.0, min_gain_fraction=0.0, dwell_s=0.0, min_estimates=1)
    assert len(replay(SwitchPolicy(planner, rule=bare), trace, start_cut=0)) == (
        naive_switches(planner, trace, start=0)
    )
    assert len(replay(SwitchPolicy(planner), trace, start_cut=0)) <= 1


def test_the_dwell_stops_fast_noise_that_the_gain_band_lets_through(planner: Planner) -> None:
    trace = noise_around(UPPER_CROSSOVER_BPS, spread=0.20, samples=1000, rate_hz=RATE_HZ, seed=3)
    band_only = SwitchRule(dwell_s=0.0, min_estimates=1)
    assert len(replay(SwitchPolicy(planner, rule=band_only), trace, start_cut=0)) >= 20


def test_the_gain_band_stops_slow_wander_that_the_dwell_lets_through(planner: Planner) -> None:
    # +-3% around the boundary with a 30 s period: each side lasts longer than the dwell,
    # but the latency difference stays under the minimum gain.
    slow = wander(UPPER_CROSSOVER_BPS, amplitude=0.03, period_s=30.0, samples=1200, rate_hz=RATE_HZ)
    dwell_only = SwitchRule(min_gain_s=0.0, min_gain_fraction=0.0)
    assert len(replay(SwitchPolicy(planner, rule=dwell_only), slow, start_cut=0)) >= 6
    assert replay(SwitchPolicy(planner), slow, start_cut=0) == []


def test_a_dip_shorter_than_the_dwell_is_ignored(planner: Planner) -> None:
    dip = [(t / RATE_HZ, 5e6 if 100 <= t < 115 else 50e6) for t in range(400)]
    assert replay(SwitchPolicy(planner, rule=PLAIN), dip, start_cut=0) == []
    # The dwell restarts after the dip: two short dips never add up to one long one.
    dips = [(t / RATE_HZ, 5e6 if (100 <= t < 115 or 120 <= t < 135) else 50e6) for t in range(400)]
    assert replay(SwitchPolicy(planner, rule=PLAIN), dips, start_cut=0) == []


def test_a_large_step_is_followed_within_the_fast_dwell(planner: Planner) -> None:
    """A 10x drop makes all-cloud several times slower than all-edge: no noise does
    that, so the move comes after the fast dwell, not the plain one; a blip shorter than
    the fast dwell still moves nothing."""
    rule = SwitchRule(dwell_s=2.0, fast_dwell_s=0.2)
    step = [(t / RATE_HZ, 5e6 if t >= 100 else 50e6) for t in range(200)]
    (event,) = replay(SwitchPolicy(planner, rule=rule), step, start_cut=0)
    assert (event.from_cut, event.to_cut) == (0, 2)
    assert event.time_s - 10.0 <= rule.fast_dwell_s + 2.5 / RATE_HZ
    blip = [(t / RATE_HZ, 5e6 if t == 100 else 50e6) for t in range(200)]
    assert replay(SwitchPolicy(planner, rule=rule), blip, start_cut=0) == []


def test_decisions_name_their_reason(planner: Planner) -> None:
    policy = SwitchPolicy(planner, rule=SwitchRule(dwell_s=1.0, min_estimates=2))
    assert policy.decide(current=0, bandwidth_bps=50e6, now_s=0.0).reason is (
        Reason.CURRENT_IS_BEST
    )
    # At 38 mbit the split gains 1.6 ms over all-cloud: inside the 2.6 ms band.
    small = policy.decide(current=0, bandwidth_bps=38e6, now_s=0.1)
    assert (small.decision, small.reason) == (Decision.STAY, Reason.GAIN_TOO_SMALL)
    assert small.best_cut == 1
    waiting = policy.decide(current=0, bandwidth_bps=5e6, now_s=1.0)
    assert (waiting.decision, waiting.reason) == (Decision.STAY, Reason.DWELLING)
    assert waiting.target_cut == 0
    go = policy.decide(current=0, bandwidth_bps=5e6, now_s=2.0)
    assert (go.decision, go.reason) == (Decision.SWITCH, Reason.BETTER_CUT)
    assert go.target_cut == 2
    assert go.gain_s == pytest.approx((0.010 + 1.6e6 / 5e6) - 0.080)


def test_switch_must_pay_back_its_cost_when_the_rate_is_known(planner: Planner) -> None:
    rule = SwitchRule(dwell_s=0.0, min_estimates=1, horizon_s=10.0)

    # At 5 mbit, moving from cut 1 to 2 saves 40 ms per request.
    def decide(rate: float, cost: float) -> Reason:
        policy = SwitchPolicy(planner, rule=rule)
        decision = policy.decide(
            current=1, bandwidth_bps=5e6, now_s=0.0, switch_cost_s=cost, request_rate=rate
        )
        return decision.reason

    # 0.04 s x 2 req/s x 10 s = 0.8 request-seconds saved.
    assert decide(rate=2.0, cost=1.0) is Reason.NOT_WORTH_COST
    assert decide(rate=2.0, cost=0.5) is Reason.BETTER_CUT
    assert decide(rate=20.0, cost=1.0) is Reason.BETTER_CUT


def test_a_clock_going_backwards_restarts_the_dwell(planner: Planner) -> None:
    policy = SwitchPolicy(planner, rule=SwitchRule(dwell_s=1.0, min_estimates=1))
    policy.decide(current=0, bandwidth_bps=5e6, now_s=10.0)
    assert policy.decide(current=0, bandwidth_bps=5e6, now_s=3.0).reason is Reason.DWELLING
    assert policy.decide(current=0, bandwidth_bps=5e6, now_s=4.0).reason is Reason.BETTER_CUT


@pytest.mark.parametrize(
    "options",
    [
        {"min_gain_s": -1.0},
        {"min_gain_fraction": 1.0},
        {"dwell_s": -1.0},
        {"min_estimates": 0},
        {"horizon_s": 0.0},
    ],
)
def test_bad_rules_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SwitchRule(**options)  # type: ignore[arg-type]


def test_a_link_flapping_faster_than_the_dwell_stops_dragging_the_service(
    planner: Planner,
) -> None:
    """50/5 mbit every 3 s for 60 s: the naive rule moves on every flip. The policy follows
    the first drop and its recovery (one reversal), then the dwell doubles per reversal,
    which a 3 s flap never gives; the reversals keep coming, so the memory never lapses
    and the service stays put for the rest of the minute, three flap windows long."""
    rule = SwitchRule(dwell_s=2.0, flap_window_s=20.0)
    trace = square_wave(high=50e6, low=5e6, half_period_s=3.0, periods=10, rate_hz=RATE_HZ)
    events = replay(SwitchPolicy(planner, rule=rule), trace, start_cut=0)
    assert naive_switches(planner, trace, start=0) >= 19
    assert [(e.from_cut, e.to_cut) for e in events] == [(0, 2), (2, 0)], events
    assert events[-1].time_s < 3 * 3.0, "the drop and its recovery were followed at once"


def test_a_drop_and_its_recovery_are_both_followed_at_the_fast_dwell(planner: Planner) -> None:
    """One reversal is an event, not a flap: 5 mbit for 5 s, then 50 again."""
    rule = SwitchRule(dwell_s=2.0, fast_dwell_s=0.2, flap_window_s=20.0)
    trace = [(t / RATE_HZ, 5e6 if 100 <= t < 150 else 50e6) for t in range(300)]
    events = replay(SwitchPolicy(planner, rule=rule), trace, start_cut=0)
    assert [(e.from_cut, e.to_cut) for e in events] == [(0, 2), (2, 0)]
    for event, changed_at in zip(events, (10.0, 15.0), strict=True):
        assert event.time_s - changed_at <= rule.fast_dwell_s + 2.5 / RATE_HZ


def test_noise_inside_the_gain_band_is_no_reversal(planner: Planner) -> None:
    """An estimate wandering across the band's edge, briefly past it and back inside,
    turns to nothing new and back: the move after it comes at the usual dwell, not a
    doubled one."""
    rule = SwitchRule(dwell_s=2.0, flap_window_s=20.0, fast_gain_fraction=1.0)
    policy = SwitchPolicy(planner, rule=rule)
    inside = UPPER_CROSSOVER_BPS * 1.01  # cut 0 gains 0.6%, inside the 5% band
    past = UPPER_CROSSOVER_BPS * 1.2  # cut 0 gains 12%, for less than the dwell
    wander_trace = [(t / RATE_HZ, past if t % 20 < 10 else inside) for t in range(100)]
    assert replay(policy, wander_trace, start_cut=1) == []
    step = [(10.0 + t / RATE_HZ, 50e6) for t in range(40)]
    (event,) = replay(policy, step, start_cut=1)
    assert event.time_s - 10.0 < rule.dwell_s + 1.5 / RATE_HZ


def test_a_return_after_the_flap_window_needs_only_the_plain_dwell(planner: Planner) -> None:
    rule = SwitchRule(dwell_s=2.0, flap_window_s=20.0)
    trace = square_wave(high=50e6, low=5e6, half_period_s=30.0, periods=2, rate_hz=RATE_HZ)
    events = replay(SwitchPolicy(planner, rule=rule), trace, start_cut=0)
    assert [(e.from_cut, e.to_cut) for e in events][:2] == [(0, 2), (2, 0)]
    assert events[1].time_s - 60.0 < rule.dwell_s + 1.5 / RATE_HZ


def test_a_recovery_read_through_a_middle_cut_is_one_reversal(planner: Planner) -> None:
    """The estimate passes the split cut's range on the way down and on the way back
    (50 -> 20 -> 5 -> 20 -> 50 mbit, each for less than the dwell at 20): only turning
    straight back counts, so the move back to all-cloud comes at the fast dwell."""
    rule = SwitchRule(dwell_s=2.0, fast_dwell_s=0.2, flap_window_s=20.0)
    levels = [(0, 50e6), (100, 20e6), (102, 5e6), (150, 20e6), (152, 50e6)]

    def level(t: int) -> float:
        return next(b for start, b in reversed(levels) if t >= start)

    trace = [(t / RATE_HZ, level(t)) for t in range(300)]
    events = replay(SwitchPolicy(planner, rule=rule), trace, start_cut=0)
    assert [(e.from_cut, e.to_cut) for e in events] == [(0, 2), (2, 0)], events
    assert events[-1].time_s - 15.2 <= rule.fast_dwell_s + 2.5 / RATE_HZ


def test_an_estimate_hovering_between_the_flapping_cuts_keeps_the_flap_memory(
    planner: Planner,
) -> None:
    """A window-averaged estimate of a fast flap sits between the two cuts, inside the band,
    crossing their boundary back and forth. After four flips of 50/20 mbit and 25 s of
    such hovering (longer than the flap window), a 3 s dip to 20 mbit is still the flap:
    it outlasts the plain dwell but not the doubled one, so the service stays."""
    rule = SwitchRule(dwell_s=2.0, flap_window_s=20.0, fast_gain_fraction=1.0)
    policy = SwitchPolicy(planner, rule=rule)
    flaps = square_wave(high=50e6, low=20e6, half_period_s=3.0, periods=2, rate_hz=RATE_HZ)
    replay(policy, flaps, start_cut=0)
    hover = [
        (12.0 + t / RATE_HZ, UPPER_CROSSOVER_BPS * (1.01 if t % 10 < 5 else 0.99))
        for t in range(250)
    ]
    dip = [(37.0 + t / RATE_HZ, 20e6) for t in range(30)]
    assert replay(policy, hover + dip, start_cut=0) == []


def test_a_drop_read_from_inside_the_band_still_counts_as_a_turn(planner: Planner) -> None:
    """The first estimates sit inside the band (no clear preference yet), then the link
    drops, recovers and drops again, 3 s each: the second drop is a second reversal, so
    it waits the grown dwell, not the fast one."""
    rule = SwitchRule(dwell_s=2.0, fast_dwell_s=0.2, flap_window_s=20.0)
    levels = [(0, UPPER_CROSSOVER_BPS * 0.99), (10, 5e6), (40, 50e6), (70, 5e6)]

    def level(t: int) -> float:
        return next(b for start, b in reversed(levels) if t >= start)

    trace = [(t / RATE_HZ, level(t)) for t in range(100)]
    events = replay(SwitchPolicy(planner, rule=rule), trace, start_cut=0)
    assert [(e.from_cut, e.to_cut) for e in events] == [(0, 2), (2, 0)], events


def test_the_dwell_grows_fourfold_per_reversal_after_the_first(planner: Planner) -> None:
    policy = SwitchPolicy(planner, rule=SwitchRule(dwell_s=1.0, flap_window_s=20.0))
    for reversals, dwell_s in ((1, 1.0), (2, 4.0), (3, 16.0), (4, 20.0)):
        policy._reversals.clear()
        policy._reversals.extend([1.0] * reversals)
        assert policy._dwell_s(2.0, large=False) == pytest.approx(dwell_s), reversals
        if reversals > 1:
            assert policy._dwell_s(2.0, large=True) == pytest.approx(dwell_s), "no fast path"
