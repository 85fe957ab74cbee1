"""The three ways to move from one cut to another, as DESIGN.md defines them.

Each strategy gets the controller (pipelines, launcher, gateway client) and a target
cut, and returns a ``SwitchRecord`` with what it measured. Every strategy starts the
new pipeline before it drains the old one, except pause_resume, whose point is that
it does not.
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from controller.pipelines import PipelineState
from controller.settings import StrategyName
from neukonfig.errors import NeukonfigError

if TYPE_CHECKING:
    from controller.core import Controller


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
    downtime_s: float | None = None  # gateway-measured unavailability
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "outcome": self.outcome.value}


class _Clock:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


async def pause_resume(controller: Controller, target: int, record: SwitchRecord) -> None:
    """Stop serving, tear the old pipeline down, start the new one, resume."""
    clock = _Clock()
    old = controller.active
    await controller.gateway.switch(None, strategy=StrategyName.PAUSE_RESUME.value)
    if old is not None:
        await controller.retire(old)
    try:
        new = await controller.launch(target)
    except NeukonfigError:
        if old is not None:  # the baseline still has to come back: restart the old cut
            restored = await controller.launch(old.cut)
            await controller.activate(restored, StrategyName.PAUSE_RESUME.value)
        raise
    record.ready_after_s = clock.elapsed()
    outcome = await controller.activate(new, StrategyName.PAUSE_RESUME.value)
    record.switched_after_s = clock.elapsed()
    record.downtime_s = outcome.downtime_seconds


async def switch_on_demand(controller: Controller, target: int, record: SwitchRecord) -> None:
    """Start the new pipeline beside the old one; when ready, flip, drain and stop the old."""
    clock = _Clock()
    new = await controller.launch(target)
    record.ready_after_s = clock.elapsed()
    old = controller.active
    outcome = await controller.activate(new, StrategyName.SWITCH_ON_DEMAND.value)
    record.switched_after_s = clock.elapsed()
    record.downtime_s = outcome.downtime_seconds
    if old is not None:
        # Drained in the background: on a saturated link the old pipeline's queue can
        # take many seconds to empty, and the next switch must not wait for it.
        controller.retire_later(old)


async def switch_standby(controller: Controller, target: int, record: SwitchRecord) -> None:
    """Flip to a warm pipeline (starting one first only if none is warm for the target)."""
    clock = _Clock()
    new = controller.standby_for(target) or await controller.launch(target)
    record.ready_after_s = clock.elapsed()
    old = controller.active
    outcome = await controller.activate(new, StrategyName.SWITCH_STANDBY.value)
    record.switched_after_s = clock.elapsed()
    record.downtime_s = outcome.downtime_seconds
    if old is not None:
        old.state = PipelineState.STANDBY  # kept warm; the standby policy trims extras
    await controller.refresh_standby()


STRATEGIES = {
    StrategyName.PAUSE_RESUME: pause_resume,
    StrategyName.SWITCH_ON_DEMAND: switch_on_demand,
    StrategyName.SWITCH_STANDBY: switch_standby,
}

__all__ = ["STRATEGIES", "Outcome", "SwitchRecord"]
