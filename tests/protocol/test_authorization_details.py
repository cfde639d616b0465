"""Authorization details (RFC 9396) through the protocol: intake at /par against the policy's
types, the elevated token and token response carrying them, narrowing at /token, introspection,
and the metadata document. Real HTTP, real Redis."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Unpack

import httpx
import pytest
import redis
from joserfc.jwk import ECKey

from stepup.models import PendingRequest, load
from stepup.protocol.metadata import metadata
from stepup.protocol.par import REQUEST_URI_PREFIX
from stepup.signing import SigningKeys
from stepup.storage import keys
from tests.support.oauth import assert_oauth_error, module_server
from tests.support.own_issuer import claims_of
from tests.support.stepup import (
    ACCOUNTS,
    API,
    OTHER_API,
    OTHER_ID,
    OTHER_SECRET,
    PAYMENT,
    ParFields,
    Stepup,
    TokenFields,
    payment,
)

live_stepup, stepup = module_server("details")


def par_with(
    stepup: Stepup,
    details: Any,
    subject_token: str | None = None,
    *,
    auth: tuple[str, str] | None = None,
    **fields: Unpack[ParFields],
) -> httpx.Response:
    fields["authorization_details"] = details if isinstance(details, str) else json.dumps(details)
    return stepup.par(subject_token, auth=auth, **fields)


def elevated(
    stepup: Stepup,
    details: list[dict[str, Any]],
    sub: str = "alice",
    **token_fields: Unpack[TokenFields],
) -> httpx.Response:
    """A real step-up for `details` and its token exchange: the /token answer."""
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(
            browser, None, sub, authorization_details=json.dumps(details)
        )
    return stepup.token(query["code"][0], verifier, stepup.upstream.token(sub), **token_fields)


# -- intake ---------------------------------------------------------------------------------

INVALID: dict[str, Any] = {
    "not JSON": "[{",
    "an object, not an array": {"type": PAYMENT},
    "an empty array": [],
    "a string in the array": ["payment_initiation"],
    "no type": [{"creditorName": "Bob"}],
    "type not a string": [{"type": 7}],
    "unknown type": [{"type": "crypto_transfer"}],
    "unknown field": [payment(iban="DE00")],
    "unknown nested field": [
        {**payment(), "instructedAmount": {"amount": "5", "currency": "EUR", "rate": "1"}}
    ],
    "required field missing": [{"type": PAYMENT, "creditorName": "Bob"}],
    "required nested field missing": [
        {"type": PAYMENT, "creditorName": "Bob", "instructedAmount": {"amount": "5"}}
    ],
    "amount as a JSON number": [
        {**payment(), "instructedAmount": {"amount": 500, "currency": "EUR"}}
    ],
    "amount with three decimals": [payment(amount="1.005")],
    "negative amount": [payment(amount="-5")],
    "amount in exponent form": [payment(amount="1e3")],
    "amount above the maximum": [payment(amount="10000.01")],
    "currency not in the list": [payment(currency="GBP")],
    "currency in lower case": [payment(currency="eur")],
    "payee too long": [payment(payee="x" * 71)],
    "payee empty": [payment(payee="")],
    "payee with a control character": [payment(payee="Bob\u0000")],
    "action not in the list": [payment(actions=["refund"])],
    "actions not a list": [payment(actions="initiate")],
    "an action twice": [payment(actions=["initiate", "initiate"])],
    "a location that is not the resource": [payment(locations=["https://evil.example"])],
    "too many details": [payment()] * 9,
    "an object where an amount goes": [
        {**payment(), "instructedAmount": {"amount": {"x": {"y": [[[]]]}}, "currency": "EUR"}}
    ],
    "deeper than the parser": "[" * 4000 + "]" * 4000,
    "longer than the bound": "[" + " " * 8200 + "]",
    "a type another client may use": [{"type": ACCOUNTS, "identifier": "acc-1"}],
    # RFC 8259 §4: names SHOULD be unique; parsers disagree on which of two wins, so what a
    # client (or a filter in front of stepup) read could differ from what the user approves.
    "a field twice": '[{"type": "payment_initiation", "creditorName": "Bob", '
    '"instructedAmount": {"amount": "5.00", "currency": "EUR"}, "creditorName": "Mallory"}]',
    "a nested field twice": '[{"type": "payment_initiation", "creditorName": "Bob", '
    '"instructedAmount": {"amount": "5.00", "currency": "EUR", "amount": "5000.00"}}]',
    "the type twice": '[{"type": "account_information", "type": "payment_initiation", '
    '"creditorName": "Bob", "instructedAmount": {"amount": "5.00", "currency": "EUR"}}]',
    "NaN as an amount": '[{"type": "payment_initiation", "creditorName": "Bob", '
    '"instructedAmount": {"amount": NaN, "currency": "EUR"}}]',
    "Infinity as an amount": '[{"type": "payment_initiation", "creditorName": "Bob", '
    '"instructedAmount": {"amount": Infinity, "currency": "EUR"}}]',
    "a huge number": '[{"type": "payment_initiation", "creditorName": "Bob", '
    '"instructedAmount": {"amount": ' + "9" * 5000 + ', "currency": "EUR"}}]',
    "an amount with a leading plus": [payment(amount="+5.00")],
    "a bidi override in the payee": [payment(payee="Bob\u202e sekiB")],
    "a zero-width space in the payee": [payment(payee="Bob\u200b")],
    "a line break in the payee": [payment(payee="Bob\nMallory")],
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_details_are_invalid_authorization_details(stepup: Stepup, case: str) -> None:
    body = assert_oauth_error(par_with(stepup, INVALID[case]), 400, "invalid_authorization_details")
    # The description names what is wrong, starting from the parameter.
    assert body["error_description"].startswith("authorization_details")


def test_a_type_whose_scope_is_not_asked_for_is_refused(stepup: Stepup) -> None:
    response = par_with(stepup, [payment()], scope="audit:read", challenge=None)
    body = assert_oauth_error(response, 400, "invalid_authorization_details")
    assert "payments:write" in body["error_description"]


def test_a_type_limited_to_a_client_is_accepted_from_it(stepup: Stepup) -> None:
    response = par_with(
        stepup,
        [{"type": ACCOUNTS, "identifier": "acc-1"}],
        auth=(OTHER_ID, OTHER_SECRET),
        redirect_uri="http://localhost:9998/cb",
        subject_token=stepup.upstream.token(client_id=OTHER_ID),
    )
    assert response.status_code == 201, response.text


def test_locations_naming_the_requested_resource_are_accepted(stepup: Stepup) -> None:
    assert par_with(stepup, [payment(locations=[API])]).status_code == 201
    refused = par_with(stepup, [payment(locations=[API, OTHER_API])])
    assert_oauth_error(refused, 400, "invalid_authorization_details")


def test_valid_details_are_stored_with_the_request_as_sent(stepup: Stepup, redis_url: str) -> None:
    details = [payment("500", "EUR", "Bob's Bikes", actions=["initiate"]), payment("7.5", "USD")]
    response = par_with(stepup, details)
    assert response.status_code == 201, response.text
    request_id = response.json()["request_uri"].removeprefix(REQUEST_URI_PREFIX)
    with redis.Redis.from_url(redis_url) as client:
        raw = client.get(keys.pending_request(request_id))
    assert raw is not None
    assert load(PendingRequest, raw).authorization_details == details


def test_an_empty_parameter_is_no_details(stepup: Stepup) -> None:
    response = stepup.par(authorization_details="")
    assert response.status_code == 201, response.text


# -- the elevated token and the token response ---------------------------------------------


def test_token_and_token_response_carry_the_approved_details(stepup: Stepup) -> None:
    details = [payment()]
    response = elevated(stepup, details)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["authorization_details"] == details
    assert claims_of(body["access_token"])["authorization_details"] == details


def test_introspection_returns_the_approved_details(stepup: Stepup) -> None:
    details = [payment(actions=["initiate", "status"], locations=[API])]
    token = elevated(stepup, details).json()["access_token"]
    answer = stepup.introspect(token).json()
    assert answer["active"] is True
    assert answer["authorization_details"] == details


def test_a_token_without_details_says_nothing_of_them(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser)
    body = stepup.token(query["code"][0], verifier).json()
    assert "authorization_details" not in body
    assert "authorization_details" not in claims_of(body["access_token"])
    assert "authorization_details" not in stepup.introspect(body["access_token"]).json()


# -- narrowing at the token endpoint (RFC 9396 §6.1) ----------------------------------------

APPROVED = [
    payment("500.00", actions=["initiate", "status"]),
    payment("20.00", payee="Corner Shop"),
]

NARROWER: dict[str, list[dict[str, Any]]] = {
    "the same": APPROVED,
    "one of two": [APPROVED[1]],
    "fewer actions": [payment("500.00", actions=["initiate"])],
    "the same amount written otherwise": [payment("500", actions=["initiate", "status"])],
}

WIDER: dict[str, list[dict[str, Any]]] = {
    "another amount": [payment("5000.00", actions=["initiate", "status"])],
    "another payee": [payment("500.00", payee="Mallory", actions=["initiate", "status"])],
    "another currency": [payment("500.00", "USD", actions=["initiate", "status"])],
    "a field left out": [payment("500.00")],
    "a field added": [payment("500.00", actions=["initiate", "status"], locations=[API])],
    "an action added": [payment("20.00", payee="Corner Shop", actions=["initiate"])],
    "another detail added": [*APPROVED, payment("1.00")],
    # One approved payment is one payment: repeated, or split by its actions, it would pay
    # twice at an API that executes each detail of the token.
    "an approved payment twice": [APPROVED[0], APPROVED[0]],
    "the other approved payment twice": [APPROVED[1], APPROVED[1], APPROVED[0]],
    "one payment split in two": [
        payment("500.00", actions=["initiate"]),
        payment("500.00", actions=["status"]),
    ],
}


@pytest.mark.parametrize("case", sorted(NARROWER))
def test_token_request_may_repeat_or_narrow_the_details(stepup: Stepup, case: str) -> None:
    asked = NARROWER[case]
    response = elevated(stepup, APPROVED, authorization_details=json.dumps(asked))
    assert response.status_code == 200, response.text
    assert response.json()["authorization_details"] == asked
    assert claims_of(response.json()["access_token"])["authorization_details"] == asked


@pytest.mark.parametrize("case", sorted(WIDER))
def test_token_request_may_not_widen_the_details(stepup: Stepup, case: str) -> None:
    response = elevated(stepup, APPROVED, authorization_details=json.dumps(WIDER[case]))
    assert_oauth_error(response, 400, "invalid_authorization_details")


def test_token_request_with_details_for_a_code_approved_without_any_is_refused(
    stepup: Stepup,
) -> None:
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser)
    response = stepup.token(
        query["code"][0], verifier, authorization_details=json.dumps([payment()])
    )
    assert_oauth_error(response, 400, "invalid_authorization_details")


def test_narrowing_the_scope_away_from_the_details_type_is_refused(stepup: Stepup) -> None:
    response = elevated(stepup, [payment()], scope="audit:read")  # approved for payments:write only
    assert_oauth_error(response, 400, "invalid_scope")
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(
            browser,
            None,
            "nora",
            scope="payments:write audit:read",
            authorization_details=json.dumps([payment()]),
        )
    narrowed = stepup.token(
        query["code"][0], verifier, stepup.upstream.token("nora"), scope="audit:read"
    )
    body = assert_oauth_error(narrowed, 400, "invalid_authorization_details")
    assert "payments:write" in body["error_description"]


# -- single use is said in the token and in the introspection answer -----------------------


def test_a_single_use_token_says_so_and_its_introspection_says_so_once(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, scope="audit:read")
    token = stepup.token(query["code"][0], verifier).json()["access_token"]
    assert claims_of(token)["single_use"] is True
    first = stepup.introspect(token).json()
    assert (first["active"], first["single_use"]) == (True, True)
    assert stepup.introspect(token).json() == {"active": False}


def test_a_reusable_token_is_not_marked_single_use(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser)
    token = stepup.token(query["code"][0], verifier).json()["access_token"]
    assert "single_use" not in claims_of(token)
    assert "single_use" not in stepup.introspect(token).json()


# -- metadata --------------------------------------------------------------------------------


def test_metadata_lists_the_configured_types(stepup: Stepup) -> None:
    document = stepup.http.get("/.well-known/oauth-authorization-server").json()
    assert document["authorization_details_types_supported"] == [ACCOUNTS, PAYMENT]


def test_metadata_without_types_leaves_the_key_out(stepup: Stepup) -> None:
    config = replace(stepup.config, authorization_details={})
    signing = SigningKeys([ECKey.generate_key("P-256", private=True, auto_kid=True)])
    assert "authorization_details_types_supported" not in metadata(config, signing)
