"""What a factor kind must declare: which levels it meets and what it puts in `amr`."""

from __future__ import annotations

from typing import Protocol

from stepup.config import Level
from stepup.models import Factor


class FactorKind(Protocol):
    kind: str

    def meets(self, factor: Factor, level: Level) -> bool: ...

    def amr(self, factor: Factor) -> list[str]: ...
