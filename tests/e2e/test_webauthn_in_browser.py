"""Passkeys on stepup's own pages in headless Chromium, with the DevTools virtual
authenticator: register, step up, and the ways an assertion must be refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, Page, expect

from stepup.clock import FrozenClock
from stepup.storage import keys
from tests.support.stepup import ISSUER_UPSTREAM, Stepup, Upstream, pkce
from tests.support.webauthn import (
    VirtualAuthenticator,
    answer_callbacks,
    callback_query,
    claims_of,
    stepup_at_origin,
)

pytestmark = pytest.mark.browser

PHR_SCOPE = "keys:admin"  # policy: urn:stepup:acr:phr, max_age 60


@pytest.fixture
def stepup(
    upstream: Upstream, tmp_path: Path, redis_url: str, clock: FrozenClock
) -> Iterator[Stepup]:
    with stepup_at_origin(upstream, tmp_path / "data", redis_url, clock) as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    answer_callbacks(page)
    try:
        yield page
    finally:
        context.close()


def open_stepup(stepup: Stepup, page: Page, sub: str, scope: str = PHR_SCOPE) -> str:
    """PAR, then the browser opens the authorization URL; returns the code_verifier."""
    verifier, challenge = pkce()
    pushed = stepup.par(stepup.upstream.token(sub), scope=scope, code_challenge=challenge)
    assert pushed.status_code == 201, pushed.text
    page.goto(f"{stepup.url}/authorize?client_id=bank&request_uri={pushed.json()['request_uri']}")
    return verifier


def exchange(stepup: Stepup, sub: str, query: dict[str, list[str]], verifier: str) -> dict:
    assert "code" in query, query
    answer = stepup.token(query["code"][0], verifier, subject_token=stepup.upstream.token(sub))
    assert answer.status_code == 200, answer.text
    return claims_of(stepup, answer.json()["access_token"])


def register_first_passkey(stepup: Stepup, page: Page, sub: str) -> dict:
    verifier = open_stepup(stepup, page, sub)
    page.get_by_role("button", name="Create a passkey and continue").click()
    return exchange(stepup, sub, callback_query(page), verifier)


def factor_records(redis_url: str, sub: str) -> dict[bytes, bytes]:
    with redis.Redis.from_url(redis_url) as client:
        return client.hgetall(keys.factors(keys.subject_id(ISSUER_UPSTREAM, sub)))


def test_register_a_passkey_then_step_up_with_it(
    stepup: Stepup, page: Page, redis_url: str
) -> None:
    authenticator = VirtualAuthenticator(page)
    first = register_first_passkey(stepup, page, "ada")
    assert first["acr"] == "urn:stepup:acr:phr"
    assert first["amr"] == ["pop", "user", "mfa"]
    assert len(authenticator.credentials()) == 1
    assert len(factor_records(redis_url, "ada")) == 1

    stepup.clock.advance(61)  # past the scope's max_age: a new proof is needed
    verifier = open_stepup(stepup, page, "ada")
    expect(page.get_by_role("heading", name="Use your passkey or security key")).to_be_visible()
    page.get_by_role("button", name="Use passkey").click()
    second = exchange(stepup, "ada", callback_query(page), verifier)
    assert second["acr"] == "urn:stepup:acr:phr"
    assert second["amr"] == ["pop", "user", "mfa"]
    assert second["auth_time"] == int(stepup.clock.now())
    assert authenticator.credentials()[0]["signCount"] >= 2
