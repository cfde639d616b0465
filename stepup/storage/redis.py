"""The Redis store: the only module that talks to Redis.

Each one-time thing is consumed by a single atomic command (GETDEL) or a Lua script,
never by a read followed by a write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.typing import EncodableT

from stepup import models
from stepup.models import Elevation, Factor, Grant, RecentStepUp
from stepup.storage import keys
from stepup.storage.multiplex import Multiplexed

T = TypeVar("T")

# What the web layer catches to fail closed (503) when Redis cannot answer.
STORAGE_ERRORS: tuple[type[Exception], ...] = (redis.exceptions.RedisError,)

# KEYS[1] the code, KEYS[2] its spent marker; ARGV[1] the jti the redemption will issue,
# ARGV[2] how long to remember the marker. Returns the grant, or {false, spent jti} on replay.
REDEEM_CODE = """
local grant = redis.call('GETDEL', KEYS[1])
if grant then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  return {grant, false}
end
return {false, redis.call('GET', KEYS[2])}
"""

# As REDEEM_CODE, with KEYS[3] the subject's disabled flag; returns {grant, spent, disabled}.
# Its keys span two Cluster slots: used on a single Redis only.
REDEEM_CODE_OF = """
local disabled = redis.call('EXISTS', KEYS[3])
local grant = redis.call('GETDEL', KEYS[1])
if grant then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  return {grant, false, disabled}
end
return {false, redis.call('GET', KEYS[2]), disabled}
"""

# KEYS[1] the last accepted time step of a TOTP factor; ARGV[1] the step now presented,
# ARGV[2] the marker's lifetime. A step is accepted once, and never one older than the last.
CLAIM_STEP = """
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# KEYS[1] a binding; ARGV[1] the value that would take it, ARGV[2] its lifetime.
# The first value to arrive is kept; every caller gets the value kept.
BIND_ONCE = """
local bound = redis.call('GET', KEYS[1])
if bound then
  return bound
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""

# KEYS[1] the subject's throttle hash; ARGV[1] now, ARGV[2] free attempts, ARGV[3] base delay,
# ARGV[4] max delay, ARGV[5] max failures, ARGV[6] lockout seconds.
# Counts one failure and returns {failures, blocked_until}: waits grow 2^n after the free attempts.
RECORD_FAILURE = """
local now = tonumber(ARGV[1])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local until_ = 0
if failures >= tonumber(ARGV[5]) then
  until_ = now + tonumber(ARGV[6])
elseif failures > tonumber(ARGV[2]) then
  local delay = tonumber(ARGV[3]) * 2 ^ (failures - tonumber(ARGV[2]) - 1)
  until_ = now + math.min(delay, tonumber(ARGV[4]))
end
redis.call('HSET', KEYS[1], 'until', until_)
redis.call('EXPIRE', KEYS[1], ARGV[6])
return {failures, until_}
"""


# KEYS[1] the subject's factors; ARGV[1] factor id, ARGV[2] the record.
# Adds the factor only while the subject has none, so two racing first enrolments cannot both win.
ADD_FIRST_FACTOR = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


# KEYS[1] the subject's factors; ARGV[1] factor id, ARGV[2] the record.
# Rewrites a factor only if it still exists: a factor removed meanwhile stays removed.
UPDATE_FACTOR = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


# KEYS[1] a credential's signature counter; ARGV[1] the counter the authenticator just sent.
# WebAuthn §6.1.1: a counter must grow; one that does not may mean a cloned authenticator.
# Both zero means the authenticator keeps no counter (common for synced passkeys).
ADVANCE_SIGN_COUNT = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local seen = tonumber(ARGV[1])
if seen > last or (seen == 0 and last == 0) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


# KEYS[1] the subject's factors, KEYS[2] its recovery code digests; ARGV[1] the recovery
# factor's id, ARGV[2] its record, ARGV[3..] the new digests. A new set voids the old one
# in the same step, so no moment exists with both or neither.
REPLACE_RECOVERY_CODES = """
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.find(all[i], '^recovery%-') then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('SADD', KEYS[2], unpack(ARGV, 3))
return 1
"""


# KEYS[1] the subject's factors, KEYS[2..] keys that belong to the factor (counters, codes).
# ARGV[1] the factor id. Removes the factor and everything kept for it.
REMOVE_FACTOR = """
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 and #KEYS > 1 then
  redis.call('DEL', unpack(KEYS, 2))
end
return removed
"""


# KEYS[1] the elevated token's record, KEYS[2] its revoked marker; ARGV[1] the record,
# ARGV[2] its lifetime. Records the token unless the jti was revoked first.
RECORD_ELEVATION = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# KEYS[1] the record, KEYS[2] the revoked marker; ARGV[1] how long to keep the marker.
REVOKE_FOREVER = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
return redis.call('DEL', KEYS[1])
"""


def dump_compact(record: object) -> bytes:
    """A record without the fields that hold their default (None, False): every elevated
    token is kept for its whole life, and these made up a sixth of its bytes. Reading fills
    the defaults back in (models.load), so old and new records read alike."""
    data = {
        f.name: getattr(record, f.name)
        for f in dataclasses.fields(record)  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING or getattr(record, f.name) != f.default
    }
    return orjson.dumps(data)


# A command as it goes to Redis ("GET", key) -> its raw reply (no redis-py response callback
# is relied on, so both paths below answer alike).
Execute = Callable[..., Awaitable[Any]]


def command_path(client: aioredis.Redis | RedisCluster) -> tuple[Execute, Multiplexed | None]:
    """How the hot commands reach Redis: a single Redis over one shared multiplexed connection
    (multiplex.py), a Cluster or TLS through redis-py's execute_command."""
    multiplexed = None if isinstance(client, RedisCluster) else Multiplexed.for_client(client)
    if multiplexed is not None:
        return multiplexed.execute, multiplexed
    return client.execute_command, None


async def run_script(
    execute: Execute, script: AsyncScript, keys: Sequence[str], args: Sequence[EncodableT]
) -> Any:
    """A registered script by EVALSHA; on NOSCRIPT (a restarted or failed-over Redis) loaded
    again through redis-py, as its Script.__call__ does."""
    try:
        return await execute("EVALSHA", script.sha, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return await script(keys=keys, args=args)


def connect(url: str) -> aioredis.Redis | RedisCluster:
    timeouts: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        return RedisCluster.from_url(url.replace("+cluster", "", 1), **timeouts)
    return aioredis.Redis.from_url(url, **timeouts)


class RedisStore:
    def __init__(self, client: aioredis.Redis | RedisCluster) -> None:
        self.redis = client
        self._cluster = isinstance(client, RedisCluster)
        self.execute, self._multiplexed = command_path(client)
        self._redeem = client.register_script(REDEEM_CODE)
        self._redeem_of = client.register_script(REDEEM_CODE_OF)
        self._claim_step = client.register_script(CLAIM_STEP)
        self._bind_once = client.register_script(BIND_ONCE)
        self._record_failure = client.register_script(RECORD_FAILURE)
        self._add_first_factor = client.register_script(ADD_FIRST_FACTOR)
        self._update_factor = client.register_script(UPDATE_FACTOR)
        self._record_elevation = client.register_script(RECORD_ELEVATION)
        self._revoke_forever = client.register_script(REVOKE_FOREVER)
        self._advance_sign_count = client.register_script(ADVANCE_SIGN_COUNT)
        self._replace_recovery = client.register_script(REPLACE_RECOVERY_CODES)
        self._remove_factor = client.register_script(REMOVE_FACTOR)

    async def close(self) -> None:
        if self._multiplexed is not None:
            await self._multiplexed.close()
        await self.redis.aclose()

    async def run_script(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[EncodableT]
    ) -> Any:
        return await run_script(self.execute, script, keys, args)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # -- short-lived records --------------------------------------------------------------

    async def put(self, key: str, record: object, ttl: int) -> None:
        await self.execute("SET", key, models.dump(record), "EX", max(1, ttl))

    async def get(self, key: str, cls: type[T]) -> T | None:
        raw = await self.execute("GET", key)
        return None if raw is None else models.load(cls, raw)

    async def take(self, key: str, cls: type[T]) -> T | None:
        raw = await self.execute("GETDEL", key)
        return None if raw is None else models.load(cls, raw)

    async def delete(self, key: str) -> bool:
        return bool(await self.execute("DEL", key))

    async def claim_once(self, key: str, ttl: int) -> bool:
        """True for the first claim of `key` within `ttl` seconds: one SET NX EX, atomic
        across every instance on this Redis."""
        return bool(await self.execute("SET", key, b"1", "NX", "EX", max(1, ttl)))

    async def bind_once(self, key: str, value: str, ttl: int) -> str:
        """The value `key` is bound to: `value` if this call bound it first (for `ttl`
        seconds), else the one bound before; of racing callers exactly one binds."""
        bound = await self.run_script(self._bind_once, [key], [value, max(1, ttl)])
        return bound.decode() if isinstance(bound, bytes) else str(bound)

    # -- authorization codes --------------------------------------------------------------

    async def redeem_code(
        self, code: str, jti: str, remember: int
    ) -> tuple[Grant | None, str | None]:
        """Consume a code. Returns (grant, None), or (None, jti it produced) on replay."""
        grant, spent = await self.run_script(
            self._redeem, [keys.code(code), keys.code_spent(code)], [jti, remember]
        )
        if grant:
            return models.load(Grant, grant), None
        return None, spent.decode() if spent else None

    async def redeem_code_of(
        self, code: str, jti: str, remember: int, subject: str
    ) -> tuple[Grant | None, str | None, bool]:
        """redeem_code, and whether `subject` is disabled, in one round trip where possible.

        The code's keys and the subject's flag live in different Cluster slots: on a cluster
        these stay two commands. On a single Redis one script does both (a redis-py pipeline
        was tried and cost more CPU than the round trip it saved)."""
        if self._cluster:
            grant, spent = await self.redeem_code(code, jti, remember)
            return grant, spent, await self.is_disabled(subject)
        found, spent, disabled = await self.run_script(
            self._redeem_of,
            [keys.code(code), keys.code_spent(code), keys.disabled(subject)],
            [jti, remember],
        )
        if found:
            return models.load(Grant, found), None, bool(disabled)
        return None, spent.decode() if spent else None, bool(disabled)

    # -- elevated tokens ------------------------------------------------------------------

    async def record_elevation(self, elevation: Elevation, ttl: int) -> bool:
        jti = elevation.jti
        recorded = await self.run_script(
            self._record_elevation,
            [keys.elevation(jti), keys.elevation_revoked(jti)],
            [dump_compact(elevation), max(1, ttl)],
        )
        return bool(recorded)

    async def elevation(self, jti: str) -> Elevation | None:
        return await self.get(keys.elevation(jti), Elevation)

    async def elevation_record(self, jti: str) -> bytes | None:
        """The token's record as stored (introspection reads it through its answers)."""
        raw = await self.execute("GET", keys.elevation(jti))
        return None if raw is None else bytes(raw)

    async def take_elevation_record(self, jti: str) -> bytes | None:
        """The record as stored, removed in the same step (a single-use token's one read)."""
        raw = await self.execute("GETDEL", keys.elevation(jti))
        return None if raw is None else bytes(raw)

    async def consume_elevation(self, jti: str) -> Elevation | None:
        return await self.take(keys.elevation(jti), Elevation)

    async def revoke_elevation(self, jti: str, remember: int = 0) -> bool:
        """Ends a token; with `remember`, also refuses to record that jti for that long."""
        if not remember:
            return await self.delete(keys.elevation(jti))
        deleted = await self.run_script(
            self._revoke_forever, [keys.elevation(jti), keys.elevation_revoked(jti)], [remember]
        )
        return bool(deleted)

    # -- factors (durable) ----------------------------------------------------------------

    async def factors(self, subject: str) -> list[Factor]:
        # One round trip: the factor records and how many recovery codes are left.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.factors(subject))
            pipe.scard(keys.recovery_codes(subject))
            raw, remaining = await pipe.execute()
        found = [models.load(Factor, value) for value in raw.values()]
        for factor in found:
            if factor.kind == "recovery":
                factor.data["remaining"] = int(remaining)
        return sorted(found, key=lambda f: (f.created_at, f.id))

    async def remove_factor(self, subject: str, factor: Factor) -> bool:
        """Removes a factor with its counter, last TOTP step or recovery codes."""
        owned = {
            "webauthn": [keys.sign_count(subject, factor.id)],
            "totp": [keys.totp_last_step(subject, factor.id)],
            "recovery": [keys.recovery_codes(subject)],
        }.get(factor.kind, [])
        removed = await self.run_script(
            self._remove_factor, [keys.factors(subject), *owned], [factor.id]
        )
        return bool(removed)

    async def advance_sign_count(self, subject: str, factor_id: str, seen: int) -> bool:
        key = keys.sign_count(subject, factor_id)
        return bool(await self.run_script(self._advance_sign_count, [key], [seen]))

    async def replace_recovery_codes(
        self, subject: str, factor: Factor, digests: list[str]
    ) -> None:
        await self.run_script(
            self._replace_recovery,
            [keys.factors(subject), keys.recovery_codes(subject)],
            [factor.id, models.dump(factor), *digests],
        )

    async def use_recovery_code(self, subject: str, digest: str) -> bool:
        # SREM is one atomic command: of two racing uses of one code, exactly one removes it.
        return bool(await self.execute("SREM", keys.recovery_codes(subject), digest))

    async def save_factor(self, subject: str, factor: Factor) -> None:
        await self.execute("HSET", keys.factors(subject), factor.id, models.dump(factor))

    async def add_first_factor(self, subject: str, factor: Factor) -> bool:
        """Adds a factor only while the subject has none (two racing enrolments: one wins)."""
        added = await self.run_script(
            self._add_first_factor, [keys.factors(subject)], [factor.id, models.dump(factor)]
        )
        return bool(added)

    async def update_factor(self, subject: str, factor: Factor) -> bool:
        updated = await self.run_script(
            self._update_factor, [keys.factors(subject)], [factor.id, models.dump(factor)]
        )
        return bool(updated)

    async def is_disabled(self, subject: str) -> bool:
        return bool(await self.execute("EXISTS", keys.disabled(subject)))

    async def set_disabled(self, subject: str, disabled: bool) -> None:
        if disabled:
            await self.execute("SET", keys.disabled(subject), "1")
        else:
            await self.execute("DEL", keys.disabled(subject))

    async def claim_totp_step(self, subject: str, factor_id: str, step: int, ttl: int) -> bool:
        key = keys.totp_last_step(subject, factor_id)
        return bool(await self.run_script(self._claim_step, [key], [step, ttl]))

    # -- throttling -----------------------------------------------------------------------

    async def blocked_until(self, subject: str) -> float:
        value = await self.execute("HGET", keys.throttle(subject), "until")
        return float(value) if value else 0.0

    async def record_failure(
        self, subject: str, now: int, free: int, base: int, cap: int, limit: int, lockout: int
    ) -> tuple[int, float]:
        failures, until = await self.run_script(
            self._record_failure, [keys.throttle(subject)], [now, free, base, cap, limit, lockout]
        )
        return int(failures), float(until)

    async def clear_failures(self, subject: str) -> None:
        await self.execute("DEL", keys.throttle(subject))

    # -- recently proven step-ups -----------------------------------------------------------

    async def remember_stepup(
        self, subject: str, client_id: str, recent: RecentStepUp, ttl: int
    ) -> None:
        key = keys.recent_stepup(subject, client_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, recent.acr, models.dump(recent))
            pipe.expire(key, max(1, ttl))
            await pipe.execute()

    async def recent_stepups(self, subject: str, client_id: str) -> list[RecentStepUp]:
        raw = await self.redis.hgetall(keys.recent_stepup(subject, client_id))
        return [models.load(RecentStepUp, value) for value in raw.values()]
