"""Running ASGI apps under uvicorn with stepup's own signal handling, so that the code after
serving (stopping the embedded Redis) runs on SIGINT and SIGTERM alike; and uvicorn's HTTP
protocol with one send per answer instead of two."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import signal
from collections.abc import Callable, Iterator
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Held bytes beyond this go out at once rather than at the end of the loop turn (a long
# streamed answer written without pause), so holding never grows without bound.
HOLD_AT_MOST = 64 * 1024


class CoalescingTransport(asyncio.Transport):
    """A transport that holds what is written until the end of the event-loop turn.

    uvicorn writes an answer's status line and headers, then its body, as two writes, and
    uvloop sends each at once when the socket is free: two `write` system calls and two TCP
    segments for every answer. Held until the turn ends, both leave in one. Order is kept
    (every write goes through here), `close` sends what is held first, `abort` drops it.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self._send_held)
        self._held.append(bytes(data))
        self._held_size += len(data)
        if self._held_size > HOLD_AT_MOST:
            self._send_held()

    def _send_held(self) -> None:
        if not self._held:
            return
        held = self._held
        self._held = []
        self._held_size = 0
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._send_held()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._held_size = 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._send_held()
        self._transport.write_eof()


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a `CoalescingTransport`: one send per answer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the asyncio.Transport methods without subclassing it.
        stream = cast(asyncio.Transport, transport)
        super().connection_made(CoalescingTransport(stream, self.loop))


# The settings every stepup server runs with (one worker or several), and the benchmark's
# hello-world ceiling too, so the two are comparable. uvloop and httptools (both in
# uvicorn[standard]) are named rather than left to "auto", which silently falls back to the
# pure-Python asyncio loop and h11 parser when they are missing; the HTTP protocol is
# httptools' with one send per answer (`HttpProtocol`).
UVICORN_OPTIONS: dict[str, Any] = {
    "access_log": False,
    "proxy_headers": False,
    "server_header": False,
    "timeout_graceful_shutdown": 10,
    "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    "http": HttpProtocol,
}


# The youngest generation is collected after this many new container objects rather than
# CPython's 700. Under load the objects of the requests in flight (64 connections' worth)
# outlive 700 allocations, were promoted, and then died in the old generations, whose full
# collections also scan every long-lived object; with more room they die young.
YOUNG_GENERATION = 20_000


def settle_heap() -> None:
    """Once a server's app has started, before it takes requests: what exists now (modules,
    keys, policy, templates) lives as long as the process, so the collector stops scanning
    it (`gc.freeze`, after one last collection), and young objects get more room."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)


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
