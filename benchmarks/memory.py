"""Redis memory per record: elevated tokens (issued by the real exchange, then multiplied by
stepup's own store code) and pending requests (pushed through the real intake)."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from stepup import models
from stepup.models import Elevation, Grant, PendingRequest
from stepup.storage import keys as store_keys
from stepup.storage.elevations import RedisElevationIndex
from stepup.storage.redis import RedisStore

Progress = Callable[[str], None]
BATCH = 2_000


def _client(url: str) -> aioredis.Redis:
    # A bounded pool: a batch of writes waits for a connection instead of opening thousands.
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=32)
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() disconnects it


async def _keys(client: aioredis.Redis, pattern: str, limit: int) -> list[bytes]:
    found: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        found.append(key)
        if len(found) >= limit:
            break
    return found


async def _usage(client: aioredis.Redis, keys: list[bytes]) -> list[int]:
    sizes: list[int] = []
    for start in range(0, len(keys), BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for key in keys[start : start + BATCH]:
                pipe.memory_usage(key, samples=0)
            sizes.extend(int(size) for size in await pipe.execute() if size is not None)
    return sizes


async def _used_memory(client: aioredis.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


def _check_elevation(record: Elevation, now: int) -> None:
    """A record as the exchange writes it: every claim introspection answers with, alive."""
    if not (record.jti and record.sub and record.client_id and record.aud and record.scope):
        raise RuntimeError(f"elevation record missing a claim: {record}")
    if not (record.iat <= now < record.exp) or not record.amr or not record.acr:
        raise RuntimeError(f"elevation record not active or without its proof: {record}")


async def elevations(url: str, count: int, progress: Progress) -> dict[str, Any]:
    client = _client(url)
    store = RedisStore(client)
    try:
        real_keys = await _keys(client, "stepup:tok:*", 1000)
        if not real_keys:
            raise RuntimeError("no elevated token in Redis: did the exchange run issue any?")
        now = int(time.time())
        raws = await client.mget(real_keys)
        real = [models.load(Elevation, raw) for raw in raws if raw is not None]
        for record in real:
            _check_elevation(record, now)
        real_sizes = await _usage(client, real_keys)
        progress(
            f"  {len(real)} elevated tokens issued by the exchange checked; "
            f"MEMORY USAGE mean {statistics.mean(real_sizes):.0f} B"
        )

        # The 100k: the store's own record_elevation, with a real record's shape and a new jti
        # of the length the exchange makes (secrets.token_urlsafe(24)).
        template = real[0]
        ttl = max(60, template.exp - now)
        before = await _used_memory(client)
        written: list[bytes] = []
        for start in range(0, count, BATCH):
            batch = [
                dataclasses.replace(template, jti=secrets.token_urlsafe(24))
                for _ in range(min(BATCH, count - start))
            ]
            recorded = await asyncio.gather(*(store.record_elevation(e, ttl) for e in batch))
            if not all(recorded):
                raise RuntimeError("record_elevation refused a fresh jti")
            written.extend(store_keys.elevation(e.jti).encode() for e in batch)
            if (start // BATCH) % 10 == 9:
                progress(f"  recorded {start + len(batch):,} of {count:,} elevated tokens")
        after = await _used_memory(client)
        sizes = await _usage(client, written)
        if len(sizes) != count:
            raise RuntimeError(f"{count - len(sizes)} recorded tokens are missing")
        return {
            "count": count,
            "memory_usage_mean_bytes": round(statistics.mean(sizes), 1),
            "used_memory_delta_per_token_bytes": round((after - before) / count, 1),
            "real_sample": len(real),
            "real_memory_usage_mean_bytes": round(statistics.mean(real_sizes), 1),
            "record_json_bytes": len(next(raw for raw in raws if raw is not None)),
        }
    finally:
        await store.close()  # the client and the store's multiplexed connection


async def footprint(
    url: str, count: int, progress: Progress, *, remember: int, one_subject: bool
) -> dict[str, Any]:
    """All that an issued token keeps in Redis while it is active, not only its record: the
    exchange's own writes, by stepup's own store code, `count` times. Each token's code is
    stored as the verification page stores it, then redeemed (the code goes; the spent marker
    that lets a replay revoke the token stays for `remember` seconds), then indexed under its
    subject and recorded (`track_and_record`). `one_subject`: every token for one subject (as
    in the load runs), else a subject each. The used_memory delta per token, in total and per
    step (the marker; the record with its index entries)."""
    client = _client(url)
    store = RedisStore(client)
    index = RedisElevationIndex(client, store)
    try:
        real_keys = await _keys(client, "stepup:tok:*", 1)
        if not real_keys:
            raise RuntimeError("no elevated token in Redis: did the exchange run issue any?")
        raw = await client.get(real_keys[0])
        if raw is None:
            raise RuntimeError("the elevated token found expired meanwhile")
        template = models.load(Elevation, raw)
        now = int(time.time())
        ttl = max(60, template.exp - now)
        grant = Grant(
            client_id=template.client_id,
            issuer="https://upstream.bench.example",
            sub=template.sub,
            subject_exp=now + 3600,
            redirect_uri="https://bank.bench.example/callback",
            code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            scopes=template.scope.split(),
            resource=template.aud,
            acr=template.acr,
            amr=list(template.amr),
            auth_time=template.auth_time,
        )
        shared = "bench-footprint-" + secrets.token_hex(8)

        def subject() -> str:
            return shared if one_subject else "bench-footprint-" + secrets.token_hex(16)

        async def redeem(code: str, jti: str, who: str) -> None:
            await store.put(store_keys.code(code), grant, 60)
            found, _, _ = await store.redeem_code_of(code, jti, remember, who)
            if found is None:
                raise RuntimeError("a stored code did not redeem")

        async def record(elevation: Elevation, who: str) -> None:
            if not await index.track_and_record(who, elevation, ttl, now, remember):
                raise RuntimeError("track_and_record refused a fresh jti")

        tokens = [
            (secrets.token_urlsafe(32), dataclasses.replace(template, jti=jti), subject())
            for jti in (secrets.token_urlsafe(24) for _ in range(count))
        ]
        # In two passes over the same tokens, so each step's share can be read apart.
        start_bytes = await _used_memory(client)
        for start in range(0, count, BATCH):
            part = tokens[start : start + BATCH]
            await asyncio.gather(*(redeem(code, e.jti, who) for code, e, who in part))
        redeemed_bytes = await _used_memory(client)
        for start in range(0, count, BATCH):
            part = tokens[start : start + BATCH]
            await asyncio.gather(*(record(e, who) for _, e, who in part))
        end_bytes = await _used_memory(client)
        progress(
            f"  {count:,} tokens issued by the exchange's writes ({'one subject' if one_subject else 'a subject each'})"
        )
        return {
            "count": count,
            "one_subject": one_subject,
            "used_memory_per_token_bytes": round((end_bytes - start_bytes) / count, 1),
            "spent_marker_bytes": round((redeemed_bytes - start_bytes) / count, 1),
            "record_and_index_bytes": round((end_bytes - redeemed_bytes) / count, 1),
        }
    finally:
        await store.close()


async def pending_requests(url: str) -> dict[str, Any]:
    client = _client(url)
    try:
        keys = await _keys(client, "stepup:par:*", 2000)
        raws = [raw for raw in await client.mget(keys) if raw is not None] if keys else []
        for raw in raws[:50]:
            models.load(PendingRequest, raw)  # the shape the intake writes
        sizes = await _usage(client, keys)
        return {
            "sample": len(sizes),
            "memory_usage_mean_bytes": round(statistics.mean(sizes), 1) if sizes else None,
            "record_json_bytes": len(raws[0]) if raws else None,
        }
    finally:
        await client.aclose()
