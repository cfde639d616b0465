"""Lua scripts run by EVALSHA (storage/redis.py run_script), loaded again after a SCRIPT FLUSH."""

from __future__ import annotations

import pytest

from stepup.storage.redis import connect, run_script


@pytest.mark.anyio
async def test_a_script_runs_by_its_sha_and_again_after_redis_forgot_it(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        script = client.register_script("return {KEYS[1], ARGV[1]}")
        assert await run_script(script, ["k"], ["v"]) == [b"k", b"v"]
        await client.script_flush()  # as after a restart or a failover
        assert await run_script(script, ["k"], ["w"]) == [b"k", b"w"]
    finally:
        await client.aclose()
