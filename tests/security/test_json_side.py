"""The JSON side of the verification form (what page scripts use): failures, the throttle's
429 with Retry-After, and success as a location — the same decisions as the HTML side."""

from __future__ import annotations

import httpx

from tests.support.stepup import REDIRECT, Stepup, hidden

JSON = {"accept": "application/json"}


def _page(stepup: Stepup, browser: httpx.Client, sub: str) -> httpx.Response:
    pushed = stepup.par(stepup.upstream.token(sub), scope="audit:read")  # max_age 0: no reuse
    page = stepup.open_authorization(browser, pushed.json()["request_uri"])
    assert page.status_code == 200
    return page


def _post(
    browser: httpx.Client, page: httpx.Response, code: str, csrf: str | None = None
) -> httpx.Response:
    data = {"csrf": csrf or hidden(page.text, "csrf"), "action": "verify", "code": code}
    return browser.post(page.url.path, data=data, headers=JSON)


def _wrong(stepup: Stepup, secret: str) -> str:
    return f"{(int(stepup.totp_code(secret)) + 1) % 1_000_000:06d}"


def test_json_side_throttles_with_429_and_retry_after_then_succeeds(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub="scripted")
    stepup.clock.advance(60)
    settings = stepup.config.throttle
    with stepup.browser() as browser:
        page = _page(stepup, browser, "scripted")
        for _ in range(settings.free_attempts):
            failed = _post(browser, page, _wrong(stepup, secret))
            assert failed.status_code == 400
            assert failed.headers["content-type"].startswith("application/json")
            assert failed.json()["error"] == "verification_failed"
        throttled = _post(browser, page, _wrong(stepup, secret))
        assert throttled.status_code == 429
        assert throttled.json()["error"] == "slow_down"
        wait = int(throttled.headers["retry-after"])
        assert wait == settings.base_delay
        # During the wait even the right code gets the very same answer.
        right_too_soon = _post(browser, page, stepup.totp_code(secret))
        assert right_too_soon.status_code == 429
        assert right_too_soon.json() == throttled.json()
        stepup.clock.advance(wait)
        done = _post(browser, page, stepup.totp_code(secret))
    assert done.status_code == 200
    location = done.json()["location"]
    assert location.startswith(REDIRECT + "?") and "code=" in location


def test_json_side_keeps_the_csrf_check(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub="forged")
    stepup.clock.advance(60)
    with stepup.browser() as browser:
        page = _page(stepup, browser, "forged")
        refused = _post(browser, page, stepup.totp_code(secret), csrf="not-the-token")
    assert refused.status_code == 403
    assert refused.json()["error"] == "access_denied"
    assert "location" not in refused.json()


def test_html_side_is_unchanged_for_browsers(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub="plain")
    stepup.clock.advance(60)
    with stepup.browser() as browser:
        page = _page(stepup, browser, "plain")
        answer = browser.post(
            page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "verify",
                "code": _wrong(stepup, secret),
            },
            headers={"accept": "text/html,application/json;q=0.9"},
        )
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
