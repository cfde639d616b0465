"""The verification page of a transaction-bound request (RFC 9396): the details in plain
words before any factor is proven, escaped, and never approved by an earlier proof."""

from __future__ import annotations

import html
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.support.oauth import module_server
from tests.support.own_issuer import claims_of
from tests.support.stepup import REDIRECT, Stepup, payment, pkce

live_stepup, stepup = module_server("details-page")


def open_page(
    stepup: Stepup, browser: httpx.Client, details: list[dict[str, Any]], sub: str = "alice"
) -> httpx.Response:
    pushed = stepup.par(stepup.upstream.token(sub), authorization_details=json.dumps(details))
    assert pushed.status_code == 201, pushed.text
    return stepup.open_authorization(browser, pushed.json()["request_uri"])


def text_of(page: str) -> str:
    """The page's visible text, tags dropped and entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_the_page_says_what_is_paid_to_whom_before_a_factor_is_proven(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser, [payment("500.00", "EUR", "Bob's Bikes")])
    assert page.status_code == 200
    text = text_of(page.text)
    assert "This transaction only: Pay 500.00 EUR to Bob's Bikes" in text
    assert "Payee Bob's Bikes" in text
    # It sits in the "what is being approved" part, above the factor form.
    assert page.text.index("Pay 500.00 EUR") < page.text.index('name="code"')
    assert 'aria-labelledby="details-heading"' in page.text


def test_several_details_are_each_shown(stepup: Stepup) -> None:
    details = [payment("12.00", payee="Corner Shop"), payment("7.50", "USD", "Book Nook")]
    with stepup.browser() as browser:
        page = open_page(stepup, browser, details)
    text = text_of(page.text)
    assert "These transactions only:" in text
    assert "Pay 12.00 EUR to Corner Shop" in text
    assert "Pay 7.50 USD to Book Nook" in text


def test_details_are_escaped_on_the_page(stepup: Stepup) -> None:
    payee = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    with stepup.browser() as browser:
        page = open_page(stepup, browser, [payment(payee=payee)])
    assert "<script>alert" not in page.text
    assert "<img src=x" not in page.text
    assert "&lt;script&gt;alert(" in page.text
    assert f"Pay 500.00 EUR to {payee}" in text_of(page.text)


def test_optional_fields_are_shown_too(stepup: Stepup) -> None:
    detail = payment(remittanceInformationUnstructured="Invoice 42", actions=["initiate"])
    with stepup.browser() as browser:
        page = open_page(stepup, browser, [detail])
    text = text_of(page.text)
    assert "Reference Invoice 42" in text  # the policy's label
    assert "actions initiate" in text  # no label: the field's name
    assert "Amount 500.00" in text
    assert "instructedAmount currency EUR" in text  # nested, no label: the path


def test_a_transaction_bound_request_never_reuses_a_recent_step_up(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub="dora")
        stepup.clock.advance(10)  # well within payments:write's max_age of 300
        # Without details the proof would be reused at once (a 303 with a code)…
        verifier, challenge = pkce()
        pushed = stepup.par(
            stepup.upstream.token("dora"),
            authorization_details=json.dumps([payment("99.00")]),
            code_challenge=challenge,
        )
        started = browser.get(
            "/authorize",
            params={"client_id": "bank", "request_uri": pushed.json()["request_uri"]},
        )
        # …with them the user is shown this transaction and proves a factor for it.
        assert started.status_code == 303
        assert started.headers["location"].startswith("/interaction/")
        page = browser.get(started.headers["location"])
        assert "Pay 99.00 EUR" in text_of(page.text)
        answer = stepup.prove_totp(browser, page, secret)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(REDIRECT)
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    token = stepup.token(code, verifier, stepup.upstream.token("dora")).json()["access_token"]
    claims = claims_of(token)
    # auth_time is the proof made for this transaction, not the earlier one.
    assert claims["auth_time"] == int(stepup.clock.now())
    assert claims["authorization_details"] == [payment("99.00")]


def test_a_request_without_details_still_reuses_a_recent_step_up(stepup: Stepup) -> None:
    # The rule is narrow: only transaction-bound requests lose reuse.
    with stepup.browser() as browser:
        stepup.step_up(browser, sub="emil")
        stepup.clock.advance(10)
        pushed = stepup.par(stepup.upstream.token("emil"))
        started = browser.get(
            "/authorize",
            params={"client_id": "bank", "request_uri": pushed.json()["request_uri"]},
        )
    assert started.status_code == 303
    assert started.headers["location"].startswith(REDIRECT)
    assert "code" in parse_qs(urlsplit(started.headers["location"]).query)
