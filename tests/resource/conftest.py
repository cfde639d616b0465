"""One live stepup (issuer = its own URL) and the upstream IdP's JWKS over HTTP, per module;
the protected app of each test, Starlette or FastAPI, in front of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx
import pytest

from stepup.resource import Guard
from stepup.storage.embedded import EmbeddedRedis
from tests.resource.apps import fastapi_app, resource, starlette_app
from tests.support.own_issuer import Counting, jwks_server, stepup_at_own_url
from tests.support.stepup import API, Stepup, Upstream, frozen_now


@dataclass
class Peers:
    stepup: Stepup
    upstream_jwks: str


@pytest.fixture(scope="module")
def live_peers(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[Peers]:
    directory = tmp_path_factory.mktemp("resource")
    clock = frozen_now()
    upstream = Upstream(directory, clock)
    with (
        stepup_at_own_url(directory, redis_server.url, clock, upstream) as stepup,
        jwks_server(upstream.jwks_file) as jwks,
    ):
        yield Peers(stepup, jwks)


@pytest.fixture
def peers(live_peers: Peers, redis_url: str) -> Peers:
    """The module's peers with Redis emptied and the clock at the present."""
    live_peers.stepup.clock.set(frozen_now().now())
    return live_peers


@pytest.fixture(params=["starlette", "fastapi"])
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Protected(NamedTuple):
    api: httpx.AsyncClient
    http: Counting  # the guard's own HTTP client, counting what it asks stepup
    guard: Guard


@asynccontextmanager
async def protected(
    peers: Peers, framework: str = "starlette", **options: Any
) -> AsyncIterator[Protected]:
    http = Counting()
    options.setdefault("upstream_jwks", peers.upstream_jwks)
    guard = Guard(resource(peers.stepup.url, **options), clock=peers.stepup.clock, http=http)
    app = starlette_app(guard) if framework == "starlette" else fastapi_app(guard)
    async with (
        http,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as client,
    ):
        yield Protected(client, http, guard)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
