"""One request to an ASGI app called directly, as uvicorn would call it: the http scope, and a
`receive` that hands over the whole body once and then reports the disconnect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]


def http_scope(method: str, path: str, headers: Sequence[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(headers),
    }


def receive_once(body: bytes) -> Receive:
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
