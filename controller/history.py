"""What the controller remembers of each switch: one ``SwitchRecord`` per attempt.

A record enters the history when a switch begins (``IN_PROGRESS``), so ``/v1/history``
shows a switch while it runs, and is finished exactly once, with the outcome and the
times measured on the way. Finished records are kept in a ``SwitchJournal`` in the
state directory, so a restarted controller still shows what happened before it.
"""

from __future__ import annotations

import enum
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from models.planner import option_label

log = logging.getLogger("neukonfig.controller")


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
    warm: bool | None = None  # the target was already running, as a standby
    # The codecs the old and new pipelines' edges send the crossing tensor with
    # (neukonfig.codecs); "none" unless the controller plans with a codec budget.
    from_codec: str | None = None
    to_codec: str = "none"

    @property
    def finished(self) -> bool:
        return self.outcome is not Outcome.IN_PROGRESS

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "outcome": self.outcome.value}

    def describe(self) -> str:
        """One line for people: what happened and what it cost."""
        source = self.from_cut
        if self.from_cut is not None:
            source = option_label(self.from_cut, self.from_codec or "none")
        target = option_label(self.to_cut, self.to_codec)
        line = f"switch {source} -> {target} ({self.strategy}): {self.outcome.value}"
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


class SwitchJournal:
    """Finished switch records, one JSON line each, in ``path``: appended as each switch
    finishes, read back when the controller starts. The file is rewritten with the newest
    ``keep`` once it holds twice that many, so it never grows without bound. A line the
    controller was killed in the middle of writing, or one from another version, is
    skipped with a warning: the journal is a record for people, not the controller's state
    (that is the backend's records and the gateway's routing)."""

    def __init__(self, path: Path, *, keep: int) -> None:
        self.path = path
        self.keep = keep
        self._lines = 0

    def load(self) -> list[SwitchRecord]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:  # unreadable, or not text at all
            log.warning("switch history %s unreadable (%s); starting without it", self.path, error)
            return []
        self._lines = len(lines)
        return [r for r in (self._parse(line) for line in lines[-self.keep :]) if r]

    def append(self, record: SwitchRecord) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps(record.as_dict()).encode() + b"\n"
            with self.path.open("a+b") as journal:
                if journal.seek(0, os.SEEK_END) > 0:
                    journal.seek(-1, os.SEEK_END)
                    if journal.read(1) != b"\n":  # a line torn by a kill: end it first
                        line = b"\n" + line
                journal.write(line)
            self._lines += 1
            if self._lines >= 2 * self.keep:
                self._rewrite(self.load())
        except OSError as error:
            log.warning("switch history %s not written (%s)", self.path, error)

    def _rewrite(self, records: Iterable[SwitchRecord]) -> None:
        temporary = self.path.with_suffix(".tmp")
        lines = [json.dumps(r.as_dict()) + "\n" for r in records]
        temporary.write_text("".join(lines), encoding="utf-8")
        os.replace(temporary, self.path)  # atomic: a crash leaves the old file or the new
        self._lines = len(lines)

    def _parse(self, line: str) -> SwitchRecord | None:
        try:
            values = json.loads(line)
            known = {f.name for f in fields(SwitchRecord)}
            record = SwitchRecord(**{k: v for k, v in values.items() if k in known})
            record.outcome = Outcome(record.outcome)
            return record
        except (ValueError, TypeError, AttributeError) as error:
            log.warning("skipping a line of %s that is not a switch record: %s", self.path, error)
            return None
