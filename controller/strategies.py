"""The three ways to move from one cut to another, as DESIGN.md defines them.

Each strategy gets the narrow ``PipelineTable`` it needs (start, point at, retire
pipelines), not the whole controller, and fills in the ``SwitchRecord`` it is given.
Every strategy starts the new pipeline before it drains the old one, except
pause_resume, whose point is that it does not. A target is a planner ``Option``: a cut,
and the codec its crossing tensor is sent with (changing either is a new pipeline).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from controller.gateway_client import SwitchOutcome
from controller.history import SwitchRecord
from controller.pipelines import ManagedPipeline
from controller.settings import StrategyName
from models.planner import Option
from neukonfig.errors import NeukonfigError


class PipelineTable(Protocol):
    """What a strategy may do to the controller's pipelines."""

    @property
    def active(self) -> ManagedPipeline | None: ...

    async def pause(self) -> None:
        """Point the gateway at nothing: arriving requests wait."""

    async def launch(self, option: Option, *, replaces_active: bool = False) -> ManagedPipeline:
        """Start a pipeline for ``option`` and register it (not active). ``replaces_active``:
        the active one goes once this serves, so the two overlap only for a drain."""

    async def activate(self, pipeline: ManagedPipeline, strategy: str) -> SwitchOutcome:
        """Flip the routing pointer to ``pipeline``."""

    async def retire(self, pipeline: ManagedPipeline) -> None:
        """Drain and stop ``pipeline`` now."""

    def retire_later(self, pipeline: ManagedPipeline) -> None:
        """Drain and stop ``pipeline`` in the background."""

    def standby_for(self, option: Option) -> ManagedPipeline | None:
        """A warm pipeline for ``option``, if one is kept."""


Strategy = Callable[[PipelineTable, Option, SwitchRecord], Awaitable[None]]


class _Clock:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


async def pause_resume(table: PipelineTable, target: Option, record: SwitchRecord) -> None:
    """Stop serving, tear the old pipeline down, start the new one, resume."""
    clock = _Clock()
    old = table.active
    await table.pause()
    if old is not None:
        await table.retire(old)
    try:
        new = await table.launch(target)
    except NeukonfigError:
        if old is not None:  # the baseline still has to come back: restart the old cut
            restored = await table.launch(old.option)
            await table.activate(restored, StrategyName.PAUSE_RESUME.value)
        raise
    record.ready_after_s = clock.elapsed()
    outcome = await table.activate(new, StrategyName.PAUSE_RESUME.value)
    record.switched_after_s = clock.elapsed()
    record.unavailable_s = outcome.unavailable_seconds


async def switch_on_demand(table: PipelineTable, target: Option, record: SwitchRecord) -> None:
    """Start the new pipeline beside the old one; when ready, flip, drain and stop the old."""
    clock = _Clock()
    record.warm = False
    new = await table.launch(target, replaces_active=True)
    record.ready_after_s = clock.elapsed()
    old = table.active
    outcome = await table.activate(new, StrategyName.SWITCH_ON_DEMAND.value)
    record.switched_after_s = clock.elapsed()
    record.unavailable_s = outcome.unavailable_seconds
    if old is not None:
        # Drained in the background: on a saturated link the old pipeline's queue can
        # take many seconds to empty, and the next switch must not wait for it.
        table.retire_later(old)


async def switch_standby(table: PipelineTable, target: Option, record: SwitchRecord) -> None:
    """Flip to a warm pipeline (starting one first only if none is warm for the target);
    the old one stays warm as a standby. The controller refreshes the standbys once this
    switch is recorded as done."""
    clock = _Clock()
    standby = table.standby_for(target)
    record.warm = standby is not None
    new = standby or await table.launch(target)
    record.ready_after_s = clock.elapsed()
    outcome = await table.activate(new, StrategyName.SWITCH_STANDBY.value)
    record.switched_after_s = clock.elapsed()
    record.unavailable_s = outcome.unavailable_seconds


STRATEGIES: dict[StrategyName, Strategy] = {
    StrategyName.PAUSE_RESUME: pause_resume,
    StrategyName.SWITCH_ON_DEMAND: switch_on_demand,
    StrategyName.SWITCH_STANDBY: switch_standby,
}

__all__ = ["STRATEGIES", "PipelineTable", "Strategy"]
