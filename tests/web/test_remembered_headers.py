"""Each app remembers the Basic headers that authenticated in a memory of its own
(Services.remembered_headers): two apps in one process, with different secrets for the same
client, never answer from each other's, and a new config object (a reload) checks in full again,
so a changed secret never authenticates from the memory."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from stepup.app import create_app
from stepup.clock import FrozenClock
from stepup.config import Client, Config, hash_secret, parse
from tests.support.full_checks import record_full_checks
from tests.support.stepup import CLIENT_ID, CLIENT_SECRET, Upstream, policy_document

OTHER_SECRET = "bank-secret-of-the-second-app-7e1d"
# After client authentication, /token refuses this grant type: 400 for the client, 401 if not.
NOT_EXCHANGE = {"grant_type": "password"}


def basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()


def policy(upstream: Upstream, data_dir: Path, client_secret: str) -> Config:
    document = policy_document(upstream, data_dir)
    document["clients"][0]["secret_hash"] = hash_secret(client_secret)
    return parse(document, base_dir=data_dir)


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost:8000"
        ) as client,
    ):
        yield client


async def token_status(client: httpx.AsyncClient, secret: str) -> int:
    answer = await client.post(
        "/token", data=NOT_EXCHANGE, headers={"Authorization": basic(secret)}
    )
    return answer.status_code


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The secrets compared in full (decoded and hashed), in order, by every app."""
    return record_full_checks(monkeypatch)


@pytest.mark.anyio
async def test_two_apps_with_different_secrets_do_not_share_remembered_headers(
    upstream: Upstream, tmp_path: Path, redis_url: str, clock: FrozenClock, full_checks: list[str]
) -> None:
    first = create_app(
        policy(upstream, tmp_path / "a", CLIENT_SECRET), redis_url=redis_url, clock=clock
    )
    second = create_app(
        policy(upstream, tmp_path / "b", OTHER_SECRET), redis_url=redis_url, clock=clock
    )
    async with serving(first) as at_first, serving(second) as at_second:
        assert await token_status(at_first, CLIENT_SECRET) == 400
        # Remembered by the first app only: the second checks it in full, and refuses it.
        assert await token_status(at_second, CLIENT_SECRET) == 401
        assert await token_status(at_second, OTHER_SECRET) == 400
        assert full_checks == [CLIENT_SECRET, CLIENT_SECRET, OTHER_SECRET]
        # The second app's success left the first app's memory as it was, and the other way
        # round: both headers are answered from memory where they authenticated.
        assert await token_status(at_first, CLIENT_SECRET) == 400
        assert await token_status(at_second, OTHER_SECRET) == 400
        assert full_checks == [CLIENT_SECRET, CLIENT_SECRET, OTHER_SECRET]
        assert await token_status(at_first, OTHER_SECRET) == 401
    assert first.state.services.remembered_headers is not second.state.services.remembered_headers


@pytest.mark.anyio
async def test_a_reloaded_config_with_a_changed_secret_checks_in_full_again(
    upstream: Upstream, tmp_path: Path, redis_url: str, clock: FrozenClock, full_checks: list[str]
) -> None:
    config = policy(upstream, tmp_path, CLIENT_SECRET)
    app = create_app(config, redis_url=redis_url, clock=clock)
    async with serving(app) as client:
        assert await token_status(client, CLIENT_SECRET) == 400
        assert await token_status(client, CLIENT_SECRET) == 400
        assert full_checks == [CLIENT_SECRET]  # the second from memory
        # A reload: a new config object, in which the client's secret was rotated.
        bank = config.clients[CLIENT_ID]
        rotated = dataclasses.replace(bank, secret_hash=hash_secret(OTHER_SECRET))
        clients: dict[str, Client] = {**config.clients, CLIENT_ID: rotated}
        app.state.services.config = dataclasses.replace(config, clients=clients)
        assert await token_status(client, CLIENT_SECRET) == 401
        assert await token_status(client, OTHER_SECRET) == 400
        assert await token_status(client, OTHER_SECRET) == 400
        assert full_checks == [CLIENT_SECRET, CLIENT_SECRET, OTHER_SECRET]
