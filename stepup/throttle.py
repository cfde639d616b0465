"""Throttling of factor attempts per subject, counted atomically in Redis.

After `free_attempts` failures each further failure doubles the wait; at `max_failures`
the subject is locked out for `lockout` seconds. A success clears the count; starting a
new challenge does not. While blocked, even a correct code fails with the same message.
"""

from __future__ import annotations

import math

from stepup.clock import Clock
from stepup.config import Throttle as ThrottleSettings
from stepup.storage.base import Store


class Throttle:
    def __init__(self, store: Store, settings: ThrottleSettings, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock

    async def wait(self, subject: str) -> int:
        """Seconds before the subject may try again (0: now)."""
        until = await self._store.blocked_until(subject)
        return max(0, math.ceil(until - self._clock.now()))

    async def failed(self, subject: str) -> int:
        s = self._settings
        _, until = await self._store.record_failure(
            subject,
            int(self._clock.now()),
            s.free_attempts,
            s.base_delay,
            s.max_delay,
            s.max_failures,
            s.lockout,
        )
        return max(0, math.ceil(until - self._clock.now()))

    async def succeeded(self, subject: str) -> None:
        await self._store.clear_failures(subject)
