"""The authorization endpoint and its interaction pages, over real HTTP with httpx cookie jars."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Unpack
from urllib.parse import parse_qs, urlsplit

import httpx

from stepup.clock import FrozenClock
from stepup.config import Config
from stepup.factors import totp
from stepup.web.pages import browser_cookie_name
from tests.factors.test_totp import svg_to_png, zbar_decode
from tests.support.stepup import (
    CLIENT_ID,
    OTHER_ID,
    OTHER_SECRET,
    REDIRECT,
    ParFields,
    Stepup,
    Upstream,
    hidden,
    make_config,
    manual_key,
    pkce,
    running_stepup,
)

ISSUER = "http://localhost:8000"
GARBAGE_REQUEST_URI = "urn:ietf:params:oauth:request_uri:not-a-real-request-0123456789abcdef"
# audit:read has max_age 0: every approval asks again, so flows do not reuse each other.
NO_REUSE: ParFields = {"scope": "audit:read"}


# -- helpers --------------------------------------------------------------------------------


def authorize(
    stepup: Stepup,
    browser: httpx.Client,
    sub: str = "alice",
    *,
    subject_token: str | None = None,
    client_id: str = CLIENT_ID,
    auth: tuple[str, str] | None = None,
    **par_fields: Unpack[ParFields],
) -> tuple[httpx.Response, str, str | None]:
    """PAR then GET /authorize: (the /authorize answer, code_verifier, state)."""
    verifier, challenge = pkce()
    par_fields.setdefault("code_challenge", challenge)
    pushed = stepup.par(subject_token or stepup.upstream.token(sub), auth=auth, **par_fields)
    assert pushed.status_code == 201, pushed.text
    started = browser.get(
        "/authorize",
        params={"client_id": client_id, "request_uri": pushed.json()["request_uri"]},
    )
    state = parse_qs(str(pushed.request.content.decode())).get("state", [None])[0]
    return started, verifier, state


def open_page(
    stepup: Stepup, browser: httpx.Client, sub: str = "alice", **par_fields: Unpack[ParFields]
) -> httpx.Response:
    started, _, _ = authorize(stepup, browser, sub, **par_fields)
    assert started.status_code == 303, started.text
    assert started.headers["location"].startswith("/interaction/")
    page = browser.get(started.headers["location"])
    assert page.status_code == 200, page.text
    return page


def submit(
    browser: httpx.Client,
    page: httpx.Response,
    code: str | None,
    action: str = "verify",
    csrf: str | None = None,
) -> httpx.Response:
    data = {"csrf": csrf or hidden(page.text, "csrf"), "action": action}
    if code is not None:
        data["code"] = code
    return browser.post(page.url.path, data=data)


def enrol(stepup: Stepup, sub: str) -> str:
    """Enrols a TOTP factor for `sub` through a first step-up; returns its secret."""
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub=sub)
    return secret


def wrong_code(stepup: Stepup, secret: str) -> str:
    """Six digits that match no step within the allowed skew."""
    near = {stepup.totp_code(secret, offset) for offset in range(-3, 4)}
    candidate = int(stepup.totp_code(secret))
    while f"{candidate:06d}" in near:
        candidate = (candidate + 137_911) % 1_000_000
    return f"{candidate:06d}"


def redirect_query(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 303, f"{response.status_code}: {response.text}"
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return parse_qs(urlsplit(location).query)


def alert(html: str) -> str:
    found: list[str] = re.findall(r'role="alert"[^>]*>([^<]*)<', html)
    assert len(found) == 1, f"expected one alert, found {found}"
    return found[0].strip()


def assert_error_page(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>" in response.text
    assert "Traceback" not in response.text


def assert_no_code(response: httpx.Response) -> None:
    assert "location" not in response.headers
    assert "code=" not in response.text


def code_field_id(html: str) -> str:
    """The id of the one-time-code input, checking it is fillable by phones and managers."""
    tags = [t for t in re.findall(r"<input\b[^>]*>", html) if "one-time-code" in t]
    assert len(tags) == 1, f"expected one one-time-code input, found {tags}"
    tag = tags[0]
    assert 'autocomplete="one-time-code"' in tag
    assert 'inputmode="numeric"' in tag
    assert 'name="code"' in tag
    field_id = re.search(r'\bid="([^"]+)"', tag)
    assert field_id, "the code input has no id"
    return field_id.group(1)


def assert_page_headers(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "no-store" in response.headers["cache-control"]


# -- what the page shows ------------------------------------------------------------------


def test_page_says_which_app_asks_for_what_at_which_api(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser)
    assert "Example Bank" in page.text
    assert "Send payments" in page.text
    assert "Payments API" in page.text
    assert page.headers["content-type"].startswith("text/html")


def test_code_input_is_fillable_and_labelled(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser)
    field_id = code_field_id(page.text)
    assert re.search(rf'<label\b[^>]*\bfor="{re.escape(field_id)}"', page.text)


def test_authorize_sets_a_browser_cookie_and_redirects_to_an_interaction(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        started, _, _ = authorize(stepup, browser)
        assert started.status_code == 303
        assert re.fullmatch(r"/interaction/[A-Za-z0-9_-]{20,}", started.headers["location"])
        cookie = started.headers["set-cookie"]
        assert cookie.startswith(browser_cookie_name(ISSUER) + "=")
        assert "httponly" in cookie.lower()
        assert "samesite=lax" in cookie.lower()


def test_first_visit_shows_enrolment_with_qr_and_manual_key(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser, "newbie")
    assert "<svg" in page.text
    key = manual_key(page.text)
    assert re.fullmatch(r"[A-Z2-7]{32}", key)
    # The QR code on the page is the otpauth URI built from the very key shown for manual entry.
    svg = re.search(r"<svg.*?</svg>", page.text, re.S)
    assert svg is not None
    assert svg.group(0) == totp.qr_svg(totp.provisioning_uri(key, "newbie", "localhost")).strip()


def test_enrolment_qr_decodes_to_the_manual_key(
    stepup: Stepup, zbarimg: str, tmp_path: Path
) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser, "scanner")
    key = manual_key(page.text)
    svg = re.search(r"<svg.*?</svg>", page.text, re.S)
    assert svg is not None
    uri = zbar_decode(zbarimg, svg_to_png(svg.group(0), tmp_path / "page-qr.png"))
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert parse_qs(parts.query)["secret"] == [key]
    assert parts.path.endswith("scanner")


def test_enrolled_user_sees_the_verify_form_not_enrolment(stepup: Stepup) -> None:
    enrol(stepup, "erin")
    stepup.clock.advance(60)
    with stepup.browser() as browser:
        page = open_page(stepup, browser, "erin", **NO_REUSE)
    assert "<svg" not in page.text
    assert 'id="totp-secret"' not in page.text
    code_field_id(page.text)


# -- outcomes to the client ---------------------------------------------------------------


def test_success_redirects_to_registered_uri_with_code_state_and_iss(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        started, verifier, _ = authorize(stepup, browser, state="my-state-123")
        page = browser.get(started.headers["location"])
        stepup.clock.advance(30)
        answer = submit(browser, page, stepup.totp_code(manual_key(page.text)))
    query = redirect_query(answer)
    assert set(query) == {"code", "state", "iss"}
    assert query["state"] == ["my-state-123"]
    assert query["iss"] == [ISSUER]
    assert "no-store" in answer.headers["cache-control"]
    exchanged = stepup.token(query["code"][0], verifier)
    assert exchanged.status_code == 200, exchanged.text


def test_interaction_is_spent_after_success(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser)
        stepup.clock.advance(30)
        code = stepup.totp_code(manual_key(page.text))
        assert "code" in redirect_query(submit(browser, page, code))
        assert_error_page(browser.get(page.url.path), 400)
        again = submit(browser, page, code)
    assert_error_page(again, 400)
    assert_no_code(again)


def test_wrong_code_while_enrolling_keeps_the_same_key(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser, "keeper")
        key = manual_key(page.text)
        answer = submit(browser, page, wrong_code(stepup, key))
        assert answer.status_code == 400
        assert manual_key(answer.text) == key
        stepup.clock.advance(30)
        assert "code" in redirect_query(submit(browser, page, stepup.totp_code(key)))


def test_two_first_enrolments_cannot_both_win(stepup: Stepup) -> None:
    with stepup.browser() as first, stepup.browser() as second:
        page_one = open_page(stepup, first, "twin")
        page_two = open_page(stepup, second, "twin")
        key_one, key_two = manual_key(page_one.text), manual_key(page_two.text)
        assert key_one != key_two
        stepup.clock.advance(30)
        assert "code" in redirect_query(submit(first, page_one, stepup.totp_code(key_one)))
        late = submit(second, page_two, stepup.totp_code(key_two))
    assert_error_page(late, 400)
    assert_no_code(late)
    # Only the first key is a factor.
    stepup.clock.advance(60)
    with stepup.browser() as browser:
        page = open_page(stepup, browser, "twin", **NO_REUSE)
        assert 'id="totp-secret"' not in page.text
        refused = submit(browser, page, stepup.totp_code(key_two))
        assert refused.status_code == 400
        assert "code" in redirect_query(submit(browser, page, stepup.totp_code(key_one)))


def test_malformed_form_posts_are_error_pages(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser)
        csrf = hidden(page.text, "csrf")
        as_json = browser.post(page.url.path, json={"csrf": csrf, "action": "verify"})
        repeated = browser.post(
            page.url.path,
            content=f"csrf={csrf}&action=verify&code=1&code=2",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        unknown_action = submit(browser, page, "123456", action="approve")
    for answer in (as_json, repeated, unknown_action):
        assert_error_page(answer, 400)
        assert_no_code(answer)


def test_cancel_redirects_with_access_denied_state_and_iss(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser, state="cancel-state")
        answer = submit(browser, page, None, action="cancel")
        query = redirect_query(answer)
        assert query["error"] == ["access_denied"]
        assert query["state"] == ["cancel-state"]
        assert query["iss"] == [ISSUER]
        assert "code" not in query
        # The interaction is over: a code sent afterwards gets nothing.
        after = submit(browser, page, "123456")
    assert_error_page(after, 400)


def test_state_comes_back_verbatim(stepup: Stepup) -> None:
    state = "a b&c=d#e/f?g%20h+é"
    with stepup.browser() as browser:
        page = open_page(stepup, browser, state=state)
        query = redirect_query(submit(browser, page, None, action="cancel"))
    assert query["state"] == [state]


def test_request_uri_is_single_use(stepup: Stepup) -> None:
    pushed = stepup.par()
    request_uri = pushed.json()["request_uri"]
    params = {"client_id": CLIENT_ID, "request_uri": request_uri}
    with stepup.browser() as browser:
        first = browser.get("/authorize", params=params)
        assert first.status_code == 303
        second = browser.get("/authorize", params=params)
    assert_error_page(second, 400)


def test_unknown_client_id_is_an_error_page(stepup: Stepup) -> None:
    request_uri = stepup.par().json()["request_uri"]
    with stepup.browser() as browser:
        answer = browser.get(
            "/authorize", params={"client_id": "nobody", "request_uri": request_uri}
        )
    assert_error_page(answer, 400)


def test_request_uri_of_another_client_is_an_error_page(stepup: Stepup) -> None:
    request_uri = stepup.par().json()["request_uri"]
    with stepup.browser() as browser:
        answer = browser.get(
            "/authorize", params={"client_id": OTHER_ID, "request_uri": request_uri}
        )
    assert_error_page(answer, 400)


def test_missing_parameters_are_an_error_page(stepup: Stepup) -> None:
    request_uri = stepup.par().json()["request_uri"]
    with stepup.browser() as browser:
        for params in ({}, {"client_id": CLIENT_ID}, {"request_uri": request_uri}):
            assert_error_page(browser.get("/authorize", params=params), 400)


def test_garbage_request_uri_is_an_error_page(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        for request_uri in (GARBAGE_REQUEST_URI, "https://evil.example/cb", "x" * 3000, "%00"):
            answer = browser.get(
                "/authorize", params={"client_id": CLIENT_ID, "request_uri": request_uri}
            )
            assert_error_page(answer, 400)


def test_expired_request_uri_is_an_error_page(
    upstream: Upstream, tmp_path: Path, redis_url: str, clock: FrozenClock
) -> None:
    config = make_config(upstream, tmp_path / "short", request_uri_lifetime=1)
    with running_stepup(config, redis_url, clock, upstream) as short:
        request_uri = short.par().json()["request_uri"]
        time.sleep(2.1)
        with short.browser() as browser:
            answer = browser.get(
                "/authorize", params={"client_id": CLIENT_ID, "request_uri": request_uri}
            )
    assert_error_page(answer, 400)


def test_old_subject_token_without_factor_is_unmet(stepup: Stepup) -> None:
    old = stepup.upstream.token("oldie", age=3600, lifetime=7200)
    with stepup.browser() as browser:
        started, _, state = authorize(stepup, browser, subject_token=old)
    query = redirect_query(started)
    assert query["error"] == ["unmet_authentication_requirements"]
    assert query["state"] == [state]
    assert query["iss"] == [ISSUER]
    assert "code" not in query


def test_first_factor_enrolled_after_first_factor_max_age_is_refused(
    upstream: Upstream, tmp_path: Path, redis_url: str, clock: FrozenClock
) -> None:
    # The enrolment page was shown while the sign-in was recent; the code comes too late.
    # (A long interaction lifetime, so only the freshness rule is at stake.)
    config = make_config(upstream, tmp_path / "long", interaction_lifetime=3600)
    with running_stepup(config, redis_url, clock, upstream) as server, server.browser() as browser:
        page = open_page(server, browser, "sloth")
        key = manual_key(page.text)
        clock.advance(config.limits.first_factor_max_age + 1)
        answer = submit(browser, page, server.totp_code(key))
        location = answer.headers.get("location", "")
        assert "code" not in parse_qs(urlsplit(location).query), "a code for a stale enrolment"
        # No factor was added: a fresh sign-in is offered enrolment again.
        again = open_page(server, browser, "sloth")
    assert 'id="totp-secret"' in again.text


def test_level_totp_cannot_meet_offers_a_new_user_only_a_passkey(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        started, _, _ = authorize(stepup, browser, "fresh", scope="keys:admin")
        assert started.status_code == 303, started.text
        page = browser.get(started.headers["location"])
    assert page.status_code == 200
    assert "Create a passkey" in page.text
    assert 'id="totp-secret"' not in page.text


def test_level_totp_cannot_meet_is_unmet_for_totp_user(stepup: Stepup) -> None:
    enrol(stepup, "tina")
    with stepup.browser() as browser:
        started, _, _ = authorize(stepup, browser, "tina", scope="keys:admin")
    query = redirect_query(started)
    assert query["error"] == ["unmet_authentication_requirements"]
    assert "code" not in query


# -- binding to the browser -----------------------------------------------------------------


def test_post_without_browser_cookie_is_refused(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser)
        stepup.clock.advance(30)
        code = stepup.totp_code(manual_key(page.text))
        with httpx.Client(base_url=stepup.url, follow_redirects=False) as stranger:
            refused = stranger.post(
                page.url.path,
                data={"csrf": hidden(page.text, "csrf"), "action": "verify", "code": code},
            )
        assert_error_page(refused, 403)
        assert_no_code(refused)
        # The real browser can still finish: the refused post consumed nothing.
        assert "code" in redirect_query(submit(browser, page, code))


def test_post_with_wrong_csrf_is_refused(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser)
        stepup.clock.advance(30)
        code = stepup.totp_code(manual_key(page.text))
        refused = submit(browser, page, code, csrf="not-the-token-" + "x" * 30)
        assert_error_page(refused, 403)
        assert_no_code(refused)
        missing = browser.post(page.url.path, data={"action": "verify", "code": code})
        assert_error_page(missing, 403)
        assert "code" in redirect_query(submit(browser, page, code))


def test_interaction_opened_in_another_browser_is_refused(stepup: Stepup) -> None:
    with stepup.browser() as browser, stepup.browser() as other:
        started, _, _ = authorize(stepup, browser)
        location = started.headers["location"]
        page = browser.get(location)
        # The other browser has a cookie of its own (from another visit) and the page's csrf.
        other.get("/authorize", params={"client_id": CLIENT_ID, "request_uri": "x"})
        assert other.cookies.get(browser_cookie_name(ISSUER))
        shown = other.get(location)
        assert_error_page(shown, 403)
        assert "csrf" not in shown.text
        with httpx.Client(base_url=stepup.url) as bare:
            assert_error_page(bare.get(location), 403)
        stepup.clock.advance(30)
        posted = other.post(
            location,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "verify",
                "code": stepup.totp_code(manual_key(page.text)),
            },
        )
        assert_error_page(posted, 403)
        assert_no_code(posted)


def test_wrong_code_shows_one_generic_message_and_the_form_again(stepup: Stepup) -> None:
    secret = enrol(stepup, "wendy")
    stepup.clock.advance(60)
    with stepup.browser() as browser:
        page = open_page(stepup, browser, "wendy", **NO_REUSE)
        mismatch = submit(browser, page, wrong_code(stepup, secret))
        malformed = submit(browser, page, "12ab")
    for answer in (mismatch, malformed):
        assert answer.status_code == 400
        assert_no_code(answer)
        assert hidden(answer.text, "csrf") == hidden(page.text, "csrf")
        code_field_id(answer.text)
        assert "retry-after" not in answer.headers
    assert alert(mismatch.text) == alert(malformed.text)
    assert alert(mismatch.text)


# -- reuse within max_age -------------------------------------------------------------------


def test_recent_step_up_is_reused_without_a_page(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        _, _, _ = stepup.step_up(browser, sub="rita")
        proven_at = int(stepup.clock.now())
        stepup.clock.advance(100)
        started, verifier, state = authorize(stepup, browser, "rita")
    query = redirect_query(started)
    assert query["state"] == [state]
    assert query["iss"] == [ISSUER]
    exchanged = stepup.token(query["code"][0], verifier, stepup.upstream.token("rita"))
    assert exchanged.status_code == 200, exchanged.text
    claims = stepup.introspect(exchanged.json()["access_token"]).json()
    # A reused step-up keeps the time the factor was really proven.
    assert claims["auth_time"] == proven_at


def test_step_up_is_asked_again_after_max_age(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        stepup.step_up(browser, sub="max")
        stepup.clock.advance(301)  # payments:write has max_age 300
        started, _, _ = authorize(stepup, browser, "max")
    assert started.status_code == 303
    assert started.headers["location"].startswith("/interaction/")


def test_shorter_max_age_asked_by_the_client_is_honoured(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        stepup.step_up(browser, sub="quick")
        stepup.clock.advance(20)
        started, _, _ = authorize(stepup, browser, "quick", max_age="10")
    assert started.status_code == 303
    assert started.headers["location"].startswith("/interaction/")


def test_step_up_is_not_reused_by_another_client(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        stepup.step_up(browser, sub="cora")
        stepup.clock.advance(10)
        started, _, _ = authorize(
            stepup,
            browser,
            subject_token=stepup.upstream.token("cora", client_id=OTHER_ID),
            client_id=OTHER_ID,
            auth=(OTHER_ID, OTHER_SECRET),
            redirect_uri="http://localhost:9998/cb",
        )
    assert started.status_code == 303
    assert started.headers["location"].startswith("/interaction/")


# -- TOTP edges with the injected clock ---------------------------------------------------


def test_codes_one_step_either_side_are_accepted(stepup: Stepup) -> None:
    secret = enrol(stepup, "skew")
    for offset in (-1, 0, 1):
        stepup.clock.advance(150)
        with stepup.browser() as browser:
            page = open_page(stepup, browser, "skew", **NO_REUSE)
            answer = submit(browser, page, stepup.totp_code(secret, offset))
        assert "code" in redirect_query(answer), f"offset {offset}"


def test_codes_two_steps_away_are_refused(stepup: Stepup) -> None:
    secret = enrol(stepup, "drift")
    stepup.clock.advance(150)
    with stepup.browser() as browser:
        page = open_page(stepup, browser, "drift", **NO_REUSE)
        near = {stepup.totp_code(secret, o) for o in (-1, 0, 1)}
        for offset in (-2, 2):
            code = stepup.totp_code(secret, offset)
            if code in near:  # a one-in-a-million coincidence
                continue
            answer = submit(browser, page, code)
            assert answer.status_code == 400, f"offset {offset}"
            assert_no_code(answer)
        assert "code" in redirect_query(submit(browser, page, stepup.totp_code(secret)))


def test_same_code_is_refused_the_second_time(stepup: Stepup) -> None:
    secret = enrol(stepup, "replay")
    stepup.clock.advance(90)
    code = stepup.totp_code(secret)
    with stepup.browser() as browser:
        first = submit(browser, open_page(stepup, browser, "replay", **NO_REUSE), code)
        assert "code" in redirect_query(first)
        second = submit(browser, open_page(stepup, browser, "replay", **NO_REUSE), code)
    assert second.status_code == 400
    assert_no_code(second)


def test_older_step_after_newer_one_is_refused(stepup: Stepup) -> None:
    secret = enrol(stepup, "older")
    stepup.clock.advance(150)
    newer, older = stepup.totp_code(secret, 1), stepup.totp_code(secret, 0)
    with stepup.browser() as browser:
        first = submit(browser, open_page(stepup, browser, "older", **NO_REUSE), newer)
        assert "code" in redirect_query(first)
        second = submit(browser, open_page(stepup, browser, "older", **NO_REUSE), older)
    assert second.status_code == 400
    assert_no_code(second)


# -- parallel submissions -----------------------------------------------------------------


def _race(posts: list[tuple[httpx.Client, str, dict[str, str]]]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(posts))

    def post(item: tuple[httpx.Client, str, dict[str, str]]) -> httpx.Response:
        client, path, data = item
        barrier.wait(timeout=30)
        return client.post(path, data=data)

    with ThreadPoolExecutor(max_workers=len(posts)) as pool:
        return list(pool.map(post, posts))


def _count_codes(answers: list[httpx.Response]) -> int:
    codes = 0
    for answer in answers:
        assert answer.status_code in (303, 400, 429), f"{answer.status_code}: {answer.text}"
        if answer.status_code == 303:
            assert "code" in parse_qs(urlsplit(answer.headers["location"]).query)
            codes += 1
        else:
            assert_no_code(answer)
    return codes


def test_same_code_on_fifty_interactions_at_once_gives_one_code(stepup: Stepup) -> None:
    secret = enrol(stepup, "racer")
    stepup.clock.advance(90)
    code = stepup.totp_code(secret)
    browsers = [stepup.browser() for _ in range(50)]
    try:
        posts = []
        for browser in browsers:
            page = open_page(stepup, browser, "racer", **NO_REUSE)
            data = {"csrf": hidden(page.text, "csrf"), "action": "verify", "code": code}
            posts.append((browser, page.url.path, data))
        answers = _race(posts)
    finally:
        for browser in browsers:
            browser.close()
    assert _count_codes(answers) == 1


def test_same_code_fifty_times_on_one_interaction_gives_one_code(stepup: Stepup) -> None:
    secret = enrol(stepup, "hammer")
    stepup.clock.advance(90)
    cookie_name = browser_cookie_name(ISSUER)
    with stepup.browser() as browser:
        page = open_page(stepup, browser, "hammer", **NO_REUSE)
        cookie = browser.cookies.get(cookie_name)
    data = {"csrf": hidden(page.text, "csrf"), "action": "verify", "code": stepup.totp_code(secret)}
    clients = [
        httpx.Client(
            base_url=stepup.url, timeout=10.0, headers={"Cookie": f"{cookie_name}={cookie}"}
        )
        for _ in range(50)
    ]
    try:
        answers = _race([(client, page.url.path, data) for client in clients])
    finally:
        for client in clients:
            client.close()
    assert _count_codes(answers) == 1


# -- throttling ---------------------------------------------------------------------------


def test_throttle_blocks_after_free_attempts_even_the_right_code(stepup: Stepup) -> None:
    secret = enrol(stepup, "guesser")
    stepup.clock.advance(90)
    free = stepup.config.throttle.free_attempts
    with stepup.browser() as browser:
        page = open_page(stepup, browser, "guesser", **NO_REUSE)
        for _ in range(free):
            answer = submit(browser, page, wrong_code(stepup, secret))
            assert answer.status_code == 400
        blocked = submit(browser, page, wrong_code(stepup, secret))
        assert blocked.status_code == 429, blocked.text
        wait = int(blocked.headers["retry-after"])
        assert wait > 0
        assert str(wait) in alert(blocked.text)
        code_field_id(blocked.text)

        right = submit(browser, page, stepup.totp_code(secret))
        assert right.status_code == 429
        assert_no_code(right)
        assert right.headers["retry-after"] == str(wait)
        assert alert(right.text) == alert(blocked.text)

        stepup.clock.advance(wait)
        assert "code" in redirect_query(submit(browser, page, stepup.totp_code(secret)))

        # The success cleared the count: the free attempts are there again.
        stepup.clock.advance(60)
        page = open_page(stepup, browser, "guesser", **NO_REUSE)
        for _ in range(free):
            answer = submit(browser, page, wrong_code(stepup, secret))
            assert answer.status_code == 400, answer.text
            assert "retry-after" not in answer.headers


def test_throttle_waits_grow_until_the_lockout(stepup: Stepup) -> None:
    secret = enrol(stepup, "brute")
    stepup.clock.advance(90)
    settings = stepup.config.throttle
    waits: list[int] = []
    with stepup.browser() as browser:
        page = open_page(stepup, browser, "brute", **NO_REUSE)
        for attempt in range(1, settings.max_failures + 1):
            answer = submit(browser, page, wrong_code(stepup, secret))
            assert_no_code(answer)
            if attempt <= settings.free_attempts:
                assert answer.status_code == 400, f"attempt {attempt}"
                continue
            assert answer.status_code == 429, f"attempt {attempt}"
            waits.append(int(answer.headers["retry-after"]))
            if attempt < settings.max_failures:
                stepup.clock.advance(waits[-1])
        assert waits == sorted(set(waits)), waits  # each wait longer than the one before
        assert waits[-1] == settings.lockout
        assert all(w <= settings.max_delay for w in waits[:-1])
        # One second before the lockout ends even the right code fails (on a new page: the
        # old interaction has expired by now).
        stepup.clock.advance(settings.lockout - 1)
        page = open_page(stepup, browser, "brute", **NO_REUSE)
        right = submit(browser, page, stepup.totp_code(secret))
        assert right.status_code == 429
        assert right.headers["retry-after"] == "1"
        stepup.clock.advance(1)
        assert "code" in redirect_query(submit(browser, page, stepup.totp_code(secret)))


def test_throttle_is_per_user_not_per_interaction(stepup: Stepup) -> None:
    secret = enrol(stepup, "hopper")
    stepup.clock.advance(90)
    free = stepup.config.throttle.free_attempts
    with stepup.browser() as browser:
        for _ in range(free):
            page = open_page(stepup, browser, "hopper", **NO_REUSE)
            assert submit(browser, page, wrong_code(stepup, secret)).status_code == 400
        page = open_page(stepup, browser, "hopper", **NO_REUSE)
        assert submit(browser, page, wrong_code(stepup, secret)).status_code == 429
        assert submit(browser, page, stepup.totp_code(secret)).status_code == 429


# -- headers and error pages --------------------------------------------------------------


def test_pages_carry_security_headers(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        page = open_page(stepup, browser)
        error = browser.get("/authorize")
        missing = browser.get("/no/such/page")
        started, _, _ = authorize(stepup, browser)
    for response in (page, error, missing):
        assert_page_headers(response)
    assert "no-store" in started.headers["cache-control"]


def test_unknown_path_is_an_html_404_page(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        answer = browser.get("/no/such/page")
    assert_error_page(answer, 404)


def test_wrong_method_on_a_page_is_an_html_error(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        answer = browser.post("/authorize", data={"client_id": CLIENT_ID})
    assert_error_page(answer, 405)


def test_unreachable_redis_fails_closed(
    config: Config, upstream: Upstream, clock: FrozenClock, tmp_path: Path
) -> None:
    nowhere = f"unix://{tmp_path}/nobody-listens.sock"
    with running_stepup(config, nowhere, clock, upstream) as down:
        with down.browser() as browser:
            page = browser.get(
                "/authorize", params={"client_id": CLIENT_ID, "request_uri": GARBAGE_REQUEST_URI}
            )
            interaction = browser.get("/interaction/some-interaction-id")
        pushed = down.par()
    for answer in (page, interaction):
        assert_error_page(answer, 503)
        assert int(answer.headers["retry-after"]) > 0
        assert_page_headers(answer)
    assert pushed.status_code == 503
    assert pushed.json()["error"] == "temporarily_unavailable"
    assert int(pushed.headers["retry-after"]) > 0


def test_request_uri_lives_until_its_lifetime_by_the_clock_too(stepup: Stepup) -> None:
    lifetime = stepup.config.limits.request_uri_lifetime
    with stepup.browser() as browser:
        fresh = stepup.par().json()["request_uri"]
        stepup.clock.advance(lifetime - 1)
        kept = browser.get("/authorize", params={"client_id": CLIENT_ID, "request_uri": fresh})
        late = stepup.par().json()["request_uri"]
        stepup.clock.advance(lifetime)  # Redis still holds it: the clock alone ends it
        ended = browser.get("/authorize", params={"client_id": CLIENT_ID, "request_uri": late})
    assert kept.status_code == 303 and kept.headers["location"].startswith("/interaction/")
    assert_error_page(ended, 400)
