"""Factor enrolment through an enrolment link: POST /enroll, then the /enroll/{id} pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from stepup.clock import FrozenClock
from stepup.storage import keys
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER_UPSTREAM,
    REDIRECT,
    Stepup,
    Upstream,
    got_code,
    hidden,
    make_config,
    manual_key,
    running_stepup,
    step_up_with,
)

ISSUER = "http://localhost:8000"


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def factor_store(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def factor_count(store: redis.Redis, sub: str) -> int:
    return int(store.hlen(keys.factors(keys.subject_id(ISSUER_UPSTREAM, sub))))


def create_link(
    stepup: Stepup, sub: str = "alice", subject_token: str | None = None, **fields: str
) -> httpx.Response:
    body = {
        "subject_token": subject_token or stepup.upstream.token(sub),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        **fields,
    }
    return stepup.http.post("/enroll", data=body, auth=(CLIENT_ID, CLIENT_SECRET))


def link_path(stepup: Stepup, sub: str = "alice", **fields: str) -> str:
    created = create_link(stepup, sub, **fields)
    assert created.status_code == 201, created.text
    enrollment_uri: str = created.json()["enrollment_uri"]
    return urlsplit(enrollment_uri).path


def post(
    browser: httpx.Client, page: httpx.Response, action: str, code: str | None = None
) -> httpx.Response:
    data = {"csrf": hidden(page.text, "csrf"), "action": action}
    if code is not None:
        data["code"] = code
    return browser.post(page.url.path, data=data)


def enrol_via_stepup(stepup: Stepup, sub: str) -> str:
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub=sub)
    return secret


def assert_error_page(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="totp-secret"' not in response.text


# -- the link -------------------------------------------------------------------------------


def test_enroll_answers_201_with_a_link_and_lifetime(stepup: Stepup) -> None:
    created = create_link(stepup)
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"enrollment_uri", "expires_in"}
    assert re.fullmatch(re.escape(ISSUER) + r"/enroll/[A-Za-z0-9_-]{20,}", body["enrollment_uri"])
    assert body["expires_in"] == stepup.config.limits.enrollment_lifetime
    assert "no-store" in created.headers["cache-control"]


def test_enroll_links_are_distinct(stepup: Stepup) -> None:
    assert link_path(stepup) != link_path(stepup)


def test_enroll_with_registered_redirect_uri_is_accepted(stepup: Stepup) -> None:
    assert create_link(stepup, redirect_uri=REDIRECT).status_code == 201


def test_enroll_with_unregistered_redirect_uri_is_invalid_request(stepup: Stepup) -> None:
    for uri in ("https://evil.example/cb", REDIRECT + "/x", "http://localhost:9998/cb"):
        answer = create_link(stepup, redirect_uri=uri)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_request"


def test_enroll_needs_client_authentication(stepup: Stepup) -> None:
    body = {"subject_token": stepup.upstream.token(), "subject_token_type": ACCESS_TOKEN_TYPE}
    answer = stepup.http.post("/enroll", data=body, auth=(CLIENT_ID, "wrong-secret-0123456789"))
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


# -- a first factor -------------------------------------------------------------------------


def test_page_shows_qr_and_key_for_user_without_factors(stepup: Stepup) -> None:
    path = link_path(stepup, "nina")
    with stepup.browser() as browser:
        page = browser.get(path)
    assert page.status_code == 200, page.text
    assert "Example Bank" in page.text
    assert "<svg" in page.text
    assert re.fullmatch(r"[A-Z2-7]{32}", manual_key(page.text))
    assert 'autocomplete="one-time-code"' in page.text
    assert 'inputmode="numeric"' in page.text
    assert 'value="confirm"' in page.text


def test_confirming_with_a_valid_code_creates_the_factor(
    stepup: Stepup, factor_store: redis.Redis
) -> None:
    path = link_path(stepup, "olga")
    with stepup.browser() as browser:
        page = browser.get(path)
        secret = manual_key(page.text)
        stepup.clock.advance(30)
        added = post(browser, page, "confirm", stepup.totp_code(secret))
        assert added.status_code == 200, added.text
        assert "Authenticator app added" in added.text
        # The visit goes on (to add recovery codes, say) until the user is done with it.
        assert 'value="recovery-new"' in added.text
        done = post(browser, added, "done")
        assert done.status_code == 200, done.text
        assert_error_page(browser.get(path), 400)
    assert factor_count(factor_store, "olga") == 1
    # A step-up for that user now asks for a code, and that code is the enrolled one.
    assert got_code(step_up_with(stepup, "olga", secret))


def test_confirming_with_a_wrong_code_adds_nothing(
    stepup: Stepup, factor_store: redis.Redis
) -> None:
    path = link_path(stepup, "pete")
    with stepup.browser() as browser:
        page = browser.get(path)
        key = manual_key(page.text)
        stepup.clock.advance(30)
        answer = post(
            browser, page, "confirm", "000000" if stepup.totp_code(key) != "000000" else "111111"
        )
        assert answer.status_code == 400
        assert manual_key(answer.text) == key  # the same pending key, shown again
    assert factor_count(factor_store, "pete") == 0


def test_old_subject_token_without_factors_gets_403(
    stepup: Stepup, factor_store: redis.Redis
) -> None:
    old = stepup.upstream.token("quinn", age=3600, lifetime=7200)
    created = create_link(stepup, "quinn", subject_token=old)
    assert created.status_code == 201, created.text
    path = urlsplit(created.json()["enrollment_uri"]).path
    with stepup.browser() as browser:
        page = browser.get(path)
        assert_error_page(page, 403)
        assert "<svg" not in page.text
    assert factor_count(factor_store, "quinn") == 0


def test_link_opened_after_first_factor_max_age_gets_403(
    stepup: Stepup, factor_store: redis.Redis
) -> None:
    # A fresh link, but the sign-in behind its subject token is older than the policy allows.
    stale = stepup.upstream.token("late", age=stepup.config.limits.first_factor_max_age + 1)
    created = create_link(stepup, "late", subject_token=stale)
    assert created.status_code == 201, created.text
    path = urlsplit(created.json()["enrollment_uri"]).path
    with stepup.browser() as browser:
        assert_error_page(browser.get(path), 403)
    assert factor_count(factor_store, "late") == 0


def test_first_factor_confirmed_after_first_factor_max_age_is_refused(
    upstream: Upstream,
    tmp_path: Path,
    redis_url: str,
    clock: FrozenClock,
    factor_store: redis.Redis,
) -> None:
    # The page was shown while the sign-in was recent; the confirmation comes too late.
    # (A long link lifetime, so only the freshness rule is at stake.)
    config = make_config(upstream, tmp_path / "long", enrollment_lifetime=3600)
    with running_stepup(config, redis_url, clock, upstream) as server, server.browser() as browser:
        page = browser.get(link_path(server, "slow"))
        key = manual_key(page.text)
        clock.advance(config.limits.first_factor_max_age + 1)
        answer = post(browser, page, "confirm", server.totp_code(key))
        assert answer.status_code == 403, answer.text
    assert factor_count(factor_store, "slow") == 0


def test_link_opened_in_another_browser_is_refused(stepup: Stepup) -> None:
    path = link_path(stepup, "rosa")
    with stepup.browser() as browser, stepup.browser() as other:
        page = browser.get(path)
        assert page.status_code == 200
        other.get("/no/such/page")  # gives the other browser a cookie of its own
        assert_error_page(other.get(path), 403)
        stepup.clock.advance(30)
        posted = other.post(
            path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "confirm",
                "code": stepup.totp_code(manual_key(page.text)),
            },
        )
        assert_error_page(posted, 403)


# -- with a factor already enrolled ---------------------------------------------------------


def test_with_a_factor_the_page_first_asks_to_prove_it(stepup: Stepup) -> None:
    enrol_via_stepup(stepup, "sam")
    with stepup.browser() as browser:
        page = browser.get(link_path(stepup, "sam"))
    assert page.status_code == 200, page.text
    assert "<svg" not in page.text
    assert 'id="totp-secret"' not in page.text
    assert 'value="prove"' in page.text
    assert 'value="confirm"' not in page.text


def test_confirm_without_proving_is_refused_and_changes_nothing(
    stepup: Stepup, factor_store: redis.Redis
) -> None:
    old_secret = enrol_via_stepup(stepup, "ted")
    assert factor_count(factor_store, "ted") == 1
    with stepup.browser() as browser:
        page = browser.get(link_path(stepup, "ted"))
        stepup.clock.advance(30)
        for code in (stepup.totp_code(old_secret), "123456", None):
            refused = post(browser, page, "confirm", code)
            assert_error_page(refused, 403)
    assert factor_count(factor_store, "ted") == 1
    # The existing factor is untouched and still works.
    assert got_code(step_up_with(stepup, "ted", old_secret))


def test_after_proving_a_second_totp_factor_is_added(
    stepup: Stepup, factor_store: redis.Redis
) -> None:
    old_secret = enrol_via_stepup(stepup, "uma")
    with stepup.browser() as browser:
        page = browser.get(link_path(stepup, "uma"))
        stepup.clock.advance(30)
        proven = post(browser, page, "prove", stepup.totp_code(old_secret))
        assert proven.status_code == 200, proven.text
        new_secret = manual_key(proven.text)
        assert new_secret != old_secret
        assert "<svg" in proven.text

        # Shown but not confirmed: the new key is not a factor yet.
        assert factor_count(factor_store, "uma") == 1
        assert not got_code(step_up_with(stepup, "uma", new_secret))

        stepup.clock.advance(30)
        done = post(browser, proven, "confirm", stepup.totp_code(new_secret))
        assert done.status_code == 200, done.text
    assert factor_count(factor_store, "uma") == 2
    assert got_code(step_up_with(stepup, "uma", new_secret))
    assert got_code(step_up_with(stepup, "uma", old_secret))


def test_proving_with_a_wrong_code_keeps_asking(stepup: Stepup, factor_store: redis.Redis) -> None:
    old_secret = enrol_via_stepup(stepup, "vic")
    with stepup.browser() as browser:
        page = browser.get(link_path(stepup, "vic"))
        stepup.clock.advance(30)
        wrong = "000000" if stepup.totp_code(old_secret) != "000000" else "111111"
        answer = post(browser, page, "prove", wrong)
        assert answer.status_code == 400
        assert 'id="totp-secret"' not in answer.text
        assert 'value="prove"' in answer.text
        assert_error_page(post(browser, page, "confirm", wrong), 403)
    assert factor_count(factor_store, "vic") == 1


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_changes_nothing_and_spends_the_link(
    stepup: Stepup, factor_store: redis.Redis
) -> None:
    path = link_path(stepup, "wade")
    with stepup.browser() as browser:
        page = browser.get(path)
        key = manual_key(page.text)
        cancelled = post(browser, page, "cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert "location" not in cancelled.headers
        stepup.clock.advance(30)
        late = post(browser, page, "confirm", stepup.totp_code(key))
        assert late.status_code >= 400
        assert_error_page(browser.get(path), 400)
    assert factor_count(factor_store, "wade") == 0


def test_cancel_returns_to_the_registered_redirect_uri(
    stepup: Stepup, factor_store: redis.Redis
) -> None:
    old_secret = enrol_via_stepup(stepup, "xena")
    path = link_path(stepup, "xena", redirect_uri=REDIRECT)
    with stepup.browser() as browser:
        page = browser.get(path)
        stepup.clock.advance(30)
        proven = post(browser, page, "prove", stepup.totp_code(old_secret))
        assert proven.status_code == 200
        cancelled = post(browser, proven, "cancel")
    assert cancelled.status_code == 303
    assert cancelled.headers["location"] == REDIRECT
    assert factor_count(factor_store, "xena") == 1
    assert got_code(step_up_with(stepup, "xena", old_secret))
