"""Redis going away under a live stepup: stopped mid-flow, restarted, killed, frozen.

Each test has a persistent redis-server of its own (appendfsync always). stepup must fail
closed while Redis is gone (503 with Retry-After: JSON on the API, an HTML page in the
browser, never a token, never a 500), and pick up where it left off once Redis is back.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

from stepup.clock import FrozenClock
from stepup.storage import keys
from tests.support.oauth import assert_oauth_error
from tests.support.redis_proc import RedisProcess
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER_UPSTREAM,
    REDIRECT,
    ScopeAndMaxAge,
    Stepup,
    Upstream,
    hidden,
    make_config,
    manual_key,
    pkce,
    running_stepup,
)

# max_age 0: every approval asks again, so no flow reuses an earlier one (and payments:write,
# unlike audit:read, is not single-use: introspection does not consume it).
NO_REUSE: ScopeAndMaxAge = {"scope": "payments:write", "max_age": "0"}
# stepup's Redis client gives up after 2 s on a socket that does not answer; a request to a
# frozen Redis must end soon after (a little slack for a loaded machine), not hang.
REDIS_SOCKET_TIMEOUT = 2.0
FROZEN_REDIS_DEADLINE = REDIS_SOCKET_TIMEOUT + 3.0


@pytest.fixture
def live(
    redis_proc: RedisProcess, tmp_path: Path, clock: FrozenClock, upstream: Upstream
) -> Iterator[Stepup]:
    config = make_config(upstream, tmp_path / "data")
    with running_stepup(config, redis_proc.url, clock, upstream) as running:
        yield running


@pytest.fixture
def store(redis_proc: RedisProcess) -> Iterator[redis.Redis]:
    """A redis-py client of the test's own, to look at (or damage) what stepup stored."""
    with redis.Redis.from_url(redis_proc.url) as client:
        yield client


@contextmanager
def outage(redis_proc: RedisProcess) -> Iterator[None]:
    """Redis stopped (clean shutdown) for the duration; started again afterwards."""
    redis_proc.stop()
    try:
        yield
    finally:
        redis_proc.start()


# -- helpers --------------------------------------------------------------------------------


def assert_json_unavailable(response: httpx.Response) -> None:
    assert_oauth_error(response, 503, "temporarily_unavailable")
    assert int(response.headers["retry-after"]) > 0
    assert "access_token" not in response.text


def assert_page_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("text/html")
    assert int(response.headers["retry-after"]) > 0
    assert "location" not in response.headers
    assert "<h1>" in response.text
    assert "Traceback" not in response.text
    assert "code=" not in response.text


def subject_key(sub: str) -> str:
    return keys.subject_id(ISSUER_UPSTREAM, sub)


def push(stepup: Stepup, sub: str = "alice") -> tuple[str, str]:
    """A PAR for `sub`: (request_uri, code_verifier)."""
    verifier, challenge = pkce()
    pushed = stepup.par(stepup.upstream.token(sub), code_challenge=challenge, **NO_REUSE)
    assert pushed.status_code == 201, pushed.text
    return pushed.json()["request_uri"], verifier


def open_page(stepup: Stepup, browser: httpx.Client, request_uri: str) -> httpx.Response:
    page = stepup.open_authorization(browser, request_uri)
    assert page.status_code == 200, page.text
    return page


def submit_code(browser: httpx.Client, page: httpx.Response, code: str) -> httpx.Response:
    data = {"csrf": hidden(page.text, "csrf"), "action": "verify", "code": code}
    return browser.post(page.url.path, data=data)


def code_from(answer: httpx.Response) -> str:
    assert answer.status_code == 303, f"{answer.status_code}: {answer.text}"
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return parse_qs(urlsplit(location).query)["code"][0]


def enrol(stepup: Stepup, sub: str = "alice") -> str:
    """A first step-up that enrols TOTP for `sub`; returns the secret."""
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub=sub, **NO_REUSE)
    return secret


def prove(stepup: Stepup, secret: str, sub: str = "alice") -> tuple[str, str]:
    """A step-up of an enrolled user through the verify form: (code, code_verifier)."""
    request_uri, verifier = push(stepup, sub)
    with stepup.browser() as browser:
        page = open_page(stepup, browser, request_uri)
        assert 'id="totp-secret"' not in page.text, "an enrolled user was offered enrolment"
        stepup.clock.advance(30)
        return code_from(submit_code(browser, page, stepup.totp_code(secret))), verifier


def exchange(stepup: Stepup, code: str, verifier: str, sub: str = "alice") -> str:
    response = stepup.token(code, verifier, subject_token=stepup.upstream.token(sub))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def is_active(stepup: Stepup, token: str) -> bool:
    response = stepup.introspect(token)
    assert response.status_code == 200, response.text
    active = response.json()["active"]
    assert isinstance(active, bool)
    return active


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    jti: str = claims["jti"]
    return jti


def wrong_code(stepup: Stepup, secret: str) -> str:
    """Six digits that match no time step within the allowed skew."""
    near = {stepup.totp_code(secret, offset) for offset in range(-3, 4)}
    candidate = int(stepup.totp_code(secret))
    while f"{candidate:06d}" in near:
        candidate = (candidate + 137_911) % 1_000_000
    return f"{candidate:06d}"


# -- Redis stopped at each stage of the loop ---------------------------------------------


def test_par_during_an_outage_is_503_and_the_flow_completes_afterwards(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    verifier, challenge = pkce()
    with outage(redis_proc):
        refused = live.par(code_challenge=challenge, **NO_REUSE)
    assert_json_unavailable(refused)

    pushed = live.par(code_challenge=challenge, **NO_REUSE)
    assert pushed.status_code == 201, pushed.text
    with live.browser() as browser:
        page = open_page(live, browser, pushed.json()["request_uri"])
        live.clock.advance(30)
        code = code_from(submit_code(browser, page, live.totp_code(manual_key(page.text))))
    assert is_active(live, exchange(live, code, verifier))


def test_authorize_during_an_outage_is_a_503_page_and_the_request_uri_survives(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    request_uri, verifier = push(live)
    with live.browser() as browser:
        with outage(redis_proc):
            refused = browser.get(
                "/authorize", params={"client_id": CLIENT_ID, "request_uri": request_uri}
            )
        assert_page_unavailable(refused)
        # Nothing was consumed while Redis was away: the same request_uri goes on.
        page = open_page(live, browser, request_uri)
        live.clock.advance(30)
        code = code_from(submit_code(browser, page, live.totp_code(manual_key(page.text))))
    assert is_active(live, exchange(live, code, verifier))


def test_code_posted_during_an_outage_is_a_503_page_and_the_page_works_afterwards(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    request_uri, verifier = push(live)
    with live.browser() as browser:
        page = open_page(live, browser, request_uri)
        secret = manual_key(page.text)
        live.clock.advance(30)
        with outage(redis_proc):
            refused = submit_code(browser, page, live.totp_code(secret))
        assert_page_unavailable(refused)
        # The time step was not spent and the interaction not consumed: the same code works.
        code = code_from(submit_code(browser, page, live.totp_code(secret)))
    assert is_active(live, exchange(live, code, verifier))


def test_token_request_during_an_outage_is_503_and_the_code_still_redeems(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    secret = enrol(live)
    code, verifier = prove(live, secret)
    with outage(redis_proc):
        refused = live.token(code, verifier)
    assert_json_unavailable(refused)
    assert is_active(live, exchange(live, code, verifier))


def test_introspection_during_an_outage_is_503_not_inactive_or_active(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    secret = enrol(live)
    token = exchange(live, *prove(live, secret))
    with outage(redis_proc):
        refused = live.introspect(token)
    assert_json_unavailable(refused)
    assert is_active(live, token)


def test_a_remembered_introspection_answer_is_not_given_during_an_outage(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    # Introspected once, its answer is remembered; without Redis to say the record is still
    # there, that answer is not given.
    secret = enrol(live)
    token = exchange(live, *prove(live, secret))
    assert is_active(live, token)
    with outage(redis_proc):
        refused = live.introspect(token)
    assert_json_unavailable(refused)
    assert is_active(live, token)


def test_revocation_during_an_outage_is_503_so_the_client_retries(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    secret = enrol(live)
    token = exchange(live, *prove(live, secret))
    with outage(redis_proc):
        refused = live.revoke(token)
    # RFC 7009 §2.2.1: 503 tells the client the token was NOT revoked and to try again.
    assert_json_unavailable(refused)
    assert is_active(live, token)
    assert live.revoke(token).status_code == 200
    assert not is_active(live, token)


def test_every_endpoint_that_needs_redis_fails_closed_during_an_outage(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    secret = enrol(live)
    code, verifier = prove(live, secret)
    token = exchange(live, *prove(live, secret))
    request_uri, _ = push(live)
    with live.browser() as browser:
        page = open_page(live, browser, request_uri)
        created = live.http.post(
            "/enroll",
            data={"subject_token": live.upstream.token(), "subject_token_type": ACCESS_TOKEN_TYPE},
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
        assert created.status_code == 201, created.text
        enrol_path = urlsplit(created.json()["enrollment_uri"]).path
        live.clock.advance(30)
        with outage(redis_proc):
            json_answers = {
                "par": live.par(**NO_REUSE),
                "token": live.token(code, verifier),
                "introspect": live.introspect(token),
                "revoke": live.revoke(token),
                "enroll": live.http.post(
                    "/enroll",
                    data={
                        "subject_token": live.upstream.token(),
                        "subject_token_type": ACCESS_TOKEN_TYPE,
                    },
                    auth=(CLIENT_ID, CLIENT_SECRET),
                ),
            }
            pages = {
                "authorize": browser.get(
                    "/authorize", params={"client_id": CLIENT_ID, "request_uri": request_uri}
                ),
                "interaction GET": browser.get(page.url.path),
                "interaction POST": submit_code(browser, page, live.totp_code(secret)),
                "enrolment GET": browser.get(enrol_path),
            }
            ready = live.http.get("/readyz")
            alive = live.http.get("/healthz")
    for name, answer in json_answers.items():
        assert answer.status_code == 503, f"{name}: {answer.status_code} {answer.text}"
        assert_json_unavailable(answer)
    for name, answer in pages.items():
        assert answer.status_code == 503, f"{name}: {answer.status_code} {answer.text}"
        assert_page_unavailable(answer)
    assert ready.status_code == 503
    assert int(ready.headers["retry-after"]) > 0
    assert alive.status_code == 200
    # Nothing of the refused token request was spent: the code still redeems.
    assert is_active(live, exchange(live, code, verifier))


# -- throttling state survives a restart ---------------------------------------------------


def retry_after_sequence(
    stepup: Stepup,
    secret: str,
    sub: str,
    failures: int,
    after: tuple[int, Callable[[], None]] | None = None,
) -> list[int]:
    """Retry-After of `failures` wrong codes in a row (0 for a plain 400), waiting out each
    one; `after` = (n, action) runs the action after the n-th failure."""
    waits: list[int] = []
    request_uri, _ = push(stepup, sub)
    with stepup.browser() as browser:
        page = open_page(stepup, browser, request_uri)
        for attempt in range(1, failures + 1):
            answer = submit_code(browser, page, wrong_code(stepup, secret))
            assert answer.status_code in (400, 429), f"{answer.status_code}: {answer.text}"
            assert "location" not in answer.headers
            wait = int(answer.headers.get("retry-after", "0"))
            waits.append(wait)
            stepup.clock.advance(wait)
            if after is not None and attempt == after[0]:
                after[1]()
    return waits


def test_throttle_count_is_not_reset_by_a_redis_restart(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    throttle = live.config.throttle
    failures = throttle.free_attempts + 3
    assert failures < throttle.max_failures, "the sequence must stay below the lockout"
    fresh_secret = enrol(live, "fresh")
    restarted_secret = enrol(live, "restarted")
    live.clock.advance(90)

    expected = retry_after_sequence(live, fresh_secret, "fresh", failures)
    free = throttle.free_attempts
    assert expected[:free] == [0] * free
    assert expected[free:] == sorted(set(expected[free:])), expected  # growing waits

    observed = retry_after_sequence(
        live, restarted_secret, "restarted", failures, after=(free + 1, redis_proc.restart)
    )
    assert observed == expected


# -- a crash (SIGKILL) with appendfsync always -----------------------------------------------


def test_enrolled_factor_survives_a_crash(
    live: Stepup, redis_proc: RedisProcess, store: redis.Redis
) -> None:
    secret = enrol(live)
    before = store.hgetall(keys.factors(subject_key("alice")))
    assert len(before) == 1
    redis_proc.kill()
    redis_proc.start()
    assert store.hgetall(keys.factors(subject_key("alice"))) == before
    # The same secret still steps up, through the verify form (not a new enrolment).
    code, verifier = prove(live, secret)
    assert is_active(live, exchange(live, code, verifier))


def test_every_factor_of_every_user_survives_a_crash(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    secrets_by_user = {sub: enrol(live, sub) for sub in ("ann", "ben", "cat")}
    redis_proc.kill()
    redis_proc.start()
    for sub, secret in secrets_by_user.items():
        code, verifier = prove(live, secret, sub)
        assert is_active(live, exchange(live, code, verifier, sub))


def test_token_whose_record_was_lost_reads_inactive(
    live: Stepup, redis_proc: RedisProcess, store: redis.Redis
) -> None:
    secret = enrol(live)
    token = exchange(live, *prove(live, secret))
    redis_proc.kill()
    redis_proc.start()
    assert is_active(live, token), "an acknowledged write was lost in the crash"
    # As an eviction or a lost write would: the token's record is gone.
    assert store.delete(keys.elevation(jti_of(token))) == 1
    response = live.introspect(token)
    assert response.status_code == 200, response.text
    assert response.json() == {"active": False}


def test_revoking_a_token_whose_record_was_lost_is_200(
    live: Stepup, redis_proc: RedisProcess, store: redis.Redis
) -> None:
    secret = enrol(live)
    token = exchange(live, *prove(live, secret))
    redis_proc.kill()
    redis_proc.start()
    assert store.delete(keys.elevation(jti_of(token))) == 1
    revoked = live.revoke(token)
    assert revoked.status_code == 200, revoked.text
    assert not is_active(live, token)


def test_first_request_after_a_crash_is_served(live: Stepup, redis_proc: RedisProcess) -> None:
    secret = enrol(live)
    token = exchange(live, *prove(live, secret))
    redis_proc.kill()
    redis_proc.start()
    # stepup's pooled connections died with the server: it must reconnect, not answer 503.
    response = live.introspect(token)
    assert response.status_code == 200, response.text
    assert response.json()["active"] is True


# -- a frozen Redis (SIGSTOP) ------------------------------------------------------------------


def test_frozen_redis_gives_503_within_the_timeout_not_a_hang(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    _, challenge = pkce()
    with httpx.Client(base_url=live.url, timeout=FROZEN_REDIS_DEADLINE + 5) as client:
        redis_proc.pause()
        try:
            started = time.monotonic()
            answer = client.post(
                "/par",
                data={
                    "subject_token": live.upstream.token(),
                    "subject_token_type": ACCESS_TOKEN_TYPE,
                    "scope": "payments:write",
                    "resource": "https://api.example",
                    "redirect_uri": REDIRECT,
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                },
                auth=(CLIENT_ID, CLIENT_SECRET),
            )
            elapsed = time.monotonic() - started
        finally:
            redis_proc.resume()
    assert_json_unavailable(answer)
    assert elapsed < FROZEN_REDIS_DEADLINE, f"took {elapsed:.1f}s"
    # Once Redis thaws, stepup serves again.
    assert live.par(code_challenge=challenge, **NO_REUSE).status_code == 201


def test_frozen_redis_gives_a_503_page_within_the_timeout(
    live: Stepup, redis_proc: RedisProcess
) -> None:
    request_uri, _ = push(live)
    with live.browser() as browser:
        redis_proc.pause()
        try:
            started = time.monotonic()
            answer = browser.get(
                "/authorize",
                params={"client_id": CLIENT_ID, "request_uri": request_uri},
                timeout=FROZEN_REDIS_DEADLINE + 5,
            )
            elapsed = time.monotonic() - started
        finally:
            redis_proc.resume()
    assert_page_unavailable(answer)
    assert elapsed < FROZEN_REDIS_DEADLINE, f"took {elapsed:.1f}s"
