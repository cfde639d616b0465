"""Which elevated tokens each subject holds, so an operator can end them all at once, and
how many are unexpired overall (the active-elevations gauge).

A token's record lives under its own `{jti}` tag; the per-subject index under the subject's
`{s:…}` tag: no script can hold both in one Redis Cluster slot. The exchange therefore adds
the jti to the index *before* it records the token, and revoke-all writes each jti's revoked
marker (which the recording script checks): of a racing issue and revoke-all, either the
revoke sees the jti or the record is refused.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from stepup.storage import keys
from stepup.storage.redis import RedisStore


class RedisElevationIndex:
    def __init__(self, client: aioredis.Redis | RedisCluster, store: RedisStore) -> None:
        self.redis = client
        self.store = store

    async def track(self, subject: str, jti: str, exp: int, now: int, keep: int) -> None:
        index = keys.subject_elevations(subject)
        # Not a transaction: the two keys are in different slots; each command is atomic.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(index, {jti: exp})
            pipe.zremrangebyscore(index, "-inf", now)
            pipe.expire(index, max(1, keep))
            pipe.zadd(keys.active_elevations(), {jti: exp})
            await pipe.execute()

    async def untrack(self, jti: str) -> None:
        await self.redis.zrem(keys.active_elevations(), jti)

    async def held(self, subject: str, now: int) -> list[tuple[str, int]]:
        found: Any = await self.redis.zrangebyscore(
            keys.subject_elevations(subject), f"({now}", "+inf", withscores=True
        )
        return [(_text(jti), int(exp)) for jti, exp in found]

    async def revoke_all(self, subject: str, now: int, remember: int) -> int:
        """Ends every unexpired elevation of the subject; returns how many were live."""
        ended = 0
        for jti, _exp in await self.held(subject, now):
            if await self.store.revoke_elevation(jti, remember):
                ended += 1
            await self.untrack(jti)
        return ended

    async def active(self, now: int) -> int:
        index = keys.active_elevations()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(index, "-inf", now)
            pipe.zcard(index)
            _, count = await pipe.execute()
        return int(count)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
