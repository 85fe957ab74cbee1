"""What the controller remembers of each switch: one ``SwitchRecord`` per attempt.

A record enters the history when a switch begins (``IN_PROGRESS``), so ``/v1/history``
shows a switch while it runs, and is finished exactly once, with the outcome and the
times measured on the way.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass


class Outcome(str, enum.Enum):
    IN_PROGRESS = "in_progress"
    SWITCHED = "switched"
    ABANDONED = "abandoned"  # the new pipeline failed to start; the old one kept serving


@dataclass
class SwitchRecord:
    strategy: str
    from_cut: int | None
    to_cut: int
    reason: str
    trigger_unix: float
    outcome: Outcome = Outcome.IN_PROGRESS
    ready_after_s: float | None = None  # trigger -> new pipeline ready
    switched_after_s: float | None = None  # trigger -> routing pointer on the new pipeline
    # Admission unavailability, measured by the gateway: how long the routing pointer was
    # empty, so that an arriving request could not be admitted at once. 0.0 when it never
    # was (a flip between two ready pipelines); pause_resume's pause otherwise.
    unavailable_s: float | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.outcome is not Outcome.IN_PROGRESS

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "outcome": self.outcome.value}

    def describe(self) -> str:
        """One line for people: what happened and what it cost."""
        line = f"switch {self.from_cut} -> {self.to_cut} ({self.strategy}): {self.outcome.value}"
        if self.outcome is Outcome.ABANDONED:
            return f"{line}: {self.error}"
        if self.ready_after_s is not None:
            line += f", new pipeline ready after {self.ready_after_s:.2f} s"
        if self.unavailable_s is not None:
            line += f", admission unavailable {format_unavailability(self.unavailable_s)}"
        return line


def format_unavailability(seconds: float) -> str:
    if seconds == 0:
        return "0 (the pointer is never empty)"
    return f"{seconds:.3f} s"
