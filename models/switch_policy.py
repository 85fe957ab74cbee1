"""When to move to another cut: the planner's best cut, behind hysteresis.

What moves is a planner ``Option``: a cut, and with a codec budget the codec its
crossing tensor is sent with; "cut" below means that option.

Moving costs something (a new pipeline loads, requests may wait), and a bandwidth
estimate is noisy. Following the planner's argmin on every estimate makes a link
hovering near a crossover bandwidth switch back and forth on noise (a switch storm).
So a switch needs all of:

1. **Minimum gain** (the hysteresis band). The best cut must beat the current one by at
   least ``min_gain_s`` seconds AND ``min_gain_fraction`` of the current latency. Near a
   crossover both cuts predict almost the same latency, so neither side of the boundary
   can pull the service over it; only a bandwidth clearly past it can.
2. **Dwell.** That advantage must have held on every estimate for ``dwell_s`` seconds
   and at least ``min_estimates`` estimates in a row. A brief dip does not move us.
   A large advantage (``fast_gain_fraction`` of the current latency or more: a 10x step,
   not noise) needs only ``fast_dwell_s``, so the service reacts within a second.
   **Flap backoff.** The policy keeps the cut each estimate clearly prefers (the current
   one when it is the best, another when that one's gain is past the band; inside the
   band, none) and counts the *reversals* of that preference in the last
   ``flap_window_s``: turning straight back to the cut it last turned away from.
   One reversal is a drop and its recovery, followed at the usual dwell. From the
   second on, the plain dwell grows ``flap_backoff`` (4x) per reversal (at most
   ``flap_window_s``), so a link that flips faster than that keeps the service on one
   side for as long as it flips, however long that is. (4x, not 2x: on a loaded machine
   the estimate of a link flipping every 1.5 s lagged a whole phase, and a doubled
   0.5 s dwell let a third move through.) Before the first clear preference, the cut
   being served is the one preferred, so a drop read from inside the band still counts
   as a turn away from it. Counting the preference, not the moves, keeps the
   memory fresh while the link flaps even when no move is made. An estimate averaged
   over a fast flap hovers between the two cuts, inside the band, crossing back and
   forth over their boundary: while it keeps crossing back to the cut the preference
   last turned away from, the flap goes on and no reversal lapses.
3. **Payback**, when the request rate is known: the latency saved over ``horizon_s``
   (``gain * rate * horizon_s``, request-seconds) must exceed ``switch_cost_s``.

The policy only keeps the timer of condition 2; it reads no clock (timestamps are
passed in), so it replays recorded or synthetic traces deterministically.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from models.planner import Option, Planner


class Decision(str, enum.Enum):
    STAY = "stay"
    SWITCH = "switch"


class Reason(str, enum.Enum):
    """Why the policy decided what it did."""

    CURRENT_IS_BEST = "current_is_best"
    GAIN_TOO_SMALL = "gain_too_small"
    DWELLING = "dwelling"
    NOT_WORTH_COST = "not_worth_cost"
    BETTER_CUT = "better_cut"


@dataclass(frozen=True)
class SwitchRule:
    """The knobs of the policy; see the module docstring for what each one guards."""

    min_gain_s: float = 0.002
    min_gain_fraction: float = 0.05
    dwell_s: float = 2.0
    min_estimates: int = 3
    horizon_s: float = 60.0
    flap_window_s: float = 20.0
    flap_backoff: float = 4.0
    fast_gain_fraction: float = 0.3
    fast_dwell_s: float = 0.2

    def __post_init__(self) -> None:
        if self.min_gain_s < 0 or not 0 <= self.min_gain_fraction < 1:
            raise ValueError("min_gain_s must be >= 0 and min_gain_fraction in [0, 1)")
        if self.dwell_s < 0 or self.min_estimates < 1 or self.horizon_s <= 0:
            raise ValueError("dwell_s must be >= 0, min_estimates >= 1 and horizon_s > 0")
        if self.flap_backoff < 1:
            raise ValueError("flap_backoff must be >= 1")


@dataclass(frozen=True)
class SwitchDecision:
    decision: Decision
    reason: Reason
    detail: str
    current: Option
    best: Option
    current_s: float
    best_s: float

    @property
    def target(self) -> Option:
        """Where to be after this decision."""
        return self.best if self.decision is Decision.SWITCH else self.current

    @property
    def current_cut(self) -> int:
        return self.current.cut

    @property
    def best_cut(self) -> int:
        return self.best.cut

    @property
    def target_cut(self) -> int:
        return self.target.cut

    @property
    def gain_s(self) -> float:
        return self.current_s - self.best_s


@dataclass
class _Pending:
    """An advantage over ``current`` that started at ``since_s``."""

    current: Option
    since_s: float
    estimates: int


class SwitchPolicy:
    """Decides, per bandwidth estimate, whether to leave the current cut."""

    def __init__(self, planner: Planner, *, rule: SwitchRule | None = None) -> None:
        self.planner = planner
        self.rule = rule or SwitchRule()
        self._pending: _Pending | None = None
        self._preferred: Option | None = None
        self._left: tuple[float, Option] | None = None  # (when, option) the last change left
        self._reversals: deque[float] = deque()  # times the preference went back
        self._crossed_back_s: float | None = None  # inside the band, back to the left cut

    def reset(self) -> None:
        self._pending = None

    def decide(
        self,
        *,
        current: int | Option,
        bandwidth_bps: float,
        now_s: float,
        rtt_s: float = 0.0,
        switch_cost_s: float = 0.0,
        request_rate: float | None = None,
    ) -> SwitchDecision:
        """One estimate in, one decision out. ``now_s`` is any monotonic clock;
        ``current``: the option served (a bare cut is its plain option)."""
        current = Option.of(current)
        choice = self.planner.best(bandwidth_bps, rtt_s)
        best = choice.option
        current_s = self.planner.latency_of(current, bandwidth_bps, rtt_s)

        def result(decision: Decision, reason: Reason, detail: str) -> SwitchDecision:
            return SwitchDecision(
                decision, reason, detail, current, best, current_s, choice.latency_s
            )

        gain = current_s - choice.latency_s
        needed = max(self.rule.min_gain_s, self.rule.min_gain_fraction * current_s)
        if gain <= 0 or gain >= needed:  # inside the band the estimate prefers nothing
            self._prefer(best if gain >= needed else current, current, now_s)
        elif self._left is not None and best == self._left[1]:
            self._crossed_back_s = now_s
        if best == current or gain <= 0:
            self._pending = None
            return result(Decision.STAY, Reason.CURRENT_IS_BEST, "current cut is the best")
        if gain < needed:
            self._pending = None
            return result(
                Decision.STAY,
                Reason.GAIN_TOO_SMALL,
                f"cut {best.label} gains {gain * 1e3:.2f} ms < {needed * 1e3:.2f} ms needed",
            )
        waited_s, estimates = self._hold(current, now_s)
        large = gain >= self.rule.fast_gain_fraction * current_s
        dwell_s = self._dwell_s(now_s, large=large)
        if waited_s < dwell_s or estimates < self.rule.min_estimates:
            return result(
                Decision.STAY,
                Reason.DWELLING,
                f"cut {best.label} has been better for {waited_s:.2f} s and {estimates} "
                f"estimates; need {dwell_s:.2f} s and {self.rule.min_estimates}",
            )
        if request_rate is not None:
            saving = gain * request_rate * self.rule.horizon_s
            if saving <= switch_cost_s:
                return result(
                    Decision.STAY,
                    Reason.NOT_WORTH_COST,
                    f"saves {saving:.3f} request-s over {self.rule.horizon_s:.0f} s, "
                    f"switch costs {switch_cost_s:.3f} s",
                )
        self._pending = None
        return result(
            Decision.SWITCH,
            Reason.BETTER_CUT,
            f"cut {best.label} beats cut {current.label} by {gain * 1e3:.2f} ms "
            f"at {bandwidth_bps / 1e6:.3g} mbit",
        )

    def _dwell_s(self, now_s: float, *, large: bool) -> float:
        """The rule's dwell (short for a large advantage); while the preference keeps
        reversing, the plain dwell grown ``flap_backoff`` times per reversal after the
        first."""
        rule = self.rule
        extra = max(0, self._recent_reversals(now_s) - 1)
        if extra == 0:
            return min(rule.fast_dwell_s, rule.dwell_s) if large else rule.dwell_s
        return min(rule.dwell_s * rule.flap_backoff**extra, max(rule.flap_window_s, rule.dwell_s))

    def _prefer(self, option: Option, current: Option, now_s: float) -> None:
        """Note the cut this estimate prefers (before any, the one being served was).
        Turning straight back to the cut the last change turned away from, within the
        flap window, is a reversal; a sweep through cuts (a drop read on its way down,
        A -> B -> C, and its recovery C -> B -> A) has one reversal, however many cuts it
        passes."""
        previous = current if self._preferred is None else self._preferred
        self._preferred = option
        if previous == option:
            return
        left = self._left
        if left is not None and left[1] == option and left[0] >= now_s - self.rule.flap_window_s:
            self._reversals.append(now_s)
        self._left = (now_s, previous)

    def _recent_reversals(self, now_s: float) -> int:
        """Reversals in the flap window; none lapses while the estimate, inside the band,
        still crosses back over the boundary of the last turn."""
        horizon_s = now_s - self.rule.flap_window_s
        if self._crossed_back_s is not None and self._crossed_back_s >= horizon_s:
            return len(self._reversals)
        while self._reversals and self._reversals[0] < horizon_s:
            self._reversals.popleft()
        return len(self._reversals)

    def _hold(self, current: Option, now_s: float) -> tuple[float, int]:
        """Extend (or start) the run of estimates in which leaving ``current`` paid."""
        pending = self._pending
        if pending is None or pending.current != current or now_s < pending.since_s:
            pending = self._pending = _Pending(current, now_s, 0)
        pending.estimates += 1
        return now_s - pending.since_s, pending.estimates


@dataclass(frozen=True)
class SwitchEvent:
    time_s: float
    source: Option
    target: Option
    bandwidth_bps: float

    @property
    def from_cut(self) -> int:
        return self.source.cut

    @property
    def to_cut(self) -> int:
        return self.target.cut


def replay(
    policy: SwitchPolicy,
    trace: Iterable[tuple[float, float]],
    *,
    start_cut: int | Option,
    rtt_s: float = 0.0,
    switch_cost_s: float = 0.0,
    request_rate: float | None = None,
) -> list[SwitchEvent]:
    """Run ``policy`` over ``(time_s, bandwidth_bps)`` samples, switching when it says so."""
    current = Option.of(start_cut)
    events = []
    for time_s, bandwidth_bps in trace:
        decision = policy.decide(
            current=current,
            bandwidth_bps=bandwidth_bps,
            now_s=time_s,
            rtt_s=rtt_s,
            switch_cost_s=switch_cost_s,
            request_rate=request_rate,
        )
        if decision.decision is Decision.SWITCH:
            events.append(SwitchEvent(time_s, current, decision.best, bandwidth_bps))
            current = decision.best
    return events
