"""WebAuthn in real Chromium: a stepup whose issuer is the origin the browser sees, and the
DevTools virtual authenticator (CDP `WebAuthn` domain) standing in for a passkey."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import Browser, BrowserContext, Page

from stepup.clock import FrozenClock
from stepup.storage.embedded import EmbeddedRedis
from tests.support.own_issuer import stepup_at_own_url
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT,
    Stepup,
    Upstream,
    frozen_now,
)

DocumentEdit = Callable[[dict[str, Any]], None]


@contextmanager
def stepup_at_origin(
    upstream: Upstream,
    data_dir: Path,
    redis_url: str,
    clock: FrozenClock,
    document_edit: DocumentEdit | None = None,
    **limits: Any,
) -> Iterator[Stepup]:
    """A stepup whose issuer is http://localhost:PORT, the origin its pages are served from:
    WebAuthn checks the origin and RP ID (`localhost`) a credential was used at.
    `document_edit` may change the policy document (scopes, factors, throttle) first."""

    def edit(document: dict[str, Any]) -> None:
        document["limits"] = limits
        if document_edit is not None:
            document_edit(document)

    with stepup_at_own_url(data_dir, redis_url, clock, upstream, edit=edit) as stepup:
        yield stepup


@contextmanager
def stepup_for_module(
    redis_url: str, directory: Path, document_edit: DocumentEdit | None = None
) -> Iterator[Stepup]:
    """One stepup at its origin for a whole test module, with its own upstream and clock.

    It keeps nothing but files (keys) outside Redis, so tests share it safely as long as
    each empties Redis first (the `redis_url` fixture) and reads time from `stepup.clock`.
    """
    clock = frozen_now()
    upstream = Upstream(directory, clock)
    with stepup_at_origin(
        upstream, directory / "data", redis_url, clock, document_edit=document_edit
    ) as stepup:
        yield stepup


def module_stepup_at_origin(
    label: str, document_edit: DocumentEdit | None = None
) -> tuple[Callable[..., Iterator[Stepup]], Callable[..., Stepup]]:
    """Fixtures `served` (one stepup at its origin per module) and `stepup` (that server, with
    Redis emptied before each test by `redis_url`). Assign both names in the module."""

    @pytest.fixture(scope="module")
    def served(
        redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Stepup]:
        with stepup_for_module(
            redis_server.url, tmp_path_factory.mktemp(label), document_edit
        ) as running:
            yield running

    @pytest.fixture
    def stepup(served: Stepup, redis_url: str) -> Stepup:
        return served

    return served, stepup


class VirtualAuthenticator:
    """A CTAP2 platform authenticator inside the page's browser context."""

    def __init__(self, page: Page, **options: Any) -> None:
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("WebAuthn.enable", {"enableUI": False})
        settings = {
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": True,
            "hasUserVerification": True,
            "isUserVerified": True,
            "automaticPresenceSimulation": True,
        }
        settings.update(options)
        answer = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": settings})
        self.id: str = answer["authenticatorId"]

    def set_user_verified(self, verified: bool) -> None:
        self.cdp.send(
            "WebAuthn.setUserVerified",
            {"authenticatorId": self.id, "isUserVerified": verified},
        )

    def credentials(self) -> list[dict[str, Any]]:
        answer = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})
        found: list[dict[str, Any]] = answer["credentials"]
        return found

    def add_credential(self, credential: dict[str, Any]) -> None:
        self.cdp.send(
            "WebAuthn.addCredential", {"authenticatorId": self.id, "credential": credential}
        )

    def remove(self) -> None:
        self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.id})


def management_url(stepup: Stepup, sub: str) -> str:
    """A factor management link for `sub`, as a client asks for it (POST /enroll)."""
    created = stepup.http.post(
        "/enroll",
        data={"subject_token": stepup.upstream.token(sub), "subject_token_type": ACCESS_TOKEN_TYPE},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert created.status_code == 201, created.text
    url: str = created.json()["enrollment_uri"]
    return url


def answer_callbacks(page: Page) -> None:
    """The client's redirect_uri has no server behind it: answer it inside the browser."""
    page.route(REDIRECT + "*", lambda route: route.fulfill(status=200, body="client callback"))


def callback_query(page: Page) -> dict[str, list[str]]:
    page.wait_for_url(REDIRECT + "?*")
    return parse_qs(urlsplit(page.url).query)


def claims_of(stepup: Stepup, token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(stepup.http.get("/jwks").json())
    decoded = jwt.decode(token, keys)
    return dict(decoded.claims)


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def json_of(text: str) -> Any:
    return json.loads(text)


def new_context(browser: Browser, **options: Any) -> BrowserContext:
    """A fresh browser context (own cookies and storage) whose waits give up after 10 s."""
    context = browser.new_context(**options)
    context.set_default_timeout(10_000)
    return context


def callback_page_fixtures(
    **options: Any,
) -> tuple[Callable[..., Iterator[BrowserContext]], Callable[..., Page]]:
    """Fixtures `context` (a `new_context` with `options`, closed after the test) and `page`
    (a page in it whose client redirects `answer_callbacks` answers). Assign both names in
    the module: `context, page = callback_page_fixtures()`."""

    @pytest.fixture
    def context(browser: Browser) -> Iterator[BrowserContext]:
        context = new_context(browser, **options)
        try:
            yield context
        finally:
            context.close()

    @pytest.fixture
    def page(context: BrowserContext) -> Page:
        page = context.new_page()
        answer_callbacks(page)
        return page

    return context, page
