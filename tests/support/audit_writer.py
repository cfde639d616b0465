"""One process of the audit writers' contention test (tests/ops/test_audit_writers.py): an
Audit streaming into a real Redis, fed events at a steady rate as a busy worker would, for a
bounded time; prints how many it made, streamed and dropped as one JSON line.

    python -m tests.support.audit_writer REDIS_URL KEY_FILE SECONDS EVENTS_PER_SECOND BUFFER
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

from stepup.audit import Audit, AuditKeys
from stepup.clock import SystemClock
from stepup.storage.audit_stream import RedisAuditLog
from stepup.storage.redis import STORAGE_ERRORS


async def feed(
    url: str, key_file: Path, seconds: float, rate: float, buffer: int
) -> dict[str, int]:
    audit = Audit(SystemClock(), buffer=buffer)
    client = aioredis.Redis.from_url(url)
    made = 0
    try:
        log = RedisAuditLog(client)
        keys = AuditKeys.load(key_file)
        async with audit.streaming(log, keys, retention_days=1, errors=STORAGE_ERRORS):
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                while made < int(elapsed * rate):
                    audit.record("token.introspected", "active", server="rs", jti=f"{made:032d}")
                    made += 1
                await asyncio.sleep(0.0005)
    finally:
        await client.aclose()
    return {"made": made, "written": audit.written, "dropped": audit.dropped}


def main() -> None:
    logging.disable(logging.INFO)  # the events' JSON lines are not what is tested here
    url, key_file, seconds, rate, buffer = sys.argv[1:6]
    counts = asyncio.run(feed(url, Path(key_file), float(seconds), float(rate), int(buffer)))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
