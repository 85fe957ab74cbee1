"""An operator's manual switch pins the cut: the controller's own decisions wait until the
operator unpins it, or until the hold time given with the switch has passed. What is
pinned is a planner option: the cut, and the codec its crossing tensor is sent with."""

from __future__ import annotations

import time
from dataclasses import dataclass

from models.planner import Option


@dataclass(frozen=True)
class Pin:
    option: Option
    since_unix: float
    until_unix: float | None  # None: until the operator unpins

    @classmethod
    def hold(cls, option: Option, hold_s: float | None) -> Pin:
        now = time.time()
        return cls(option, now, None if hold_s is None else now + hold_s)

    def expired(self, now_unix: float | None = None) -> bool:
        now = time.time() if now_unix is None else now_unix
        return self.until_unix is not None and now >= self.until_unix

    def describe(self) -> dict[str, object]:
        return {
            "cut": self.option.cut,
            "codec": self.option.codec,
            "since_unix": self.since_unix,
            "until_unix": self.until_unix,
            "left_s": None if self.until_unix is None else max(0.0, self.until_unix - time.time()),
        }
