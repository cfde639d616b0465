"""The newcomer's loop, clicked through in headless Chromium: demo bank → payment →
RFC 9470 challenge → stepup page showing the payment → TOTP enrolment → payment succeeds →
token revoked; the next payment is shown and proven again.

The whole loop is DPoP-bound (RFC 9449), and a thief is on the bank's wire: every elevated
token stepup hands the bank is copied and tried at the payments API (as Bearer, and with a
proof by the thief's own key) before the bank itself uses it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import redis
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from playwright.sync_api import Page, expect
from starlette.applications import Starlette

from stepup.app import create_app
from stepup.client import DPoPSigner
from stepup.config import load
from stepup.demo.client import create_demo_apps
from stepup.demo.policy import DemoSettings, write_demo_policy
from tests.support.server import LiveServer, bound_socket
from tests.support.webauthn import VirtualAuthenticator

pytestmark = pytest.mark.browser


@dataclass
class Stolen:
    """What the thief got at the API with a copy of one elevated token."""

    token_response: dict[str, Any]
    # how → (status, error) of the API's answer
    answers: dict[str, tuple[int, str | None]] = field(default_factory=dict)


class Wiretap(httpx.AsyncBaseTransport):
    """The bank's real network, with a thief on it who copies each token stepup's token
    endpoint hands out and tries it at the payments API before the bank gets it."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self.network = httpx.AsyncHTTPTransport()
        self.stolen: list[Stolen] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.network.handle_async_request(request)
        if request.method != "POST" or str(request.url) != self.settings.stepup_issuer + "/token":
            return response
        body = await response.aread()
        await response.aclose()
        if response.status_code == 200:
            self.stolen.append(await self._try(json.loads(body)))
        return httpx.Response(
            response.status_code, headers=response.headers, content=body, request=request
        )

    async def _try(self, token_response: dict[str, Any]) -> Stolen:
        token = token_response["access_token"]
        # The payment it was approved for is in the token response too (RFC 9396 §7).
        detail = token_response["authorization_details"][0]
        payment = {"amount": detail["instructedAmount"]["amount"], "payee": detail["creditorName"]}
        url = self.settings.api_base + "/payments"
        thief = DPoPSigner(ECKey.generate_key("P-256"))
        tries = {
            "as Bearer": {"Authorization": f"Bearer {token}"},
            "with another key": {
                "Authorization": f"DPoP {token}",
                "DPoP": thief.proof("POST", url, token),
            },
        }
        stolen = Stolen(token_response)
        async with httpx.AsyncClient() as http:
            for how, headers in tries.items():
                answer = await http.post(url, json=payment, headers=headers)
                stolen.answers[how] = (answer.status_code, answer.json().get("error"))
        return stolen

    async def aclose(self) -> None:
        await self.network.aclose()


@dataclass
class Demo:
    settings: DemoSettings
    redis_url: str
    wiretap: Wiretap
    bank_jkt: str


@pytest.fixture
def demo(tmp_path: Path, redis_url: str) -> Iterator[Demo]:
    sockets = [bound_socket() for _ in range(3)]
    ports = [s.getsockname()[1] for s in sockets]
    settings = DemoSettings(
        stepup_issuer=f"http://localhost:{ports[0]}",
        client_base=f"http://localhost:{ports[1]}",
        api_base=f"http://localhost:{ports[2]}",
    )
    config = load(write_demo_policy(tmp_path, settings))
    wiretap = Wiretap(settings)
    client_app, api_app = create_demo_apps(settings, tmp_path, transport=wiretap)
    assert isinstance(client_app, Starlette)
    with ExitStack() as stack:
        for app, sock in zip(
            (create_app(config, redis_url=redis_url), client_app, api_app), sockets, strict=True
        ):
            stack.enter_context(LiveServer(app, sock=sock))
        yield Demo(settings, redis_url, wiretap, client_app.state.bank.dpop.jkt)


def _check_bound_and_stolen_in_vain(demo: Demo, stolen: Stolen) -> None:
    """E is DPoP-bound to the bank's key (its signed cnf.jkt), and the thief who copied it
    was refused both ways."""
    assert stolen.token_response["token_type"] == "DPoP"
    jwks = httpx.get(demo.settings.stepup_issuer + "/jwks").json()
    token = jwt.decode(stolen.token_response["access_token"], KeySet.import_key_set(jwks))
    assert token.claims["cnf"] == {"jkt": demo.bank_jkt}
    assert stolen.answers == {
        "as Bearer": (401, "invalid_token"),
        "with another key": (401, "invalid_token"),
    }


def _pay(page: Page, amount: str, payee: str) -> None:
    page.get_by_label("Amount").fill(amount)
    page.get_by_label("Payee").fill(payee)
    page.get_by_role("button", name="Send payment").click()


def test_newcomer_pays_with_a_step_up_and_the_elevated_token_is_revoked(
    page: Page, demo: Demo
) -> None:
    settings = demo.settings
    page.goto(settings.client_base)
    page.get_by_role("button", name=f"Sign in as {settings.user}").click()
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()

    _pay(page, "25.00", "Bob's Bikes")
    # The API answered with an RFC 9470 challenge; the bank pushed it to stepup, and the
    # browser is now on stepup's own page, which says who asks and for what.
    assert page.url.startswith(settings.stepup_issuer + "/interaction/")
    expect(page.get_by_role("heading", name="Confirm it’s you")).to_be_visible()
    expect(page.get_by_text("Demo Bank", exact=True)).to_be_visible()
    expect(page.get_by_text("Send payments from your account")).to_be_visible()
    # RFC 9396: the payment itself, in plain words, before any factor is proven.
    expect(page.get_by_text("Pay 25.00 EUR to Bob's Bikes")).to_be_visible()
    expect(page.locator("svg title")).to_have_text("QR code for your authenticator app")

    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on and continue").click()

    expect(page.get_by_role("heading", name="Payment sent")).to_be_visible()
    expect(page.get_by_text("Elevated token revoked")).to_be_visible()
    assert page.url.startswith(settings.client_base)
    # The payment went through with E and a proof by the bank's key, after the thief's
    # copy of E was refused twice (and did not use up the single-use approval).
    (stolen,) = demo.wiretap.stolen
    _check_bound_and_stolen_in_vain(demo, stolen)
    expect(page.get_by_text(demo.bank_jkt)).to_be_visible()

    # A payment is approved for itself (dynamic linking): within max_age, the next one is
    # still shown and needs a new proof. The next time step's code (one step of skew is
    # allowed) is a new code, where the first one's would be refused as a replay.
    page.goto(settings.client_base + "/account")
    _pay(page, "5.00", "Corner Shop")
    assert page.url.startswith(settings.stepup_issuer + "/interaction/")
    expect(page.get_by_text("Pay 5.00 EUR to Corner Shop")).to_be_visible()
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(secret).at(time.time() + 30)
    )
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", name="Payment sent")).to_be_visible()
    assert len(demo.wiretap.stolen) == 2
    _check_bound_and_stolen_in_vain(demo, demo.wiretap.stolen[1])

    # Every elevated token the flow issued was revoked: none is left in Redis.
    with redis.Redis.from_url(demo.redis_url) as client:
        assert list(client.scan_iter("stepup:tok:*")) == []
        assert len(list(client.scan_iter("stepup:{s:*}:factors"))) == 1


def test_newcomer_adds_a_passkey_from_the_bank_then_pays_with_it(page: Page, demo: Demo) -> None:
    settings = demo.settings
    VirtualAuthenticator(page)
    page.goto(settings.client_base)
    page.get_by_role("button", name=f"Sign in as {settings.user}").click()
    page.get_by_role("button", name="Manage sign-in factors").click()

    # stepup's management page, reached through the bank's enrolment link.
    assert page.url.startswith(settings.stepup_issuer + "/enroll/")
    expect(page.get_by_role("heading", name="Your sign-in factors")).to_be_visible()
    page.get_by_label("Name for this passkey").fill("Laptop")
    page.get_by_role("button", name="Create a passkey").click()
    expect(page.get_by_role("status").filter(has_text="Passkey “Laptop” added")).to_be_visible()
    expect(page.get_by_text("Laptop", exact=True)).to_be_visible()
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()

    _pay(page, "12.50", "Corner Shop")
    expect(page.get_by_role("heading", name="Confirm it’s you")).to_be_visible()
    page.get_by_role("button", name="Use passkey").click()
    expect(page.get_by_role("heading", name="Payment sent")).to_be_visible()
    (stolen,) = demo.wiretap.stolen
    _check_bound_and_stolen_in_vain(demo, stolen)
