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

from stepup.models import Elevation
from stepup.storage import keys
from stepup.storage.redis import RedisStore, dump_compact

# KEYS[1] the subject's index, KEYS[2] the active set, KEYS[3] the token's record, KEYS[4] its
# revoked marker; ARGV[1] jti, ARGV[2] exp, ARGV[3] now, ARGV[4] how long to keep the index,
# ARGV[5] the record, ARGV[6] its lifetime. `track` then `record_elevation` in one step, in
# that order (indexed before recorded); returns 1 if recorded, 0 if the jti was revoked.
# Its keys span several Cluster slots: used on a single Redis only.
TRACK_AND_RECORD = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if redis.call('EXISTS', KEYS[4]) == 1 then
  return 0
end
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6])
return 1
"""


class RedisElevationIndex:
    def __init__(self, client: aioredis.Redis | RedisCluster, store: RedisStore) -> None:
        self.redis = client
        self.store = store
        self._cluster = isinstance(client, RedisCluster)
        self._track_and_record = client.register_script(TRACK_AND_RECORD)

    async def track(self, subject: str, jti: str, exp: int, now: int, keep: int) -> None:
        index = keys.subject_elevations(subject)
        # Not a transaction: the two keys are in different slots; each command is atomic.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(index, {jti: exp})
            pipe.zremrangebyscore(index, "-inf", now)
            pipe.expire(index, max(1, keep))
            pipe.zadd(keys.active_elevations(), {jti: exp})
            await pipe.execute()

    async def track_and_record(
        self, subject: str, elevation: Elevation, ttl: int, now: int, keep: int
    ) -> bool:
        """`track`, then the store's `record_elevation`: False if the jti was revoked first.

        On a single Redis one script (one round trip instead of two, the order kept, and
        atomic besides); on a Cluster the keys span slots, so the two steps as before."""
        jti = elevation.jti
        if self._cluster:
            await self.track(subject, jti, elevation.exp, now, keep)
            return await self.store.record_elevation(elevation, ttl)
        recorded = await self.store.run_script(
            self._track_and_record,
            [
                keys.subject_elevations(subject),
                keys.active_elevations(),
                keys.elevation(jti),
                keys.elevation_revoked(jti),
            ],
            [jti, elevation.exp, now, max(1, keep), dump_compact(elevation), max(1, ttl)],
        )
        return bool(recorded)

    async def untrack(self, jti: str) -> None:
        await self.store.execute("ZREM", keys.active_elevations(), jti)

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
