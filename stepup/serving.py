"""Running ASGI apps under uvicorn with stepup's own signal handling, so that the code after
serving (stopping the embedded Redis) runs on SIGINT and SIGTERM alike."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp


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


def run(apps: list[tuple[ASGIApp, int]], host: str, **options: Any) -> None:
    asyncio.run(serve_all(apps, host, **options))
