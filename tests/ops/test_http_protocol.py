"""stepup's HTTP protocol (`stepup.serving.HttpProtocol`): uvicorn's httptools protocol whose
transport holds what is written until the end of the event-loop turn, so an answer's head and
body leave in one send. Served by a real uvicorn on a real socket; the bytes are read raw."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from stepup.serving import HOLD_AT_MOST, UVICORN_OPTIONS, CoalescingTransport, HttpProtocol
from tests.support.server import LiveServer

BIG = b"x" * (4 * HOLD_AT_MOST + 17)


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def big(request: Request) -> Response:
    return Response(BIG, media_type="application/octet-stream")


async def stream(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for n in range(3):
            yield b"part%d;" % n
            await asyncio.sleep(0.01)

    return StreamingResponse(parts(), media_type="text/plain")


async def echo(request: Request) -> Response:
    return PlainTextResponse(await request.body())


APP = Starlette(
    routes=[
        Route("/", hello),
        Route("/big", big),
        Route("/stream", stream),
        Route("/echo", echo, methods=["POST"]),
    ]
)


class Recorder:
    """Sits under a CoalescingTransport and notes each write it passes on to the real one."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


RECORDERS: list[Recorder] = []


class RecordingProtocol(HttpProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        recorder = Recorder(transport)
        RECORDERS.append(recorder)
        # Skip HttpProtocol's own wrapping: the recorder goes under a CoalescingTransport.
        super(HttpProtocol, self).connection_made(CoalescingTransport(recorder, self.loop))  # type: ignore[arg-type]


def exchange(port: int, request: bytes, *, until_closed: bool = False) -> bytes:
    """Sends raw bytes, reads until the peer closes (or, for one answer, until its body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
            if not until_closed and _complete(received):
                return received


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return body.endswith(b"0\r\n\r\n")


def split(answer: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}
    return status, headers, body


def test_stepup_serves_with_this_protocol() -> None:
    assert UVICORN_OPTIONS["http"] is HttpProtocol


def test_one_write_per_answer_with_head_and_body_together() -> None:
    RECORDERS.clear()
    with (
        LiveServer(APP, http=RecordingProtocol) as live,
        socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock,
    ):
        for _ in range(3):  # keep-alive: three answers on one connection
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            received = b""
            while not _complete(received):
                received += sock.recv(65536)
            status, headers, body = split(received)
            assert status == b"HTTP/1.1 200 OK"
            assert headers[b"content-length"] == b"5"
            assert body == b"hello"
    [recorder] = RECORDERS
    assert len(recorder.writes) == 3
    for written in recorder.writes:
        assert written.startswith(b"HTTP/1.1 200 OK\r\n")
        assert written.endswith(b"\r\n\r\nhello")


def test_pipelined_requests_are_answered_in_order() -> None:
    with LiveServer(APP) as live:
        requests = (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\none"
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\ntwo"
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nthree"
        )
        received = exchange(live.port, requests, until_closed=True)
    answers = received.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert [a.rpartition(b"\r\n\r\n")[2] for a in answers] == [b"one", b"two", b"three"]


def test_a_body_larger_than_the_hold_limit_arrives_whole() -> None:
    with LiveServer(APP) as live:
        status, headers, body = split(exchange(live.port, b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n"))
    assert status == b"HTTP/1.1 200 OK"
    assert int(headers[b"content-length"]) == len(BIG)
    assert body == BIG


@pytest.mark.anyio
async def test_past_the_hold_limit_what_is_held_goes_out_at_once() -> None:
    # A real socket transport under the recorder; the other end reads what arrived.
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        transport, _ = await loop.create_unix_connection(asyncio.Protocol, sock=ours)
        recorder = Recorder(transport)
        held = CoalescingTransport(recorder, loop)  # type: ignore[arg-type]
        held.write(b"head;")
        assert recorder.writes == []  # held for the end of the turn
        held.write(b"x" * HOLD_AT_MOST)
        assert recorder.writes == [b"head;" + b"x" * HOLD_AT_MOST]  # without waiting
        held.write(b"tail")
        assert len(recorder.writes) == 1
        await asyncio.sleep(0)  # the turn ends: the rest follows, in order
        assert recorder.writes[1:] == [b"tail"]
        held.close()
        theirs.setblocking(False)
        received = b""
        async with asyncio.timeout(5):
            while chunk := await loop.sock_recv(theirs, 65536):
                received += chunk
    assert received == b"head;" + b"x" * HOLD_AT_MOST + b"tail"


def test_a_streamed_answer_goes_out_part_by_part() -> None:
    RECORDERS.clear()
    with LiveServer(APP, http=RecordingProtocol) as live:
        answer = exchange(live.port, b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = split(answer)
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"transfer-encoding"] == b"chunked"
    assert body == b"6\r\npart0;\r\n6\r\npart1;\r\n6\r\npart2;\r\n0\r\n\r\n"
    [recorder] = RECORDERS
    # Each part was written in its own turn (the app sleeps between them): not held back.
    assert len(recorder.writes) >= 3
    assert recorder.writes[0].endswith(b"6\r\npart0;\r\n")


def test_connection_close_sends_the_whole_answer_first() -> None:
    with LiveServer(APP) as live:
        answer = exchange(
            live.port,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            until_closed=True,
        )
    status, headers, body = split(answer)
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"connection"] == b"close"
    assert body == b"hello"


@pytest.mark.parametrize(
    "request_bytes",
    [b"NONSENSE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n"],
)
def test_a_malformed_request_gets_its_400_before_the_close(request_bytes: bytes) -> None:
    with LiveServer(APP) as live:
        answer = exchange(live.port, request_bytes, until_closed=True)
    status, _, _ = split(answer)
    assert status == b"HTTP/1.1 400 Bad Request"
