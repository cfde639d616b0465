"""Lua scripts run by EVALSHA (storage/redis.py run_script), loaded again after a SCRIPT FLUSH,
on both command paths: the multiplexed connection and redis-py's own."""

from __future__ import annotations

import pytest

from stepup.storage.redis import command_path, connect, run_script


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["multiplexed", "redis-py"])
async def test_a_script_runs_by_its_sha_and_again_after_redis_forgot_it(
    redis_url: str, path: str
) -> None:
    client = connect(redis_url)
    execute, multiplexed = command_path(client)
    if path == "redis-py":
        execute = client.execute_command
    else:
        assert multiplexed is not None  # a Unix socket URL is served multiplexed
    try:
        script = client.register_script("return {KEYS[1], ARGV[1]}")
        assert await run_script(execute, script, ["k"], ["v"]) == [b"k", b"v"]
        await client.script_flush()  # as after a restart or a failover
        assert await run_script(execute, script, ["k"], ["w"]) == [b"k", b"w"]
    finally:
        if multiplexed is not None:
            await multiplexed.close()
        await client.aclose()
