"""Whether the audit stream kept up with a configuration's load: every event stepup recorded
(one JSON line each in its log) is in the Redis Stream once its processes have stopped, as
they flush their writers on the way out. A figure measured while a writer was dropping
events from the stream would have measured less work than stepup has to do."""

from __future__ import annotations

from pathlib import Path

import orjson
import redis

from stepup.storage import keys


def stream_length(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return int(client.xlen(keys.audit_stream()))


def recorded(log: Path) -> int:
    """The audit events among a server's JSON log lines (the other lines have no "event")."""
    count = 0
    with open(log, "rb") as lines:
        for line in lines:
            if b'"event":' not in line:
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict) and "event" in entry and "outcome" in entry:
                count += 1
    return count


class Trail:
    """Counts one configuration's events: `start` before its stepup runs, `finish` after its
    processes have stopped."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._before = 0

    def start(self) -> None:
        self._before = stream_length(self.redis_url)

    def finish(self, log: Path) -> dict[str, int]:
        return {
            "recorded": recorded(log),
            "streamed": stream_length(self.redis_url) - self._before,
        }
