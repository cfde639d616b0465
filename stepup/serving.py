"""Running ASGI apps under uvicorn with stepup's own signal handling, so that the code after
serving (stopping the embedded Redis) runs on SIGINT and SIGTERM alike."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

# The settings every stepup server runs with (one worker or several), and the benchmark's
# hello-world ceiling too, so the two are comparable. uvloop and httptools (both in
# uvicorn[standard]) are named rather than left to "auto", which silently falls back to the
# pure-Python asyncio loop and h11 parser when they are missing.
UVICORN_OPTIONS: dict[str, Any] = {
    "access_log": False,
    "proxy_headers": False,
    "server_header": False,
    "timeout_graceful_shutdown": 10,
    "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
}


class _Server(uvicorn.Server):
    # uvicorn re-raises a caught signal after shutdown, which would skip our cleanup;
    # the runner below handles signals once, for every server on the loop.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_all(apps: list[tuple[ASGIApp, int]], host: str, **options: Any) -> None:
    servers = [_Server(uvicorn.Config(app, host=host, port=port, **options)) for app, port in apps]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    # uvicorn's `loop` option only takes effect when uvicorn creates the loop itself; here the
    # loop is ours (several servers on one loop), so the choice is applied here. The stdlib
    # loop's Python-level socket writes were the largest single cost under load.
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run(apps: list[tuple[ASGIApp, int]], host: str, **options: Any) -> None:
    with asyncio.Runner(loop_factory=_loop_factory(options.get("loop", "auto"))) as runner:
        runner.run(serve_all(apps, host, **options))
