"""StepUpAuth with a DPoP key against a live stepup that requires DPoP nonces and a live API:
proofs at intake, exchange and the API, the nonce retry, and a DPoP-bound elevated token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from stepup.client import BrowserStep, StepUpAuth
from stepup.resource import Guard
from stepup.storage.embedded import EmbeddedRedis
from tests.client.test_step_up_auth import user_approves
from tests.resource.apps import resource, starlette_app
from tests.support.own_issuer import claims_of, jwks_server, stepup_at_own_url
from tests.support.server import LiveServer, bound_socket
from tests.support.stepup import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT,
    Stepup,
    Upstream,
    frozen_now,
)


@dataclass
class World:
    stepup: Stepup
    api: str


def require_nonces(document: dict[str, Any]) -> None:
    document["dpop"] = {"require_nonce": True}


@pytest.fixture(scope="module")
def live_world(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("dpop-client")
    clock = frozen_now()
    upstream = Upstream(directory, clock)
    sock = bound_socket()
    api_url = f"http://localhost:{sock.getsockname()[1]}"
    with (
        stepup_at_own_url(
            directory, redis_server.url, clock, upstream, edit=require_nonces
        ) as stepup,
        jwks_server(upstream.jwks_file) as jwks,
    ):
        # Proofs name the API where the client reaches it (its live URL, not API).
        guard = Guard(resource(stepup.url, upstream_jwks=jwks, dpop_origin=api_url), clock=clock)
        with LiveServer(starlette_app(guard), sock=sock) as api:
            yield World(stepup, api.url)


@pytest.fixture
def world(live_world: World, redis_url: str) -> World:
    live_world.stepup.clock.set(frozen_now().now())
    return live_world


def dpop_auth(world: World, key: ECKey, subject_token: str) -> StepUpAuth:
    def authorize(step: BrowserStep) -> str:
        return user_approves(world.stepup, step.url)

    return StepUpAuth(
        issuer=world.stepup.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        subject_token=subject_token,
        resource=API,
        redirect_uri=REDIRECT,
        authorize=authorize,
        dpop_key=key,
        clock=world.stepup.clock.now,
    )


def test_a_bound_user_token_steps_up_to_a_bound_elevated_token(world: World) -> None:
    key = ECKey.generate_key("P-256", private=True)
    user_token = world.stepup.upstream.token(cnf={"jkt": key.thumbprint()})
    auth = dpop_auth(world, key, user_token)
    with httpx.Client(base_url=world.api, auth=auth) as client:
        response = client.post("/pay")
    assert response.status_code == 200, response.text
    assert auth.last_token is not None and auth.last_token["token_type"] == "DPoP"
    assert claims_of(auth.last_token["access_token"])["cnf"] == {"jkt": key.thumbprint()}
    # The challenge (in DPoP's scheme), metadata, intake asking for its nonce, intake, exchange.
    history = [(r.request.url.path, r.status_code) for r in response.history]
    assert history == [
        ("/pay", 401),
        ("/.well-known/oauth-authorization-server", 200),
        ("/par", 400),
        ("/par", 201),
        ("/token", 200),
    ]
    assert response.history[0].headers["www-authenticate"].startswith("DPoP ")
    assert response.history[2].json()["error"] == "use_dpop_nonce"
    assert response.request.headers["authorization"].startswith("DPoP ")


def test_an_unbound_user_token_still_gets_a_bound_elevated_token(world: World) -> None:
    key = ECKey.generate_key("P-256", private=True)
    auth = dpop_auth(world, key, world.stepup.upstream.token())
    schemes: list[tuple[str, str]] = []

    def record(request: httpx.Request) -> None:
        scheme = request.headers.get("authorization", "").split(" ")[0]
        schemes.append((request.url.path, scheme))

    with httpx.Client(base_url=world.api, auth=auth, event_hooks={"request": [record]}) as client:
        response = client.post("/pay")
    assert response.status_code == 200, response.text
    # B is no bound token: it goes as Bearer; the elevated token E goes with DPoP.
    assert (schemes[0], schemes[-1]) == (("/pay", "Bearer"), ("/pay", "DPoP"))
    assert auth.last_token is not None
    assert claims_of(auth.last_token["access_token"])["cnf"] == {"jkt": key.thumbprint()}
