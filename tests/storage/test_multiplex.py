"""The multiplexed connection (storage/multiplex.py) against a real redis-server: replies in
order under concurrency, redis-py's error classes, timeouts, lost connections and handshakes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions

from stepup.storage.multiplex import Multiplexed
from stepup.storage.redis import RedisStore, command_path, connect
from tests.support.redis_proc import RedisProcess


@pytest.fixture
async def multiplexed(redis_url: str) -> AsyncIterator[Multiplexed]:
    found = Multiplexed.for_client(aioredis.Redis.from_url(redis_url))
    assert found is not None
    yield found
    await found.close()


@pytest.mark.anyio
async def test_many_concurrent_commands_each_get_their_own_reply(
    multiplexed: Multiplexed, redis_url: str
) -> None:
    count = 2000
    written = await asyncio.gather(
        *(multiplexed.execute("SET", f"k{i}", f"value-{i}") for i in range(count))
    )
    assert written == [b"OK"] * count
    # Reads of different shapes interleaved: bulk strings, integers, nils, arrays.
    answers = await asyncio.gather(
        *(
            multiplexed.execute(*command)
            for i in range(count)
            for command in (("GET", f"k{i}"), ("STRLEN", f"k{i}"), ("GET", f"none{i}"))
        )
    )
    for i in range(count):
        value = f"value-{i}".encode()
        assert answers[3 * i : 3 * i + 3] == [value, len(value), None]
    assert await multiplexed.execute("MGET", "k1", "none", "k2") == [b"value-1", None, b"value-2"]
    with redis.Redis.from_url(redis_url) as plain:  # what another client sees
        assert plain.get(f"k{count - 1}") == f"value-{count - 1}".encode()


@pytest.mark.anyio
async def test_parallel_getdel_hands_a_value_to_exactly_one_caller(
    multiplexed: Multiplexed,
) -> None:
    await multiplexed.execute("SET", "once", "x")
    taken = await asyncio.gather(*(multiplexed.execute("GETDEL", "once") for _ in range(50)))
    assert taken.count(b"x") == 1
    assert taken.count(None) == 49


@pytest.mark.anyio
async def test_reply_errors_are_redis_py_classes_and_the_connection_stays(
    multiplexed: Multiplexed,
) -> None:
    with pytest.raises(redis.exceptions.NoScriptError):
        await multiplexed.execute("EVALSHA", "0" * 40, 0)
    await multiplexed.execute("SET", "text", "x")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await multiplexed.execute("HGET", "text", "field")
    # An error inside a script's reply comes back as the script's error.
    with pytest.raises(redis.exceptions.ResponseError, match="boom"):
        await multiplexed.execute("EVAL", "return redis.error_reply('boom')", 0)
    assert await multiplexed.execute("GET", "text") == b"x"


@pytest.mark.anyio
async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others(
    multiplexed: Multiplexed,
) -> None:
    await multiplexed.execute("SET", "mine", "right")
    # BLPOP holds the connection's queue for a while; its caller gives up before the reply.
    blocked = asyncio.ensure_future(multiplexed.execute("BLPOP", "empty-list", "0.3"))
    behind = asyncio.ensure_future(multiplexed.execute("GET", "mine"))
    await asyncio.sleep(0.05)
    blocked.cancel()
    assert await behind == b"right"
    assert await multiplexed.execute("GET", "mine") == b"right"


@pytest.mark.anyio
async def test_an_unanswered_command_times_out_with_those_behind_it_then_it_reconnects(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=0.3)
    multiplexed = Multiplexed.for_client(client)
    assert multiplexed is not None and multiplexed.timeout == 0.3
    try:
        started = time.monotonic()
        slow = multiplexed.execute("BLPOP", "empty-list", "5")
        behind = multiplexed.execute("GET", "anything")
        results = await asyncio.gather(slow, behind, return_exceptions=True)
        assert all(isinstance(r, redis.exceptions.TimeoutError) for r in results), results
        # The watchdog looks every timeout/4: the error comes after 0.3 s and before 0.3 + 0.15.
        assert 0.3 <= time.monotonic() - started < 1.0
        assert await multiplexed.execute("PING") == b"PONG"  # a new connection
    finally:
        await multiplexed.close()
        await client.aclose()


@pytest.mark.anyio
async def test_a_lost_connection_fails_the_commands_in_flight_and_the_next_one_reconnects(
    redis_proc: RedisProcess,
) -> None:
    multiplexed = Multiplexed.for_client(aioredis.Redis.from_url(redis_proc.url))
    assert multiplexed is not None
    try:
        await multiplexed.execute("SET", "kept", "1")
        in_flight = asyncio.ensure_future(multiplexed.execute("BLPOP", "empty-list", "5"))
        await asyncio.sleep(0.1)
        await asyncio.to_thread(redis_proc.kill)
        with pytest.raises(redis.exceptions.ConnectionError):
            await in_flight
        with pytest.raises(redis.exceptions.ConnectionError):
            await multiplexed.execute("GET", "kept")  # Redis is down: no connection
        await asyncio.to_thread(redis_proc.start)
        assert await multiplexed.execute("GET", "kept") == b"1"  # fsynced before the crash
    finally:
        await multiplexed.close()


@pytest.mark.anyio
async def test_concurrent_first_commands_share_one_connection(
    multiplexed: Multiplexed, redis_url: str
) -> None:
    await asyncio.gather(*(multiplexed.execute("CLIENT", "SETNAME", "mux") for _ in range(20)))
    with redis.Redis.from_url(redis_url) as plain:
        named = [c for c in plain.client_list() if c["name"] == "mux"]
    assert len(named) == 1


def test_one_instance_serves_one_event_loop_after_another(redis_url: str) -> None:
    # An app may be started, stopped and started again (tests, a restarted lifespan).
    multiplexed = Multiplexed.for_client(aioredis.Redis.from_url(redis_url))
    assert multiplexed is not None

    async def served() -> object:
        try:
            return await multiplexed.execute("INCR", "rounds")
        finally:
            await multiplexed.close()  # as the app's lifespan does at its end

    assert [asyncio.run(served()) for _ in range(2)] == [1, 2]


@pytest.fixture
def password_redis(redis_proc: RedisProcess) -> str:
    """The test's own Redis, asking for a password from now on."""
    with redis.Redis.from_url(redis_proc.url) as plain:
        plain.config_set("requirepass", "s3cret")
    return redis_proc.url


@pytest.mark.anyio
async def test_auth_and_select_come_first_and_a_wrong_password_is_a_connection_error(
    password_redis: str,
) -> None:
    url = password_redis.replace("unix://", "unix://:s3cret@", 1) + "?db=3"
    multiplexed = Multiplexed.for_client(aioredis.Redis.from_url(url))
    assert multiplexed is not None and multiplexed.db == 3
    try:
        await multiplexed.execute("SET", "in-db-3", "yes")
    finally:
        await multiplexed.close()
    with redis.Redis.from_url(url) as plain:
        assert plain.get("in-db-3") == b"yes"
        assert plain.execute_command("SELECT", 0) and plain.get("in-db-3") is None
    wrong = Multiplexed.for_client(
        aioredis.Redis.from_url(password_redis.replace("unix://", "unix://:nope@", 1))
    )
    assert wrong is not None
    with pytest.raises(redis.exceptions.ConnectionError, match="handshake"):
        await wrong.execute("GET", "x")


def test_tls_and_cluster_stay_on_redis_py() -> None:
    assert Multiplexed.for_client(aioredis.Redis.from_url("rediss://localhost:6380/0")) is None
    cluster = connect("redis+cluster://127.0.0.1:7001")
    assert command_path(cluster)[1] is None
    tcp = Multiplexed.for_client(aioredis.Redis.from_url("redis://u:p@127.0.0.1:6390/2"))
    assert tcp is not None
    assert (tcp.path, tcp.host, tcp.port, tcp.username, tcp.password, tcp.db) == (
        None,
        "127.0.0.1",
        6390,
        "u",
        "p",
        2,
    )


@pytest.mark.anyio
async def test_the_store_uses_it_on_a_single_redis(redis_url: str) -> None:
    store = RedisStore(connect(redis_url))
    try:
        assert store._multiplexed is not None
        assert await store.claim_once("claim", 10) is True
        assert await store.claim_once("claim", 10) is False
        assert await store.delete("claim") is True
        assert await store.delete("claim") is False
    finally:
        await store.close()
