"""The client helper against a live stepup and a live protected API: a challenge becomes PAR,
a browser step, an exchange and one retry; a CLI gets the code on a loopback listener."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from stepup.client import BrowserStep, LoopbackRedirect, StepUpAuth, StepUpError, asks_for_step_up
from stepup.resource import Guard
from stepup.storage.embedded import EmbeddedRedis
from tests.resource.apps import resource, starlette_app
from tests.resource.test_details import app as details_app
from tests.resource.test_details import paying
from tests.support.own_issuer import jwks_server, stepup_at_own_url
from tests.support.server import LiveServer
from tests.support.stepup import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT,
    Stepup,
    Upstream,
    frozen_now,
    hidden,
    manual_key,
    payment,
)

LOOPBACK = "http://127.0.0.1/callback"


@dataclass
class World:
    stepup: Stepup
    api: str  # the protected API's live URL
    upstream_jwks: str  # the upstream IdP's keys, for another API of a test's own


def register_loopback(document: dict[str, Any]) -> None:
    document["clients"][0]["redirect_uris"].append(LOOPBACK)


@pytest.fixture(scope="module")
def live_world(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("client")
    clock = frozen_now()
    upstream = Upstream(directory, clock)
    with (
        stepup_at_own_url(
            directory, redis_server.url, clock, upstream, edit=register_loopback
        ) as stepup,
        jwks_server(upstream.jwks_file) as jwks,
    ):
        guard = Guard(resource(stepup.url, upstream_jwks=jwks), clock=clock)
        with LiveServer(starlette_app(guard)) as api:
            yield World(stepup, api.url, jwks)


@pytest.fixture
def world(live_world: World, redis_url: str) -> World:
    live_world.stepup.clock.set(frozen_now().now())
    return live_world


def user_approves(stepup: Stepup, url: str, pages: list[str] | None = None) -> str:
    """The user's browser: the authorization URL, the page (first TOTP enrolment; kept in
    `pages`), the code; returns where stepup redirects to (not followed)."""
    with stepup.browser() as browser:
        started = browser.get(url)
        assert started.status_code == 303, started.text
        page = browser.get(started.headers["location"])
        if pages is not None:
            pages.append(page.text)
        secret = manual_key(page.text)
        stepup.clock.advance(30)
        done = browser.post(
            page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "verify",
                "code": stepup.totp_code(secret),
            },
        )
    assert done.status_code == 303, done.text
    location: str = done.headers["location"]
    return location


def auth_for(world: World, redirect_uri: str, authorize: Any) -> StepUpAuth:
    return StepUpAuth(
        issuer=world.stepup.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        subject_token=world.stepup.upstream.token(),
        resource=API,
        redirect_uri=redirect_uri,
        authorize=authorize,
    )


@pytest.mark.anyio
async def test_async_client_steps_up_and_retries_once(world: World) -> None:
    steps: list[BrowserStep] = []

    async def authorize(step: BrowserStep) -> str:
        steps.append(step)
        return user_approves(world.stepup, step.url)

    auth = auth_for(world, REDIRECT, authorize)
    async with httpx.AsyncClient(base_url=world.api, auth=auth) as client:
        response = await client.post("/pay")
    assert response.status_code == 200, response.text
    assert response.json()["acr"] == "urn:stepup:acr:mfa"
    (step,) = steps
    assert step.url.startswith(world.stepup.url + "/authorize?client_id=bank&request_uri=")
    assert step.issuer == world.stepup.url and step.redirect_uri == REDIRECT
    assert auth.last_token is not None and auth.last_token["scope"] == "payments:write"
    # The history: the challenge, stepup's metadata, the pushed request, the exchange.
    assert [r.status_code for r in response.history] == [401, 200, 201, 200]


def test_cli_gets_the_code_on_a_loopback_listener(world: World) -> None:
    visits: list[str] = []

    def open_browser(url: str) -> None:
        def browse() -> None:
            landing = user_approves(world.stepup, url)
            visits.append(landing)
            # A stray request with another state is answered 400 and ignored.
            stray = httpx.get(landing.replace("state=", "state=x"), timeout=5)
            visits.append(str(stray.status_code))
            visits.append(str(httpx.get(landing, timeout=5).status_code))

        threading.Thread(target=browse, daemon=True).start()

    with LoopbackRedirect(open_browser, timeout=20) as loopback:
        assert loopback.redirect_uri.startswith("http://127.0.0.1:")
        auth = auth_for(world, loopback.redirect_uri, loopback.authorize)
        with httpx.Client(base_url=world.api, auth=auth) as client:
            response = client.post("/pay")
    assert response.status_code == 200, response.text
    landing, stray, real = visits
    query = parse_qs(urlsplit(landing).query)
    assert query["iss"] == [world.stepup.url]
    assert (stray, real) == ("400", "200")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda url: url.replace("state=", "state=other"), "another state"),
        (lambda url: url.replace("iss=", "iss=https%3A%2F%2Fevil.example&x="), "another issuer"),
    ],
    ids=["state", "iss"],
)
def test_a_redirect_not_bound_to_this_flow_is_refused_before_the_exchange(
    world: World, tamper: Any, message: str
) -> None:
    exchanged: list[str] = []

    def authorize(step: BrowserStep) -> str:
        return str(tamper(user_approves(world.stepup, step.url)))

    def count(request: httpx.Request) -> None:
        exchanged.append(request.url.path)

    auth = auth_for(world, REDIRECT, authorize)
    with (
        httpx.Client(base_url=world.api, auth=auth, event_hooks={"request": [count]}) as client,
        pytest.raises(StepUpError, match=message),
    ):
        client.post("/pay")
    assert "/token" not in exchanged


def test_cancel_is_reported_with_its_error(world: World) -> None:
    def authorize(step: BrowserStep) -> dict[str, str]:
        return {"error": "access_denied", "state": step.state, "iss": step.issuer}

    with (
        httpx.Client(base_url=world.api, auth=auth_for(world, REDIRECT, authorize)) as client,
        pytest.raises(StepUpError) as raised,
    ):
        client.post("/pay")
    assert raised.value.error == "access_denied"


def test_answers_that_are_no_step_up_challenge_pass_through(world: World) -> None:
    def authorize(step: BrowserStep) -> str:
        raise AssertionError("no step-up expected")

    good = auth_for(world, REDIRECT, authorize)
    bad = auth_for(world, REDIRECT, authorize)
    bad._subject_token = "not-a-token"
    with httpx.Client(base_url=world.api) as client:
        read = client.get("/read", auth=good)
        refused = client.post("/pay", auth=bad)
    assert read.status_code == 200
    # invalid_token is no step-up challenge: a new sign-in is the app's business.
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_token"


def test_a_transaction_is_pushed_shown_and_bound_and_another_one_is_refused(
    world: World,
) -> None:
    seen: list[str] = []

    def authorize(step: BrowserStep) -> str:
        return user_approves(world.stepup, step.url, seen)

    def describe(request: httpx.Request) -> list[dict[str, Any]]:
        body = json.loads(request.content)
        return [payment(body["amount"], body["currency"], body["payee"])]

    guard = Guard(
        resource(world.stepup.url, upstream_jwks=world.upstream_jwks), clock=world.stepup.clock
    )
    auth = auth_for(world, REDIRECT, authorize)
    auth.authorization_details = describe
    with LiveServer(details_app(guard)) as api, httpx.Client(base_url=api.url) as client:
        paid = client.post("/pay", json=paying("42.00"), auth=auth)
        # The elevated token, used for another payment: a 403 challenge a client can answer.
        assert auth.last_token is not None
        elevated = auth.last_token["access_token"]
        other = client.post(
            "/pay", json=paying("4200.00"), headers={"Authorization": f"Bearer {elevated}"}
        )
    assert paid.status_code == 201, paid.text
    assert auth.last_token["authorization_details"] == [payment("42.00")]
    assert "Pay 42.00 EUR to Bob&#39;s Bikes" in seen[0]
    assert other.status_code == 403
    assert asks_for_step_up(other) == other.headers["www-authenticate"]
