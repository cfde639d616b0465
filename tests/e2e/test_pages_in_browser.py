"""stepup's own pages in headless Chromium, against a server on an injected clock:
the TOTP form works without JavaScript, and cancel returns access_denied."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Unpack
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.stepup import REDIRECT, ParFields, Stepup

pytestmark = pytest.mark.browser


@pytest.fixture
def no_js_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    # The client's redirect_uri has no server behind it: answer it in the browser.
    page.route(REDIRECT + "*", lambda route: route.fulfill(status=200, body="client callback"))
    try:
        yield page
    finally:
        context.close()


def _authorize(stepup: Stepup, page: Page, **par_fields: Unpack[ParFields]) -> None:
    pushed = stepup.par(**par_fields)
    assert pushed.status_code == 201, pushed.text
    request_uri = pushed.json()["request_uri"]
    page.goto(f"{stepup.url}/authorize?client_id=bank&request_uri={request_uri}")


def _redirect_query(page: Page) -> dict[str, list[str]]:
    page.wait_for_url(REDIRECT + "?*")
    return parse_qs(urlsplit(page.url).query)


def test_totp_enrolment_and_verification_work_without_javascript(
    stepup: Stepup, no_js_page: Page
) -> None:
    page = no_js_page
    _authorize(stepup, page, state="first")
    code_field = page.get_by_label("Code from your authenticator app")
    expect(code_field).to_have_attribute("autocomplete", "one-time-code")
    expect(code_field).to_have_attribute("inputmode", "numeric")
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    code_field.fill(pyotp.TOTP(secret).at(stepup.clock.now()))
    page.get_by_role("button", name="Turn on and continue").click()
    first = _redirect_query(page)
    assert first["state"] == ["first"] and first["iss"] == [stepup.config.issuer]
    assert len(first["code"][0]) >= 40

    # Past the scope's max_age (300 s) the proof is not reused: the page asks for a code.
    stepup.clock.advance(301)
    _authorize(stepup, page, state="second")
    expect(page.get_by_role("heading", name="Confirm it’s you")).to_be_visible()
    expect(page.locator("#totp-secret")).to_have_count(0)
    page.get_by_label("Code from your authenticator app").fill("000000")
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("That did not work")
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(secret).at(stepup.clock.now())
    )
    page.get_by_role("button", name="Verify").click()
    second = _redirect_query(page)
    assert second["state"] == ["second"] and "code" in second


def test_cancel_returns_access_denied_to_the_client(stepup: Stepup, page: Page) -> None:
    page.route(REDIRECT + "*", lambda route: route.fulfill(status=200, body="client callback"))
    _authorize(stepup, page, state="s1")
    page.get_by_role("button", name="Cancel").click()
    query = _redirect_query(page)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["s1"] and query["iss"] == [stepup.config.issuer]
    assert "code" not in query


def test_pages_are_keyboard_usable_named_and_fit_a_phone(stepup: Stepup, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    page.route(REDIRECT + "*", lambda route: route.fulfill(status=200, body="ok"))
    try:
        _authorize(stepup, page)
        for _ in range(2):  # the enrolment page now; after one proof, the verify page
            assert page.evaluate("document.documentElement.lang") == "en"
            expect(page.locator("h1")).to_have_count(1)
            # Nothing wider than the phone: no sideways scrolling.
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            for control in page.locator("input:not([type=hidden]), button").all():
                assert control.evaluate("e => e.labels?.length > 0 || e.textContent.trim() !== ''")
            # The code field has focus first; Tab moves to the primary action, then Cancel.
            expect(page.get_by_label("Code from your authenticator app")).to_be_focused()
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.classList.contains('primary')")
            page.keyboard.press("Tab")
            expect(page.get_by_role("button", name="Cancel")).to_be_focused()
            if page.locator("#totp-secret").count():
                secret = page.locator("#totp-secret").inner_text().replace(" ", "")
                page.get_by_label("Code from your authenticator app").fill(
                    pyotp.TOTP(secret).at(stepup.clock.now())
                )
                page.get_by_role("button", name="Turn on and continue").click()
                page.wait_for_url(REDIRECT + "?*")
                stepup.clock.advance(301)
                _authorize(stepup, page)
    finally:
        context.close()
