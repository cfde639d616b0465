"""One connection to a single Redis that every request of the process shares, for the commands
on the hot paths (GET, SET, GETDEL, EVALSHA): each command is packed and parsed by hiredis,
written with the others issued in the same turn of the event loop, and answered in order
(Redis answers the commands of one connection in the order they came: RESP pipelining).

redis-py's command path costs 80 to 120 µs of CPU per command on this machine: a pooled
connection taken and returned under a lock, a retry wrapper, event hooks, a timer and a Task
per command. Here a command is a future in a queue. Everything else (pipelines,
transactions, blocking reads, Cluster, TLS) stays on redis-py.

What is kept from redis-py's behaviour, so storage errors still fail closed (a 503):
- errors are redis-py's own exception classes (ConnectionError, TimeoutError, and a reply's
  error mapped by redis-py's parser: ResponseError, NoScriptError, ReadOnlyError, …), so the
  web layer's STORAGE_ERRORS catch them;
- a command unanswered after `timeout` seconds ends the connection: it and every command
  behind it fail with TimeoutError (one watchdog per connection, not a timer per command);
- a lost connection fails the commands in flight; the next command connects again. A
  command is never sent twice: one that may have run is not retried.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis._parsers.base import BaseParser
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.typing import EncodableT

# redis-py's own mapping of an error reply's first word (NOSCRIPT, READONLY, LOADING, …) to its
# exception class, so both command paths raise alike; it carries no type annotations.
_parse_error = cast(Callable[[str], redis.exceptions.RedisError], BaseParser.parse_error)
# hiredis's stub types its argument as a one-element tuple; it takes any number of parts.
_pack = cast(Callable[[tuple[EncodableT, ...]], bytes], hiredis.pack_command)


class _Pipe(asyncio.Protocol):
    """One open connection: commands written, futures waiting for their replies in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._error: redis.exceptions.RedisError | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._watchdog = self.loop.call_later(self.timeout / 4, self._watch)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                self._answer(reply)
                reply = reader.gets()
        except hiredis.ProtocolError as exc:
            self._fail(redis.exceptions.InvalidResponse(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(
            self._error
            or redis.exceptions.ConnectionError(f"Redis connection lost: {exc or 'closed'}")
        )

    # -- commands ---------------------------------------------------------------------------

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        if self.closed:
            assert self._error is not None
            future.set_exception(self._error)
            return future
        self._waiting.append((future, self.loop.time()))
        self._out.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or self.transport is None:
            return
        out, self._out = self._out, []
        self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _answer(self, reply: Any) -> None:
        if not self._waiting:
            self._fail(redis.exceptions.InvalidResponse("Redis sent a reply nobody asked for"))
            return
        future, _ = self._waiting.popleft()
        if future.done():  # its caller went away (cancelled); the reply is dropped
            return
        if isinstance(reply, hiredis.ReplyError):
            future.set_exception(_parse_error(str(reply)))
        else:
            future.set_result(reply)

    def _watch(self) -> None:
        if self.closed:
            return
        if self._waiting and self.loop.time() - self._waiting[0][1] > self.timeout:
            self._fail(redis.exceptions.TimeoutError("Timeout reading from Redis"))
            return
        self._watchdog = self.loop.call_later(self.timeout / 4, self._watch)

    def _fail(self, error: redis.exceptions.RedisError) -> None:
        """Ends the connection: every command still waiting fails with `error`."""
        if not self.closed:
            self.closed = True
            self._error = error
            if self._watchdog is not None:
                self._watchdog.cancel()
            if self.transport is not None:
                self.transport.abort()
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
        self._out.clear()


class Multiplexed:
    """A single Redis reached over a Unix socket or plain TCP, with AUTH and SELECT as the
    URL asks; `for_client` says whether a redis-py client's settings can be served so."""

    def __init__(
        self,
        *,
        path: str | None = None,
        host: str = "localhost",
        port: int = 6379,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        timeout: float = 2.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.path, self.host, self.port = path, host, port
        self.username, self.password, self.db = username, password, db
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._pipe: _Pipe | None = None
        self._opening: asyncio.Task[_Pipe] | None = None

    @classmethod
    def for_client(cls, client: aioredis.Redis) -> Multiplexed | None:
        """The same server, database and credentials as `client`; None where this path does
        not reach (TLS, or a connection class of redis-py's it does not know)."""
        pool = client.connection_pool
        options: Mapping[str, Any] = pool.connection_kwargs
        if pool.connection_class is UnixDomainSocketConnection:
            where: dict[str, Any] = {"path": options["path"]}
        elif pool.connection_class is Connection:
            where = {
                "host": options.get("host", "localhost"),
                "port": int(options.get("port", 6379)),
            }
        else:
            return None
        return cls(
            **where,
            username=options.get("username"),
            password=options.get("password"),
            db=int(options.get("db") or 0),
            timeout=float(options.get("socket_timeout") or 2.0),
            connect_timeout=float(options.get("socket_connect_timeout") or 2.0),
        )

    async def execute(self, *args: EncodableT) -> Any:
        pipe = self._pipe
        if pipe is None or pipe.closed or pipe.loop is not asyncio.get_running_loop():
            pipe = await self._connected()
        return await pipe.send(_pack(args))

    async def close(self) -> None:
        if self._pipe is not None and not self._pipe.closed:
            self._pipe._fail(redis.exceptions.ConnectionError("Redis connection closed"))
        self._pipe = None

    async def _connected(self) -> _Pipe:
        # One connection attempt at a time: the commands that arrive meanwhile wait for it.
        # It runs as its own task, so a caller that gives up does not abandon it half open.
        loop = asyncio.get_running_loop()
        opening = self._opening
        if opening is None or opening.get_loop() is not loop:
            opening = self._opening = loop.create_task(self._open())
            opening.add_done_callback(_retrieved)
        return await asyncio.shield(opening)

    async def _open(self) -> _Pipe:
        try:
            self._pipe = await self._connect()
            return self._pipe
        finally:
            self._opening = None

    async def _connect(self) -> _Pipe:
        loop = asyncio.get_running_loop()
        where = self.path or f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path is not None:
                    _, pipe = await loop.create_unix_connection(
                        lambda: _Pipe(loop, self.timeout), self.path
                    )
                else:
                    _, pipe = await loop.create_connection(
                        lambda: _Pipe(loop, self.timeout), self.host, self.port
                    )
        except TimeoutError as exc:
            raise redis.exceptions.TimeoutError(f"Timeout connecting to Redis at {where}") from exc
        except OSError as exc:
            raise redis.exceptions.ConnectionError(
                f"Error connecting to Redis at {where}: {exc}"
            ) from exc
        # The handshake goes first on the connection; nothing else is sent until it is done.
        greeting: list[asyncio.Future[Any]] = []
        if self.password is not None:
            login = (
                ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            )
            greeting.append(pipe.send(_pack(login)))
        if self.db:
            greeting.append(pipe.send(_pack(("SELECT", self.db))))
        try:
            for reply in greeting:
                await reply
        except redis.exceptions.RedisError as exc:
            refused = redis.exceptions.ConnectionError(
                f"Redis at {where} refused the handshake: {exc}"
            )
            pipe._fail(refused)
            raise refused from exc
        return pipe


def _retrieved(task: asyncio.Task[Any]) -> None:
    # Its waiters get the error; this keeps asyncio from calling it never retrieved when
    # they have all gone.
    if not task.cancelled():
        task.exception()
