"""The audit chain's Redis side: a Stream of entries, the MAC of the newest one (the head),
and the anchor left where retention trimmed the stream. All three keys share the `{audit}`
hash tag, so each script below runs in one Redis Cluster slot.

The MACs are computed in Python (Redis Lua has no SHA-256); the append script is a
compare-and-set on the head, so several stepup processes extend one chain without a fork, and
a turn key (with the claim script) keeps one busy writer from shutting the others out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from stepup.audit import Link, Refusal
from stepup.storage import keys
from stepup.storage.redis import Execute, run_script

# KEYS[1] the stream, KEYS[2] the head, KEYS[3] the turn; ARGV[1] the head the links were
# chained onto, ARGV[2] the writer's clock in ms, ARGV[3] the writer's id, ARGV[4] how long a
# turn lasts in ms, ARGV[5..] (body, prev, mac, kid) per entry.
# Appends only if the head is still ARGV[1] and no other writer has the turn; returns false,
# or the head found instead and whether the turn is now this writer's. A writer refused for a
# stale head takes the turn when it is free: until it has appended (or the turn lapses), the
# others are refused, so its retry, chained onto the head it was given, goes in. Without it
# a writer appending often kept another's retries out indefinitely.
# Entry ids take the writer's (injected) clock, kept increasing past the newest entry.
APPEND = """
local head = redis.call('GET', KEYS[2]) or ''
local turn = redis.call('GET', KEYS[3])
if head ~= ARGV[1] or (turn and turn ~= ARGV[3]) then
  if not turn then
    redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
    turn = ARGV[3]
  end
  return {head, turn == ARGV[3] and 1 or 0}
end
local ms, seq = tonumber(ARGV[2]), 0
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if newest then
  local last_ms, last_seq = string.match(newest[1], '^(%d+)%-(%d+)$')
  last_ms, last_seq = tonumber(last_ms), tonumber(last_seq)
  if ms <= last_ms then
    ms, seq = last_ms, last_seq + 1
  end
end
local mac = head
for i = 5, #ARGV, 4 do
  redis.call('XADD', KEYS[1], string.format('%d-%d', ms, seq),
    'body', ARGV[i], 'prev', ARGV[i + 1], 'mac', ARGV[i + 2], 'kid', ARGV[i + 3])
  seq = seq + 1
  mac = ARGV[i + 2]
end
redis.call('SET', KEYS[2], mac)
if turn then
  redis.call('DEL', KEYS[3])
end
return false
"""

# KEYS[1] the head, KEYS[2] the turn; ARGV[1] the writer's id, ARGV[2] how long a turn lasts
# in ms. The turn for this writer, unless another has it: returns the head to chain onto, or
# false while another writer has the turn. A writer that found the chain contended asks for
# the turn before it sends a batch, so a refusal costs a small call instead of the batch.
CLAIM = """
local turn = redis.call('GET', KEYS[2])
if turn and turn ~= ARGV[1] then
  return false
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return redis.call('GET', KEYS[1]) or ''
"""

# KEYS[1] the stream, KEYS[2] the anchor; ARGV[1] the oldest id (ms) to keep.
# Before entries go, the id and MAC of the newest one removed become the anchor the first
# kept entry links to, so the rest of the chain still verifies.
TRIM = """
local gone = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '-', 'COUNT', 1)[1]
if not gone then
  return 0
end
local fields = gone[2]
for i = 1, #fields, 2 do
  if fields[i] == 'mac' then
    redis.call('SET', KEYS[2], gone[1] .. ' ' .. fields[i + 1])
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
"""


class RedisAuditLog:
    def __init__(
        self, client: aioredis.Redis | RedisCluster, execute: Execute | None = None
    ) -> None:
        """`execute`: the store's command path (RedisStore.execute), shared rather than a
        second multiplexed connection; redis-py's own by default."""
        self.redis = client
        self.execute: Execute = execute or client.execute_command
        self._append = client.register_script(APPEND)
        self._trim = client.register_script(TRIM)
        self._claim = client.register_script(CLAIM)

    async def append(
        self, links: list[Link], expected_head: str, now_ms: int, writer: str, turn_ms: int
    ) -> Refusal | None:
        args: list[str | bytes | int] = [expected_head, now_ms, writer, turn_ms]
        for link in links:
            args.extend((link.body, link.prev, link.mac, link.kid))
        found = await run_script(
            self.execute,
            self._append,
            [keys.audit_stream(), keys.audit_head(), keys.audit_turn()],
            args,
        )
        if found is None:
            return None
        head, mine = found
        return Refusal(_text(head), bool(mine))

    async def claim(self, writer: str, turn_ms: int) -> str | None:
        found = await run_script(
            self.execute, self._claim, [keys.audit_head(), keys.audit_turn()], [writer, turn_ms]
        )
        return None if found is None else _text(found)

    async def trim(self, before_ms: int) -> int:
        if before_ms <= 0:
            return 0
        removed = await run_script(
            self.execute, self._trim, [keys.audit_stream(), keys.audit_anchor()], [before_ms]
        )
        return int(removed)

    async def head(self) -> str:
        value = await self.redis.get(keys.audit_head())
        return "" if value is None else _text(value)

    async def anchor(self) -> tuple[str, str] | None:
        value = await self.redis.get(keys.audit_anchor())
        if value is None:
            return None
        entry_id, _, mac = _text(value).partition(" ")
        return entry_id, mac

    async def entries(
        self, after: str | None = None, page: int = 500
    ) -> AsyncIterator[tuple[str, dict[str, str]]]:
        start = "-" if after is None else f"({after}"
        while True:
            found: Any = await self.redis.xrange(keys.audit_stream(), start, "+", count=page)
            for entry_id, fields in found:
                yield _text(entry_id), {_text(k): _text(v) for k, v in fields.items()}
            if len(found) < page:
                return
            start = f"({_text(found[-1][0])}"

    async def newest(self, count: int) -> list[tuple[str, dict[str, str]]]:
        found: Any = await self.redis.xrevrange(keys.audit_stream(), "+", "-", count=count)
        return [
            (_text(entry_id), {_text(k): _text(v) for k, v in fields.items()})
            for entry_id, fields in reversed(found)
        ]

    async def wait_after(self, last: str, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        found: Any = await self.redis.xread({keys.audit_stream(): last}, block=block_ms, count=100)
        out = []
        for _stream, entries in found or []:
            for entry_id, fields in entries:
                out.append((_text(entry_id), {_text(k): _text(v) for k, v in fields.items()}))
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
