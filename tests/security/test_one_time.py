"""One-time things stay one-time under 50 parallel requests against the real server.

Already covered elsewhere (not repeated here): one TOTP code posted 50 times on one
interaction and on 50 interactions (tests/web/test_authorize_pages.py), 50 parallel
redemptions of one code (tests/protocol/test_token_exchange.py), 50 parallel introspections
of a single-use token (tests/protocol/test_introspection.py).
"""

from __future__ import annotations

import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import partial
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

from stepup.storage import keys
from stepup.web.pages import browser_cookie_name
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER_UPSTREAM,
    REDIRECT,
    ScopeAndMaxAge,
    Stepup,
    hidden,
    manual_key,
)

RACERS = 50
# One TLS context for every racer (never used on plain http): building one per client costs
# ~40 ms each, which would dominate the test.
_TLS = ssl.create_default_context()
# max_age 0: every approval asks again, so no flow reuses an earlier one.
NO_REUSE: ScopeAndMaxAge = {"scope": "payments:write", "max_age": "0"}


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


@contextmanager
def racers(stepup: Stepup, cookie: str | None = None) -> Iterator[list[httpx.Client]]:
    """RACERS clients, each already connected (so the race is not decided by TCP setup);
    with `cookie`, all of them are the same browser, else each is a browser of its own."""
    name = browser_cookie_name(stepup.config.issuer)
    with ExitStack() as stack:
        clients = [
            stack.enter_context(
                httpx.Client(
                    base_url=stepup.url,
                    timeout=30.0,
                    verify=_TLS,
                    cookies={name: cookie} if cookie else None,
                )
            )
            for _ in range(RACERS)
        ]
        for client in clients:
            assert client.get("/healthz").status_code == 200
        yield clients


def race(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Runs every call at the same moment (one thread each, released by a barrier)."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def assert_html_error(answer: httpx.Response) -> None:
    assert 400 <= answer.status_code < 500, f"{answer.status_code}: {answer.text}"
    assert answer.headers["content-type"].startswith("text/html")
    assert "location" not in answer.headers
    assert "Traceback" not in answer.text


def redirect_query(answer: httpx.Response) -> dict[str, list[str]]:
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return parse_qs(urlsplit(location).query)


def pushed_request_uri(stepup: Stepup, sub: str = "alice") -> str:
    pushed = stepup.par(stepup.upstream.token(sub), **NO_REUSE)
    assert pushed.status_code == 201, pushed.text
    request_uri: str = pushed.json()["request_uri"]
    return request_uri


def enrolment_path(stepup: Stepup, sub: str) -> str:
    created = stepup.http.post(
        "/enroll",
        data={"subject_token": stepup.upstream.token(sub), "subject_token_type": ACCESS_TOKEN_TYPE},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert created.status_code == 201, created.text
    enrollment_uri: str = created.json()["enrollment_uri"]
    return urlsplit(enrollment_uri).path


def factor_count(store: redis.Redis, sub: str) -> int:
    return int(store.hlen(keys.factors(keys.subject_id(ISSUER_UPSTREAM, sub))))


def enrolled_secret(stepup: Stepup, sub: str) -> str:
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub=sub, **NO_REUSE)
    return secret


def cookie_of(stepup: Stepup, browser: httpx.Client) -> str:
    cookie = browser.cookies.get(browser_cookie_name(stepup.config.issuer))
    assert cookie, "no browser cookie was set"
    return cookie


# -- the request_uri ------------------------------------------------------------------------


def test_fifty_parallel_authorizations_of_one_request_uri_start_one_interaction(
    stepup: Stepup,
) -> None:
    request_uri = pushed_request_uri(stepup)
    params = {"client_id": CLIENT_ID, "request_uri": request_uri}
    with racers(stepup) as clients:
        answers = race([partial(c.get, "/authorize", params=params) for c in clients])
        winners = [i for i, a in enumerate(answers) if a.status_code == 303]
        assert len(winners) == 1, Counter(a.status_code for a in answers)
        winner = winners[0]
        assert answers[winner].headers["location"].startswith("/interaction/")
        # Only the winning browser may open the interaction it was sent to.
        assert clients[winner].get(answers[winner].headers["location"]).status_code == 200
    for index, answer in enumerate(answers):
        if index != winner:
            assert_html_error(answer)


# -- the interaction ------------------------------------------------------------------------


def test_fifty_parallel_cancels_of_one_interaction_redirect_once(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = stepup.open_authorization(browser, pushed_request_uri(stepup))
        assert page.status_code == 200, page.text
        cookie = cookie_of(stepup, browser)
    data = {"csrf": hidden(page.text, "csrf"), "action": "cancel"}
    with racers(stepup, cookie) as clients:
        answers = race([partial(c.post, page.url.path, data=data) for c in clients])
    redirects = [a for a in answers if a.status_code == 303]
    assert len(redirects) == 1, Counter(a.status_code for a in answers)
    assert redirect_query(redirects[0])["error"] == ["access_denied"]
    for answer in answers:
        if answer.status_code != 303:
            assert_html_error(answer)


def test_racing_verify_and_cancel_on_one_interaction_end_it_once(stepup: Stepup) -> None:
    secret = enrolled_secret(stepup, "undecided")
    stepup.clock.advance(90)
    with stepup.browser() as browser:
        page = stepup.open_authorization(browser, pushed_request_uri(stepup, "undecided"))
        assert page.status_code == 200, page.text
        cookie = cookie_of(stepup, browser)
    csrf = hidden(page.text, "csrf")
    verify = {"csrf": csrf, "action": "verify", "code": stepup.totp_code(secret)}
    cancel = {"csrf": csrf, "action": "cancel"}
    with racers(stepup, cookie) as clients:
        answers = race(
            [
                partial(c.post, page.url.path, data=verify if i % 2 else cancel)
                for i, c in enumerate(clients)
            ]
        )
    redirects = [redirect_query(a) for a in answers if a.status_code == 303]
    # Either a code or access_denied comes back, never both, never twice.
    assert len(redirects) == 1, Counter(a.status_code for a in answers)
    assert ("code" in redirects[0]) != ("error" in redirects[0]), redirects[0]
    for answer in answers:
        if answer.status_code != 303:
            assert_html_error(answer)


# -- the enrolment link ---------------------------------------------------------------------


def test_fifty_parallel_confirmations_of_one_enrolment_add_one_factor(
    stepup: Stepup, store: redis.Redis
) -> None:
    path = enrolment_path(stepup, "eager")
    with stepup.browser() as browser:
        page = browser.get(path)
        assert page.status_code == 200, page.text
        cookie = cookie_of(stepup, browser)
    stepup.clock.advance(30)
    data = {
        "csrf": hidden(page.text, "csrf"),
        "action": "confirm",
        "code": stepup.totp_code(manual_key(page.text)),
    }
    with racers(stepup, cookie) as clients:
        answers = race([partial(c.post, path, data=data) for c in clients])
    added = [a for a in answers if a.status_code == 200]
    assert len(added) == 1, Counter(a.status_code for a in answers)
    assert "added" in added[0].text
    for answer in answers:
        if answer.status_code != 200:
            assert_html_error(answer)
    assert factor_count(store, "eager") == 1


def test_fifty_parallel_confirmations_of_a_second_factor_add_one_factor(
    stepup: Stepup, store: redis.Redis
) -> None:
    secret = enrolled_secret(stepup, "collector")
    stepup.clock.advance(90)
    path = enrolment_path(stepup, "collector")
    with stepup.browser() as browser:
        page = browser.get(path)
        assert page.status_code == 200, page.text
        proven = browser.post(
            path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "prove",
                "code": stepup.totp_code(secret),
            },
        )
        assert proven.status_code in (200, 303), proven.text
        confirm_page = browser.get(path) if proven.status_code == 303 else proven
        new_secret = manual_key(confirm_page.text)
        cookie = cookie_of(stepup, browser)
    stepup.clock.advance(30)
    data = {
        "csrf": hidden(confirm_page.text, "csrf"),
        "action": "confirm",
        "code": stepup.totp_code(new_secret),
    }
    with racers(stepup, cookie) as clients:
        answers = race([partial(c.post, path, data=data) for c in clients])
    assert sum(a.status_code == 200 for a in answers) == 1, Counter(a.status_code for a in answers)
    assert factor_count(store, "collector") == 2


def test_fifty_browsers_opening_one_enrolment_link_at_once_bind_only_one(
    stepup: Stepup,
) -> None:
    # The link belongs to the first browser that opens it; the others must not see its key.
    path = enrolment_path(stepup, "shared")
    with racers(stepup) as clients:
        answers = race([partial(c.get, path) for c in clients])
    shown = [a for a in answers if a.status_code == 200]
    keys_shown = {manual_key(a.text) for a in shown}
    assert len(shown) == 1, (
        f"{len(shown)} browsers were shown the enrolment page, with {len(keys_shown)} "
        f"different keys; statuses {Counter(a.status_code for a in answers)}"
    )
    for answer in answers:
        if answer.status_code != 200:
            assert answer.status_code == 403, answer.text
            assert 'id="totp-secret"' not in answer.text
