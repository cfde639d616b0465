"""The audit trail: one structured event per decision. Never a secret, code or token."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from stepup.clock import Clock

_log = logging.getLogger("stepup.audit")


class Audit:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def record(self, event: str, outcome: str, **fields: Any) -> None:
        entry = {"time": round(self._clock.now(), 3), "event": event, "outcome": outcome}
        entry.update({k: v for k, v in fields.items() if v is not None})
        _log.info(orjson.dumps(entry).decode())
