"""Passkeys on stepup's own pages in headless Chromium, with the DevTools virtual
authenticator: register, step up, and the ways an assertion must be refused."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import redis
from playwright.sync_api import APIResponse, Page, Request, Route, expect

from stepup.storage import keys
from tests.support.stepup import CLIENT_ID, ISSUER_UPSTREAM, REDIRECT, Stepup, pkce
from tests.support.webauthn import (
    VirtualAuthenticator,
    b64url_decode,
    callback_page_fixtures,
    callback_query,
    claims_of,
    management_url,
    module_stepup_at_origin,
)

pytestmark = pytest.mark.browser

PHR_SCOPE = "keys:admin"  # policy: urn:stepup:acr:phr, max_age 60
MFA_SCOPE = "payments:write"  # policy: urn:stepup:acr:mfa, max_age 300
PHRH_SCOPE = "vault:open"  # added below: urn:stepup:acr:phrh, max_age 0 (never reused)
FAILED = "That did not work"
SYNCED = {"defaultBackupEligibility": True, "defaultBackupState": True}


def with_device_bound_scope(document: dict[str, Any]) -> None:
    document["scopes"][PHRH_SCOPE] = {
        "acr": "urn:stepup:acr:phrh",
        "description": "Open the vault",
        "max_age": 0,
        "token_lifetime": 60,
    }
    bank = next(c for c in document["clients"] if c["client_id"] == CLIENT_ID)
    bank["scopes"].append(PHRH_SCOPE)


served, stepup = module_stepup_at_origin("webauthn", with_device_bound_scope)


context, page = callback_page_fixtures()


@pytest.fixture
def callbacks(page: Page) -> list[str]:
    """Every URL the browser was sent to at the client's redirect_uri."""
    seen: list[str] = []

    def record(request: Request) -> None:
        if request.url.startswith(REDIRECT):
            seen.append(request.url)

    page.on("request", record)
    return seen


# -- helpers --------------------------------------------------------------------------------


def authorization_url(stepup: Stepup, sub: str, scope: str, challenge: str) -> str:
    pushed = stepup.par(stepup.upstream.token(sub), scope=scope, code_challenge=challenge)
    assert pushed.status_code == 201, pushed.text
    return f"{stepup.url}/authorize?client_id=bank&request_uri={pushed.json()['request_uri']}"


def open_stepup(stepup: Stepup, page: Page, sub: str, scope: str = PHR_SCOPE) -> str:
    """PAR, then the browser opens the authorization URL; returns the code_verifier."""
    verifier, challenge = pkce()
    page.goto(authorization_url(stepup, sub, scope, challenge))
    return verifier


def redirected_at_once(stepup: Stepup, page: Page, sub: str, scope: str) -> dict[str, list[str]]:
    """The query of an authorization that answers the client at once, with no page.

    (Read off the 303 itself: page.route does not see a navigation's redirect targets.)
    """
    answer = page.request.get(authorization_url(stepup, sub, scope, pkce()[1]), max_redirects=0)
    assert answer.status == 303, answer.text()
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return parse_qs(urlsplit(location).query)


def exchange(
    stepup: Stepup, sub: str, query: dict[str, list[str]], verifier: str
) -> dict[str, Any]:
    assert "code" in query, query
    answer = stepup.token(query["code"][0], verifier, subject_token=stepup.upstream.token(sub))
    assert answer.status_code == 200, answer.text
    return claims_of(stepup, answer.json()["access_token"])


def register_first_passkey(
    stepup: Stepup, page: Page, sub: str, scope: str = PHR_SCOPE
) -> dict[str, Any]:
    verifier = open_stepup(stepup, page, sub, scope)
    page.get_by_role("button", name="Create a passkey and continue").click()
    return exchange(stepup, sub, callback_query(page), verifier)


def subject(sub: str) -> str:
    return keys.subject_id(ISSUER_UPSTREAM, sub)


def factor_records(redis_url: str, sub: str) -> dict[bytes, bytes]:
    with redis.Redis.from_url(redis_url) as client:
        records: dict[bytes, bytes] = client.hgetall(keys.factors(subject(sub)))
    return records


def only_factor(redis_url: str, sub: str) -> dict[str, Any]:
    records = list(factor_records(redis_url, sub).values())
    assert len(records) == 1, records
    factor: dict[str, Any] = json.loads(records[0])
    return factor


def stored_sign_count(redis_url: str, sub: str, factor_id: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return int(client.get(keys.sign_count(subject(sub), factor_id)) or 0)


def csrf_of(page: Page) -> str:
    return page.locator("input[name=csrf]").first.input_value()


def post_form(page: Page, url: str, csrf: str, **fields: str) -> APIResponse:
    """A POST from the page's browser context (its cookies) the way stepup.js sends it."""
    return page.request.post(
        url, form={"csrf": csrf, **fields}, headers={"Accept": "application/json"}
    )


def ceremony_options(page: Page) -> dict[str, Any]:
    """Starts the page's ceremony as stepup.js does; returns the publicKey options."""
    started = post_form(page, page.url, csrf_of(page), action="webauthn-options")
    assert started.status == 200, started.text()
    options: dict[str, Any] = started.json()["publicKey"]
    return options


def get_assertion(page: Page, options: dict[str, Any]) -> dict[str, Any]:
    """navigator.credentials.get in the page, with options the test may have changed."""
    credential: dict[str, Any] = page.evaluate(
        """async (json) => {
            const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(json);
            return (await navigator.credentials.get({ publicKey })).toJSON();
        }""",
        options,
    )
    return credential


def create_credential(page: Page, options: dict[str, Any]) -> dict[str, Any]:
    credential: dict[str, Any] = page.evaluate(
        """async (json) => {
            const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(json);
            return (await navigator.credentials.create({ publicKey })).toJSON();
        }""",
        options,
    )
    return credential


def post_credential(page: Page, credential: dict[str, Any], csrf: str | None = None) -> APIResponse:
    return post_form(
        page, page.url, csrf or csrf_of(page), action="webauthn", credential=json.dumps(credential)
    )


def assert_refused(answer: APIResponse) -> None:
    assert answer.status == 400, f"{answer.status}: {answer.text()}"
    body = answer.json()
    assert "location" not in body, body
    assert body["error"] == "verification_failed"


def flags(credential: dict[str, Any]) -> int:
    # WebAuthn §6.1: authenticatorData = rpIdHash (32) | flags (1) | signCount (4) | …
    return b64url_decode(credential["response"]["authenticatorData"])[32]


USER_VERIFIED = 0x04


# -- register and step up ---------------------------------------------------------------------


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


# -- user verification ------------------------------------------------------------------------


def test_step_up_at_phr_fails_when_the_authenticator_cannot_verify_the_user(
    stepup: Stepup, page: Page, callbacks: list[str]
) -> None:
    authenticator = VirtualAuthenticator(page)
    register_first_passkey(stepup, page, "uma")
    assert len(callbacks) == 1
    stepup.clock.advance(61)
    authenticator.set_user_verified(False)
    open_stepup(stepup, page, "uma")
    interaction = page.url
    page.get_by_role("button", name="Use passkey").click()
    # The options require user verification: the browser refuses (NotAllowedError).
    expect(page.get_by_role("status")).to_have_text(
        "That did not work. Try again, or use another way."
    )
    expect(page.get_by_role("button", name="Use passkey")).to_be_enabled()
    assert page.url == interaction
    assert len(callbacks) == 1, "a callback after a failed ceremony"


def test_assertion_without_user_verification_is_refused_at_phr(
    stepup: Stepup, page: Page, redis_url: str, callbacks: list[str]
) -> None:
    VirtualAuthenticator(page)
    register_first_passkey(stepup, page, "ulf")
    stepup.clock.advance(61)
    open_stepup(stepup, page, "ulf")
    options = ceremony_options(page)
    assert options["userVerification"] == "required"
    # A client that ignores the requirement: the authenticator signs without verifying.
    assertion = get_assertion(page, {**options, "userVerification": "discouraged"})
    assert not flags(assertion) & USER_VERIFIED
    assert_refused(post_credential(page, assertion))
    assert len(callbacks) == 1
    assert not only_factor(redis_url, "ulf")["data"].get("suspected_clone")


def test_assertion_without_user_verification_meets_mfa_without_the_mfa_amr(
    stepup: Stepup, page: Page
) -> None:
    registered_on = VirtualAuthenticator(page)
    register_first_passkey(stepup, page, "una")
    credential = registered_on.credentials()[0]
    registered_on.remove()
    # The same key on an authenticator that cannot verify its user (a security key, no PIN).
    VirtualAuthenticator(page, hasUserVerification=False, isUserVerified=False).add_credential(
        credential
    )
    stepup.clock.advance(301)  # past payments:write's max_age: the phr proof is not reused
    verifier = open_stepup(stepup, page, "una", MFA_SCOPE)
    page.get_by_role("button", name="Use passkey").click()
    claims = exchange(stepup, "una", callback_query(page), verifier)
    assert claims["acr"] == "urn:stepup:acr:mfa"
    assert claims["amr"] == ["pop", "user"]  # no "mfa": the authenticator did not verify


# -- device-bound level (phrh) ----------------------------------------------------------------


def test_synced_passkey_cannot_be_registered_at_the_device_bound_level(
    stepup: Stepup, page: Page, redis_url: str, callbacks: list[str]
) -> None:
    authenticator = VirtualAuthenticator(page, **SYNCED)
    open_stepup(stepup, page, "syd", PHRH_SCOPE)
    page.get_by_role("button", name="Create a passkey and continue").click()
    expect(page.get_by_role("status")).to_contain_text(FAILED)
    assert len(authenticator.credentials()) == 1  # the authenticator made one; stepup refused it
    assert factor_records(redis_url, "syd") == {}
    assert callbacks == []


def test_synced_passkey_is_not_offered_at_the_device_bound_level(
    stepup: Stepup, page: Page, redis_url: str
) -> None:
    VirtualAuthenticator(page, **SYNCED)
    register_first_passkey(stepup, page, "sue")
    assert only_factor(redis_url, "sue")["data"]["backup_eligible"] is True
    query = redirected_at_once(stepup, page, "sue", PHRH_SCOPE)
    assert query["error"] == ["unmet_authentication_requirements"]
    assert "code" not in query


def test_passkey_that_turns_up_synced_is_refused_at_the_device_bound_level(
    stepup: Stepup, page: Page, redis_url: str, callbacks: list[str]
) -> None:
    bound = VirtualAuthenticator(page)
    register_first_passkey(stepup, page, "sid", PHRH_SCOPE)
    credential = bound.credentials()[0]
    bound.remove()
    # The same key, now reporting itself backed up (say, moved into a passkey provider).
    synced = VirtualAuthenticator(page)
    synced.add_credential({**credential, "backupEligibility": True, "backupState": True})
    open_stepup(stepup, page, "sid", PHRH_SCOPE)
    page.get_by_role("button", name="Use passkey").click()
    expect(page.get_by_role("status")).to_contain_text(FAILED)
    assert len(callbacks) == 1  # only the registration's
    # Refused for its backup state, not its counter: it is not set aside as a clone.
    assert not only_factor(redis_url, "sid")["data"].get("suspected_clone")


def test_device_bound_passkey_steps_up_at_the_device_bound_level(
    stepup: Stepup, page: Page, redis_url: str
) -> None:
    VirtualAuthenticator(page)
    first = register_first_passkey(stepup, page, "dora", PHRH_SCOPE)
    assert first["acr"] == "urn:stepup:acr:phrh"
    assert only_factor(redis_url, "dora")["data"]["backup_eligible"] is False
    verifier = open_stepup(stepup, page, "dora", PHRH_SCOPE)  # max_age 0: always a new proof
    page.get_by_role("button", name="Use passkey").click()
    claims = exchange(stepup, "dora", callback_query(page), verifier)
    assert claims["acr"] == "urn:stepup:acr:phrh"
    assert claims["amr"] == ["pop", "user", "mfa"]


# -- replay, other users, cloned authenticators -----------------------------------------------


def test_replayed_assertion_is_refused(
    stepup: Stepup, page: Page, redis_url: str, callbacks: list[str]
) -> None:
    VirtualAuthenticator(page)
    register_first_passkey(stepup, page, "rex")
    stepup.clock.advance(61)
    open_stepup(stepup, page, "rex")
    interaction = page.url
    posted: list[str] = []

    def capture(route: Route) -> None:
        body = route.request.post_data or ""
        if route.request.method == "POST" and parse_qs(body).get("action") == ["webauthn"]:
            posted.append(body)
        route.continue_()

    page.route(interaction, capture)
    page.get_by_role("button", name="Use passkey").click()
    callback_query(page)
    assert len(posted) == 1 and len(callbacks) == 2
    fields: dict[str, str | float | bool] = {k: v[0] for k, v in parse_qs(posted[0]).items()}
    assertion = json.loads(str(fields["credential"]))

    # The same body again, to the same page: its ceremony (and the page) were used up.
    again = page.request.post(
        interaction, form=fields, headers={"Accept": "application/json"}, max_redirects=0
    )
    assert again.status == 400 and "location" not in again.json()
    # The same assertion in a new step-up, whose ceremony has a challenge of its own.
    stepup.clock.advance(61)
    open_stepup(stepup, page, "rex")
    ceremony_options(page)
    assert_refused(post_credential(page, assertion))
    assert len(callbacks) == 2
    # A replay must not get the genuine credential set aside as a clone either.
    assert not only_factor(redis_url, "rex")["data"].get("suspected_clone")


def test_webauthn_challenge_is_single_use(stepup: Stepup, page: Page, callbacks: list[str]) -> None:
    VirtualAuthenticator(page)
    register_first_passkey(stepup, page, "sam")
    stepup.clock.advance(61)
    open_stepup(stepup, page, "sam")
    assertion = get_assertion(page, ceremony_options(page))
    signature = b64url_decode(assertion["response"]["signature"])
    forged = bytes([signature[0] ^ 1]) + signature[1:]
    tampered = json.loads(json.dumps(assertion))
    tampered["response"]["signature"] = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    assert_refused(post_credential(page, tampered))
    # The genuine response to that challenge comes too late: the challenge was spent.
    assert_refused(post_credential(page, assertion))
    assert len(callbacks) == 1
    # A new ceremony on the same page works: the refusals were about the spent challenge.
    answer = post_credential(page, get_assertion(page, ceremony_options(page)))
    assert answer.status == 200, answer.text()
    assert answer.json()["location"].startswith(REDIRECT)


def test_another_users_credential_is_refused(
    stepup: Stepup, page: Page, redis_url: str, callbacks: list[str]
) -> None:
    authenticator = VirtualAuthenticator(page)
    register_first_passkey(stepup, page, "amy")
    register_first_passkey(stepup, page, "ben")
    assert len(authenticator.credentials()) == 2
    amys = only_factor(redis_url, "amy")["data"]["credential_id"]
    bens = only_factor(redis_url, "ben")["data"]["credential_id"]
    stepup.clock.advance(61)
    open_stepup(stepup, page, "ben")
    options = ceremony_options(page)
    assert [c["id"] for c in options["allowCredentials"]] == [bens]
    # Amy's passkey answers Ben's challenge: a valid signature, by the wrong user's key.
    assertion = get_assertion(
        page, {**options, "allowCredentials": [{"type": "public-key", "id": amys}]}
    )
    assert assertion["id"] == amys
    assert_refused(post_credential(page, assertion))
    assert len(callbacks) == 2  # the two registrations only
    assert not only_factor(redis_url, "amy")["data"].get("suspected_clone")


def test_sign_counter_that_does_not_grow_sets_the_passkey_aside(
    stepup: Stepup, page: Page, redis_url: str, callbacks: list[str]
) -> None:
    original = VirtualAuthenticator(page)
    register_first_passkey(stepup, page, "cal")
    factor_id = only_factor(redis_url, "cal")["id"]
    assert stored_sign_count(redis_url, "cal", factor_id) >= 1
    credential = original.credentials()[0]
    original.remove()
    # A copy of the key whose counter starts over: its next assertion repeats a seen value.
    clone = VirtualAuthenticator(page)
    clone.add_credential({**credential, "signCount": 0})
    stepup.clock.advance(61)
    open_stepup(stepup, page, "cal")
    page.get_by_role("button", name="Use passkey").click()
    expect(page.get_by_role("status")).to_contain_text(FAILED)
    assert len(callbacks) == 1
    assert only_factor(redis_url, "cal")["data"]["suspected_clone"] is True
    # Set aside: not offered again, so no factor meets the level.
    stepup.clock.advance(61)
    query = redirected_at_once(stepup, page, "cal", PHR_SCOPE)
    assert query["error"] == ["unmet_authentication_requirements"]


# -- enrolment is protected -------------------------------------------------------------------


def totp_user(stepup: Stepup, sub: str) -> str:
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub=sub)
    return secret


def test_passkey_cannot_be_added_before_an_existing_factor_is_proven(
    stepup: Stepup, page: Page, redis_url: str
) -> None:
    VirtualAuthenticator(page)
    totp_user(stepup, "tom")
    before = factor_records(redis_url, "tom")
    page.goto(management_url(stepup, "tom"))
    expect(page.get_by_text("First, prove it is you")).to_be_visible()
    # Unproven, the page's ceremony can only be one that proves a passkey, never a registration.
    options = ceremony_options(page)
    assert "user" not in options and options["allowCredentials"] == []
    # A registration response made with that challenge is refused all the same.
    registration = create_credential(
        page,
        {
            "challenge": options["challenge"],
            "rp": {"id": "localhost", "name": "stepup"},
            "user": {"id": "dG9t", "name": "tom", "displayName": "tom"},
            "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
        },
    )
    refused = post_credential(page, registration)
    assert refused.status == 400, refused.text()
    assert "location" not in refused.json()
    assert factor_records(redis_url, "tom") == before
    # Other changes are refused outright.
    for action in ("recovery-new", "confirm", "remove", "rename"):
        answer = post_form(page, page.url, csrf_of(page), action=action, factor="x", name="x")
        assert answer.status == 403, f"{action}: {answer.status}"
    assert factor_records(redis_url, "tom") == before


def test_after_proving_totp_a_passkey_can_be_added(
    stepup: Stepup, page: Page, redis_url: str
) -> None:
    authenticator = VirtualAuthenticator(page)
    secret = totp_user(stepup, "tia")
    page.goto(management_url(stepup, "tia"))
    stepup.clock.advance(30)  # a fresh time step
    page.get_by_label("Code from your current authenticator app").fill(
        pyotp.TOTP(secret).at(stepup.clock.now())
    )
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Name for this passkey").fill("Laptop")
    page.get_by_role("button", name="Create a passkey").click()
    expect(page.get_by_role("status").first).to_have_text("Passkey “Laptop” added.")
    names = page.locator(".factor-name strong")
    expect(names).to_have_text(["Authenticator app", "Laptop"])
    assert len(authenticator.credentials()) == 1
    kinds = sorted(json.loads(r)["kind"] for r in factor_records(redis_url, "tia").values())
    assert kinds == ["totp", "webauthn"]
