"""Time as an injected dependency, so tests can stand at exp-1, exp and exp+1."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FrozenClock:
    """A clock that moves only when told to (tests, benchmarks)."""

    def __init__(self, start: float = 1_900_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def set(self, when: float) -> None:
        self._now = when

    def advance(self, seconds: float) -> None:
        self._now += seconds
