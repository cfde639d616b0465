"""A stepup whose issuer is its own live URL, so peers can discover everything from it
(metadata, JWKS, introspection) as they would in production."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Unpack

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stepup.app import create_app
from stepup.clock import FrozenClock
from stepup.config import parse
from tests.support.server import LiveServer, bound_socket
from tests.support.stepup import ParFields, Stepup, Upstream, policy_document


@contextmanager
def stepup_at_own_url(
    directory: Path,
    redis_url: str,
    clock: FrozenClock,
    upstream: Upstream,
    *,
    sock: socket.socket | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[Stepup]:
    """A live stepup with `issuer = http://localhost:PORT`; `sock` to reuse a port."""
    sock = sock or bound_socket()
    url = f"http://localhost:{sock.getsockname()[1]}"
    document = policy_document(upstream, directory / "data")
    document["issuer"] = url
    if edit is not None:
        edit(document)
    config = parse(document, base_dir=directory)
    with LiveServer(create_app(config, redis_url=redis_url, clock=clock), sock=sock) as live:
        running = Stepup(live.url, config, clock, upstream)
        try:
            yield running
        finally:
            running.close()


def reuse_port(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@contextmanager
def jwks_server(jwks_file: Path) -> Iterator[str]:
    """Serves a JWKS file over HTTP (the upstream IdP's keys for a resource server);
    yields its URL."""

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse(json.loads(jwks_file.read_text()))  # noqa: ASYNC240 (tiny test file)

    with LiveServer(Starlette(routes=[Route("/jwks", jwks)])) as live:
        yield live.url + "/jwks"


def elevated_token(stepup: Stepup, sub: str = "alice", **par_fields: Unpack[ParFields]) -> str:
    """A real step-up (page and TOTP) and token exchange; the elevated token."""
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, None, sub, **par_fields)
    response = stepup.token(query["code"][0], verifier, stepup.upstream.token(sub))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


class Counting(httpx.AsyncClient):
    """An HTTP client that counts the requests it sends, by path."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        super().__init__(timeout=5.0, event_hooks={"request": [self._count]})

    async def _count(self, request: httpx.Request) -> None:
        self.sent.append(request.url.path)
