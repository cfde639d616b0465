"""The front door (stepup/web/front.py) answers its endpoints exactly as the whole Starlette
stack does: same status, headers and body, the same metrics, the same 500 on a bug."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from starlette.applications import Starlette

from stepup.app import create_app
from stepup.clock import FrozenClock
from stepup.config import Config
from stepup.web import api
from stepup.web.front import Stepup
from tests.support.asgi import http_scope, receive_once
from tests.support.stepup import CLIENT_ID, CLIENT_SECRET, RS_ID, RS_SECRET

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def _basic(identity: str, secret: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{identity}:{secret}".encode())


def _scope(method: str, path: str, body: bytes, authorization: bytes | None) -> dict[str, Any]:
    headers = [
        (b"host", b"localhost"),
        (b"x-request-id", b"req-front-1"),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", str(len(body)).encode()),
    ]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    return http_scope(method, path, headers)


async def _call(
    app: Any, method: str, path: str, body: bytes = b"", authorization: bytes | None = None
) -> Answer:
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(_scope(method, path, body, authorization), receive_once(body), send)
    start = sent[0]
    return start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
async def app(config: Config, redis_url: str, clock: FrozenClock) -> AsyncIterator[Stepup]:
    built = create_app(config, redis_url=redis_url, clock=clock)
    assert isinstance(built, Stepup)
    async with built.router.lifespan_context(built):
        yield built


def _whole_stack(app: Stepup) -> Any:
    async def call(scope: Any, receive: Any, send: Any) -> None:
        await Starlette.__call__(app, scope, receive, send)

    return call


CASES = [
    ("GET", "/jwks", b"", None),
    ("HEAD", "/jwks", b"", None),
    ("GET", "/.well-known/oauth-authorization-server", b"", None),
    ("POST", "/introspect", b"token=not-a-token", _basic(RS_ID, RS_SECRET)),
    ("POST", "/introspect", b"token=x", _basic(RS_ID, "wrong")),
    ("POST", "/introspect", b"", _basic(RS_ID, RS_SECRET)),
    ("POST", "/token", b"grant_type=password", _basic(CLIENT_ID, CLIENT_SECRET)),
    ("POST", "/par", b"scope=x", _basic(CLIENT_ID, CLIENT_SECRET)),
    ("POST", "/par", b"scope=x", None),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "body", "authorization"), CASES)
async def test_the_front_door_answers_as_the_whole_stack(
    app: Stepup, method: str, path: str, body: bytes, authorization: bytes | None
) -> None:
    direct = await _call(app, method, path, body, authorization)
    stacked = await _call(_whole_stack(app), method, path, body, authorization)
    assert direct == stacked
    status, headers, _ = direct
    assert (b"x-request-id", b"req-front-1") in headers
    assert (b"x-content-type-options", b"nosniff") in headers
    assert status != 500


@pytest.mark.anyio
async def test_the_front_door_counts_requests_under_the_route_template(app: Stepup) -> None:
    metrics = app.state.metrics
    sample = {"route": "/introspect", "method": "POST", "status": "200"}

    def count() -> float:
        value = metrics.registry.get_sample_value("stepup_http_requests_total", sample)
        return float(value or 0.0)

    before = count()
    await _call(app, "POST", "/introspect", b"token=x", _basic(RS_ID, RS_SECRET))
    await _call(_whole_stack(app), "POST", "/introspect", b"token=x", _basic(RS_ID, RS_SECRET))
    assert count() == before + 2


@pytest.mark.anyio
async def test_a_bug_behind_the_front_door_is_a_plain_500_and_reaches_the_server(
    app: Stepup, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(api.introspect, "handler", broken)
    for target in (app, _whole_stack(app)):
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any], sent: Any = sent) -> None:
            sent.append(message)

        with pytest.raises(RuntimeError, match="a bug"):
            await target(_scope("POST", "/introspect", b"", None), receive, send)
        assert sent[0]["status"] == 500
        assert sent[1]["body"] == b"Internal Server Error"
