"""The factor management page (/enroll/{id}) in headless Chromium: prove a factor, rename and
remove factors, and recovery codes from creation (shown once, copy, download) to use."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Page, expect

from stepup.clock import FrozenClock
from stepup.storage import keys
from tests.support.stepup import ISSUER_UPSTREAM, REDIRECT, Stepup, Upstream, hidden, pkce
from tests.support.webauthn import (
    VirtualAuthenticator,
    answer_callbacks,
    callback_page_fixtures,
    claims_of,
    management_url,
    module_stepup_at_origin,
    new_context,
    stepup_at_origin,
)

pytestmark = pytest.mark.browser

FAILED = "That did not work"


def few_recovery_codes(document: dict[str, Any]) -> None:
    # Each code costs a deliberately slow hash (scrypt): the policy's smallest set keeps
    # the tests quick; how many there are is read from the config, not assumed.
    document["factors"] = {"recovery_codes": 4}


served, stepup = module_stepup_at_origin("manage", few_recovery_codes)


def warn_on_last_factor(document: dict[str, Any]) -> None:
    document["factors"] = {"last_factor": "warn"}


@pytest.fixture
def warning_stepup(
    upstream: Upstream, tmp_path: Path, redis_url: str, clock: FrozenClock
) -> Iterator[Stepup]:
    with stepup_at_origin(
        upstream, tmp_path / "data", redis_url, clock, document_edit=warn_on_last_factor
    ) as running:
        yield running


context, page = callback_page_fixtures()


# -- helpers --------------------------------------------------------------------------------


def factor_records(redis_url: str, sub: str) -> list[dict[str, Any]]:
    with redis.Redis.from_url(redis_url) as client:
        raw = client.hgetall(keys.factors(keys.subject_id(ISSUER_UPSTREAM, sub)))
    return sorted((json.loads(v) for v in raw.values()), key=lambda f: str(f["kind"]))


def totp_user(stepup: Stepup, sub: str) -> str:
    """A user whose first factor (an authenticator app) was enrolled during a step-up."""
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub=sub)
    return secret


def fresh_code(stepup: Stepup, secret: str) -> str:
    stepup.clock.advance(30)  # each proof in its own time step: a code is accepted once
    return pyotp.TOTP(secret).at(stepup.clock.now())


def prove_with_totp(stepup: Stepup, page: Page, secret: str) -> None:
    page.get_by_label("Code from your current authenticator app").fill(fresh_code(stepup, secret))
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="What you have")).to_be_visible()


def managing(stepup: Stepup, page: Page, sub: str, secret: str) -> None:
    page.goto(management_url(stepup, sub))
    prove_with_totp(stepup, page, secret)


def add_passkey(page: Page, name: str) -> None:
    page.get_by_label("Name for this passkey").fill(name)
    page.get_by_role("button", name="Create a passkey").click()
    expect(page.locator(".notice")).to_have_text(f"Passkey “{name}” added.")


def factor_names(page: Page) -> list[str]:
    return page.locator(".factor-name strong").all_inner_texts()


def recovery_codes(stepup: Stepup, sub: str, secret: str, sets: int = 1) -> list[list[str]]:
    """Creates `sets` sets of recovery codes through the management page (over HTTP)."""
    path = urlsplit(management_url(stepup, sub)).path
    made = []
    with stepup.browser() as browser:
        page = browser.get(path)
        data = {"csrf": hidden(page.text, "csrf")}
        proven = browser.post(
            path, data={**data, "action": "prove", "code": fresh_code(stepup, secret)}
        )
        assert proven.status_code == 200, proven.text
        for _ in range(sets):
            answer = browser.post(path, data={**data, "action": "recovery-new"})
            assert answer.status_code == 200, answer.text
            made.append(re.findall(r"<li><code>([0-9a-z-]+)</code></li>", answer.text))
    assert all(len(codes) == stepup.config.factors.recovery_codes for codes in made)
    return made


def open_stepup(stepup: Stepup, page: Page, sub: str, scope: str = "audit:read") -> str:
    """A step-up the user must prove (audit:read is never reused); returns the code_verifier."""
    verifier, challenge = pkce()
    pushed = stepup.par(stepup.upstream.token(sub), scope=scope, code_challenge=challenge)
    assert pushed.status_code == 201, pushed.text
    page.goto(f"{stepup.url}/authorize?client_id=bank&request_uri={pushed.json()['request_uri']}")
    return verifier


def submit_recovery_code(page: Page, code: str) -> int:
    """Opens the recovery fold, sends the code; returns the answer's HTTP status."""
    page.get_by_text("Use a recovery code instead").click()
    page.get_by_label("Recovery code").fill(code)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Use recovery code").click()
    return answer.value.status


def client_query(page: Page) -> dict[str, list[str]]:
    """The query the client's redirect_uri received, once the browser has arrived there."""
    page.wait_for_url(REDIRECT + "?*")
    return parse_qs(urlsplit(page.url).query)


def recovery_step_up(page: Page, code: str) -> dict[str, list[str]]:
    """Sends a recovery code that must work; returns the query the client receives."""
    assert submit_recovery_code(page, code) == 303
    return client_query(page)


# -- proving and managing ---------------------------------------------------------------------


def test_proving_with_a_passkey_opens_the_factor_list(stepup: Stepup, page: Page) -> None:
    VirtualAuthenticator(page)
    # A first passkey, registered during a step-up at the phishing-resistant level.
    open_stepup(stepup, page, "pia", scope="keys:admin")
    page.get_by_role("button", name="Create a passkey and continue").click()
    assert "code" in client_query(page)
    page.goto(management_url(stepup, "pia"))
    expect(page.get_by_role("heading", name="What you have")).to_have_count(0)
    page.get_by_role("button", name="Use passkey").click()
    expect(page.get_by_role("heading", name="What you have")).to_be_visible()
    assert factor_names(page) == ["Passkey"]
    expect(page.locator(".factor .help")).to_contain_text("Bound to one device")


def test_renaming_a_factor_shows_the_new_name(stepup: Stepup, page: Page, redis_url: str) -> None:
    secret = totp_user(stepup, "rita")
    managing(stepup, page, "rita", secret)
    page.get_by_label("New name for Authenticator app").fill("Work phone")
    page.get_by_role("button", name="Rename Authenticator app").click()
    expect(page.locator(".notice")).to_have_text("Renamed to “Work phone”.")
    assert factor_names(page) == ["Work phone"]
    assert [f["name"] for f in factor_records(redis_url, "rita")] == ["Work phone"]


def test_a_second_factor_can_be_removed(stepup: Stepup, page: Page, redis_url: str) -> None:
    VirtualAuthenticator(page)
    secret = totp_user(stepup, "rob")
    managing(stepup, page, "rob", secret)
    add_passkey(page, "Laptop")
    assert factor_names(page) == ["Authenticator app", "Laptop"]
    # The passkey also gives "a second factor": the app is not the last way to give it.
    page.get_by_role("button", name="Remove Authenticator app").click()
    expect(page.locator(".notice")).to_have_text("“Authenticator app” removed.")
    assert factor_names(page) == ["Laptop"]
    assert [f["kind"] for f in factor_records(redis_url, "rob")] == ["webauthn"]


def test_removing_the_last_factor_that_meets_a_level_is_refused(
    stepup: Stepup, page: Page, redis_url: str
) -> None:
    VirtualAuthenticator(page)
    secret = totp_user(stepup, "ray")
    managing(stepup, page, "ray", secret)
    add_passkey(page, "Laptop")
    before = factor_records(redis_url, "ray")
    # The passkey is the only factor that gives the phishing-resistant level (keys:admin).
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Remove Laptop").click()
    assert answer.value.status == 409
    expect(page.get_by_role("alert")).to_have_text(
        "“Laptop” is your only way to give a phishing-resistant passkey or security key. "
        "Add another factor first."
    )
    assert factor_names(page) == ["Authenticator app", "Laptop"]
    assert factor_records(redis_url, "ray") == before


def test_with_last_factor_warn_removal_asks_to_confirm(
    warning_stepup: Stepup, page: Page, redis_url: str
) -> None:
    stepup = warning_stepup
    secret = totp_user(stepup, "wes")
    managing(stepup, page, "wes", secret)
    page.get_by_role("button", name="Remove Authenticator app").click()
    expect(page.get_by_role("heading", name="Remove “Authenticator app”?")).to_be_visible()
    expect(page.get_by_text("Without it you cannot give a second factor")).to_be_visible()
    assert len(factor_records(redis_url, "wes")) == 1  # nothing removed yet
    page.get_by_role("button", name="Remove anyway").click()
    expect(page.locator(".notice")).to_have_text("“Authenticator app” removed.")
    assert factor_records(redis_url, "wes") == []


# -- recovery codes ---------------------------------------------------------------------------


def test_new_recovery_codes_are_shown_once_with_copy_and_download(
    stepup: Stepup, context: BrowserContext, page: Page
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stepup.url)
    secret = totp_user(stepup, "cora")
    managing(stepup, page, "cora", secret)
    link = page.url
    page.get_by_role("button", name="Create recovery codes").click()
    expect(page.get_by_role("heading", name="Your new recovery codes")).to_be_visible()
    codes = page.locator("#recovery-codes code").all_inner_texts()
    assert len(codes) == stepup.config.factors.recovery_codes
    assert all(re.fullmatch(r"[0-9a-z]{4}(-[0-9a-z]{4}){3}", c) for c in codes)

    page.get_by_role("button", name="Copy codes").click()
    expect(page.locator("[data-copy-status]")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == "\n".join(codes)

    with page.expect_download() as download:
        page.get_by_role("link", name="Download codes").click()
    assert download.value.suggested_filename == "recovery-codes.txt"
    assert Path(download.value.path()).read_text() == "\n".join(codes)

    page.goto(link)  # the same page again: the codes are not shown a second time
    expect(page.get_by_role("heading", name="Recovery codes")).to_be_visible()
    expect(page.locator("#recovery-codes")).to_have_count(0)
    expect(page.get_by_text(f"{len(codes)} of {len(codes)} unused")).to_be_visible()
    assert not any(code in page.content() for code in codes)


def test_a_recovery_code_steps_up_with_the_otp_amr(stepup: Stepup, page: Page) -> None:
    secret = totp_user(stepup, "owen")
    [codes] = recovery_codes(stepup, "owen", secret)
    verifier = open_stepup(stepup, page, "owen")
    expect(page.get_by_label("Recovery code")).to_be_hidden()  # folded away by default
    query = recovery_step_up(page, codes[3].upper())  # typed in capitals: still the code
    answer = stepup.token(query["code"][0], verifier, subject_token=stepup.upstream.token("owen"))
    assert answer.status_code == 200, answer.text
    claims = claims_of(stepup, answer.json()["access_token"])
    assert claims["acr"] == "urn:stepup:acr:mfa"
    assert claims["amr"] == ["otp"]


def test_a_recovery_code_works_only_once(stepup: Stepup, page: Page) -> None:
    secret = totp_user(stepup, "una")
    [codes] = recovery_codes(stepup, "una", secret)
    open_stepup(stepup, page, "una")
    assert "code" in recovery_step_up(page, codes[0])
    open_stepup(stepup, page, "una")
    assert submit_recovery_code(page, codes[0]) == 400
    expect(page.get_by_role("alert")).to_contain_text(FAILED)


def test_recovery_code_guessing_is_throttled(stepup: Stepup, page: Page) -> None:
    secret = totp_user(stepup, "gus")
    [codes] = recovery_codes(stepup, "gus", secret)
    open_stepup(stepup, page, "gus")
    free = stepup.config.throttle.free_attempts
    for _ in range(free):
        assert submit_recovery_code(page, "0000-0000-0000-0000") == 400
        expect(page.get_by_role("alert")).to_contain_text(FAILED)
    assert submit_recovery_code(page, "0000-0000-0000-0001") == 429
    expect(page.get_by_role("alert")).to_contain_text("Too many attempts")
    # While throttled, even a good code is not accepted (and not spent).
    assert submit_recovery_code(page, codes[0]) == 429
    expect(page.get_by_role("alert")).to_contain_text("Too many attempts")


def test_a_new_set_of_recovery_codes_voids_the_old_one(stepup: Stepup, page: Page) -> None:
    secret = totp_user(stepup, "vic")
    old, new = recovery_codes(stepup, "vic", secret, sets=2)
    open_stepup(stepup, page, "vic")
    assert submit_recovery_code(page, old[0]) == 400
    expect(page.get_by_role("alert")).to_contain_text(FAILED)
    assert "code" in recovery_step_up(page, new[0])


def test_recovery_codes_work_without_javascript(stepup: Stepup, browser: Browser) -> None:
    context = new_context(browser, java_script_enabled=False)
    try:
        page = context.new_page()
        answer_callbacks(page)
        secret = totp_user(stepup, "noah")
        managing(stepup, page, "noah", secret)
        page.get_by_role("button", name="Create recovery codes").click()
        codes = page.locator("#recovery-codes code").all_inner_texts()
        assert len(codes) == stepup.config.factors.recovery_codes
        # Controls that need the script are not offered without it.
        expect(page.get_by_role("button", name="Copy codes")).to_be_hidden()
        expect(page.get_by_role("button", name="Create a passkey")).to_be_hidden()
        expect(page.get_by_role("link", name="Download codes")).to_be_visible()
        open_stepup(stepup, page, "noah")
        assert "code" in recovery_step_up(page, codes[0])
    finally:
        context.close()
