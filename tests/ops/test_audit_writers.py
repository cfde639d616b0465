"""Several processes write one audit chain: each process's writer appends only onto the head
it was given, so when two append at once one is refused and chains again. The first writer
refused for a stale head takes the turn, and the others wait for it. Without the turn, a
worker appending often kept another's retries out: its queue filled and it dropped most of
its events from the stream (two benchmark workers at 9,400 introspections/s lost 28,000)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from stepup.audit import Audit, AuditKeys, Link, Refusal, chain, verify
from stepup.clock import SystemClock
from stepup.storage import keys
from stepup.storage.audit_stream import RedisAuditLog
from stepup.storage.redis import STORAGE_ERRORS
from tests.support.cli import cli_env

TURN_MS = 200


@pytest.fixture
def audit_keys(tmp_path: Path) -> tuple[Path, AuditKeys]:
    path = tmp_path / "audit-keys.txt"
    return path, AuditKeys.load_or_create(path)


@pytest.fixture
async def log(redis_url: str) -> AsyncIterator[RedisAuditLog]:
    client = aioredis.Redis.from_url(redis_url)
    yield RedisAuditLog(client)
    await client.aclose()


def _bodies(*names: str) -> list[bytes]:
    return [json.dumps({"event": name, "outcome": "success"}).encode() for name in names]


def _turn(redis_url: str) -> tuple[str | None, int]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        return client.get(keys.audit_turn()), int(client.pttl(keys.audit_turn()))


def _length(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return int(client.xlen(keys.audit_stream()))


@pytest.mark.anyio
async def test_a_writer_refused_for_a_stale_head_has_the_turn_until_it_appends(
    log: RedisAuditLog, audit_keys: tuple[Path, AuditKeys], redis_url: str
) -> None:
    _, secret = audit_keys
    first: list[Link] = chain(secret, "", _bodies("a.1"))
    assert await log.append(first, "", 1_000, "writer-a", TURN_MS) is None
    head_a = first[-1].mac

    # B chained onto the empty chain, which A has moved on from: refused, and B has the turn.
    stale = chain(secret, "", _bodies("b.1"))
    assert await log.append(stale, "", 1_001, "writer-b", TURN_MS) == Refusal(head_a, True)
    holder, left = _turn(redis_url)
    assert holder == "writer-b" and 0 < left <= TURN_MS

    # A is up to date, but it is B's turn: A is refused, appends nothing, gets no turn.
    again_a = chain(secret, head_a, _bodies("a.2"))
    assert await log.append(again_a, head_a, 1_002, "writer-a", TURN_MS) == Refusal(head_a, False)
    assert _length(redis_url) == 1

    # B's retry, chained onto the head it was given, goes in and gives the turn back.
    retry_b = chain(secret, head_a, _bodies("b.1"))
    assert await log.append(retry_b, head_a, 1_003, "writer-b", TURN_MS) is None
    assert _turn(redis_url) == (None, -2)

    # Now A is the stale one: it takes the turn, chains onto B's entry, and goes in.
    head_b = retry_b[-1].mac
    assert await log.append(again_a, head_a, 1_004, "writer-a", TURN_MS) == Refusal(head_b, True)
    rechained = chain(secret, head_b, _bodies("a.2"))
    assert await log.append(rechained, head_b, 1_005, "writer-a", TURN_MS) is None

    verdict = await verify(log, secret, retention_days=1)
    assert verdict.intact, verdict.problems
    assert verdict.entries == 3


@pytest.mark.anyio
async def test_a_turn_whose_writer_never_comes_back_lapses(
    log: RedisAuditLog, audit_keys: tuple[Path, AuditKeys], redis_url: str
) -> None:
    _, secret = audit_keys
    first = chain(secret, "", _bodies("a.1"))
    assert await log.append(first, "", 1_000, "writer-a", TURN_MS) is None
    head = first[-1].mac
    # B takes a short turn and is never heard from again.
    refused = await log.append(chain(secret, "", _bodies("b.1")), "", 1_001, "writer-b", 50)
    assert refused == Refusal(head, True)
    nxt = chain(secret, head, _bodies("a.2"))
    assert await log.append(nxt, head, 1_002, "writer-a", TURN_MS) == Refusal(head, False)
    await asyncio.sleep(0.12)
    assert await log.append(nxt, head, 1_003, "writer-a", TURN_MS) is None
    assert _length(redis_url) == 2


def test_busy_processes_each_stream_every_event_into_one_chain(
    redis_url: str, audit_keys: tuple[Path, AuditKeys]
) -> None:
    """Two and then three real processes, each recording 5,000 events a second for 3 s with
    room for 2,000 in its queue: none drops any, and the chain of all of them verifies. (One
    process streams 12,000 a second alone; before the turn, of two at 6,000 a second one
    streamed under a quarter of its events.)"""
    path, secret = audit_keys
    total = 0
    for processes in (2, 3):
        command = [sys.executable, "-m", "tests.support.audit_writer"]
        command += [redis_url, str(path), "3", "5000", "2000"]
        started = [
            subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=cli_env())
            for _ in range(processes)
        ]
        counts = []
        for process in started:
            out, _ = process.communicate(timeout=60)
            assert process.returncode == 0
            counts.append(json.loads(out))
        for count in counts:
            assert count["made"] > 12_000, counts  # it ran at about its rate
            assert count["dropped"] == 0, counts
            assert count["written"] == count["made"], counts
        total += sum(count["made"] for count in counts)
        assert _length(redis_url) == total
        assert _turn(redis_url) == (None, -2)

    async def verified() -> tuple[bool, int]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            verdict = await verify(RedisAuditLog(client), secret, retention_days=1)
        finally:
            await client.aclose()
        return verdict.intact, verdict.entries

    assert asyncio.run(verified()) == (True, total)


@pytest.mark.anyio
async def test_a_claim_gives_the_turn_and_the_head_unless_another_has_it(
    log: RedisAuditLog, audit_keys: tuple[Path, AuditKeys], redis_url: str
) -> None:
    _, secret = audit_keys
    assert await log.claim("writer-a", TURN_MS) == ""  # an empty chain
    assert _turn(redis_url)[0] == "writer-a"
    assert await log.claim("writer-b", TURN_MS) is None  # A's turn
    first = chain(secret, "", _bodies("a.1"))
    assert await log.append(first, "", 1_000, "writer-a", TURN_MS) is None
    assert _turn(redis_url) == (None, -2)  # given back with the append
    assert await log.claim("writer-b", TURN_MS) == first[-1].mac
    assert await log.claim("writer-b", TURN_MS) == first[-1].mac  # its own again: renewed


class _Spy(RedisAuditLog):
    """The real store, with each call's name and batch size written down."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self.calls: list[tuple[str, int]] = []

    async def append(
        self, links: list[Link], expected_head: str, now_ms: int, writer: str, turn_ms: int
    ) -> Refusal | None:
        refused = await super().append(links, expected_head, now_ms, writer, turn_ms)
        self.calls.append(("append" if refused is None else "refused", len(links)))
        return refused

    async def claim(self, writer: str, turn_ms: int) -> str | None:
        self.calls.append(("claim", 0))
        return await super().claim(writer, turn_ms)


@pytest.mark.anyio
async def test_a_writer_refused_once_claims_the_turn_until_it_writes_alone(
    redis_url: str, audit_keys: tuple[Path, AuditKeys]
) -> None:
    _, secret = audit_keys
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    spies = [_Spy(client) for client in clients]
    a, b = Audit(SystemClock()), Audit(SystemClock())
    try:
        async with contextlib.AsyncExitStack() as stack:
            for audit, spy in zip((a, b), spies, strict=True):
                await stack.enter_async_context(
                    audit.streaming(spy, secret, retention_days=1, errors=STORAGE_ERRORS)
                )

            async def recorded(audit: Audit, name: str, count: int) -> None:
                for _ in range(count):
                    audit.record(name, "success")
                for _ in range(200):
                    if audit.written == count + written[id(audit)]:
                        break
                    await asyncio.sleep(0.01)
                written[id(audit)] += count
                assert audit.pending == 0

            written = {id(a): 0, id(b): 0}
            await recorded(b, "b.first", 1)  # B learns the head
            await recorded(a, "a.first", 1)  # A moves it on
            await recorded(b, "b.stale", 3)  # B: refused, takes the turn, goes in
            await recorded(b, "b.then", 2)  # B claims first: its own head, so alone again
            await recorded(b, "b.alone", 4)  # straight in
    finally:
        for client in clients:
            await client.aclose()
    assert spies[0].calls == [("append", 1)]
    assert spies[1].calls == [
        ("append", 1),
        ("refused", 3),
        ("append", 3),
        ("claim", 0),
        ("append", 2),
        ("append", 4),
    ]
    async with aioredis.Redis.from_url(redis_url) as client:
        verdict = await verify(RedisAuditLog(client), secret, retention_days=1)
    assert verdict.intact and verdict.entries == 11


@pytest.mark.anyio
async def test_a_writer_lets_events_gather_between_appends(
    redis_url: str, audit_keys: tuple[Path, AuditKeys]
) -> None:
    """One event every half millisecond for 0.2 s: appended in batches, at most one append
    per LINGER (5 ms) of the time it took, instead of one for almost every event."""
    _, secret = audit_keys
    client = aioredis.Redis.from_url(redis_url)
    spy = _Spy(client)
    audit = Audit(SystemClock())
    try:
        async with audit.streaming(spy, secret, retention_days=1, errors=STORAGE_ERRORS):
            started = time.monotonic()
            for _ in range(400):
                audit.record("token.introspected", "active")
                await asyncio.sleep(0.0005)
            elapsed = time.monotonic() - started
    finally:
        await client.aclose()
    appends = [size for name, size in spy.calls if name == "append"]
    assert sum(appends) == 400
    assert len(appends) <= elapsed / 0.005 + 2, (len(appends), elapsed)
    assert max(appends) > 1
