"""The factor management page (/enroll/{id}) and recovery codes, through plain HTTP forms:
proving first, renaming, removing, new recovery code sets, and spending a code once."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

from stepup.clock import FrozenClock
from stepup.storage import keys
from tests.support.redis_replies import as_bytes
from tests.support.stepup import (
    ISSUER_UPSTREAM,
    Stepup,
    Upstream,
    got_code,
    hidden,
    make_config,
    manual_key,
    pkce,
    running_stepup,
    step_up_with,
)
from tests.web.test_enrollment import enrol_via_stepup, link_path, post


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def subject(sub: str) -> str:
    return keys.subject_id(ISSUER_UPSTREAM, sub)


def factor_ids(store: redis.Redis, sub: str) -> set[str]:
    return {as_bytes(name).decode() for name in store.hkeys(keys.factors(subject(sub)))}


def proven_page(stepup: Stepup, browser: httpx.Client, sub: str, secret: str) -> httpx.Response:
    """The management page of a user with a TOTP factor, after proving it."""
    page = browser.get(link_path(stepup, sub))
    assert 'value="prove"' in page.text
    stepup.clock.advance(30)
    proven = post(browser, page, "prove", stepup.totp_code(secret))
    assert proven.status_code == 200, proven.text
    assert 'value="rename"' in proven.text
    return proven


def shown_codes(page: httpx.Response) -> list[str]:
    return re.findall(r"<li><code>([0-9a-z]{4}(?:-[0-9a-z]{4}){3})</code></li>", page.text)


def new_codes(stepup: Stepup, sub: str, secret: str) -> list[str]:
    with stepup.browser() as browser:
        page = proven_page(stepup, browser, sub, secret)
        answer = post(browser, page, "recovery-new")
    assert answer.status_code == 200, answer.text
    codes = shown_codes(answer)
    assert len(codes) == stepup.config.factors.recovery_codes
    return codes


def open_verification(
    stepup: Stepup, browser: httpx.Client, sub: str, scope: str = "audit:read"
) -> tuple[httpx.Response, str]:
    verifier, challenge = pkce()
    pushed = stepup.par(stepup.upstream.token(sub), scope=scope, code_challenge=challenge)
    assert pushed.status_code == 201, pushed.text
    page = stepup.open_authorization(browser, pushed.json()["request_uri"])
    assert page.status_code == 200, page.text
    return page, verifier


def use_code(
    stepup: Stepup, page: httpx.Response, browser: httpx.Client, code: str
) -> httpx.Response:
    return browser.post(
        page.url.path,
        data={"csrf": hidden(page.text, "csrf"), "action": "recovery", "recovery_code": code},
    )


def step_up_with_code(stepup: Stepup, sub: str, code: str) -> httpx.Response:
    with stepup.browser() as browser:
        page, _ = open_verification(stepup, browser, sub)
        return use_code(stepup, page, browser, code)


# -- recovery codes -------------------------------------------------------------------------


def test_recovery_codes_are_kept_only_as_salted_scrypt_digests(
    stepup: Stepup, store: redis.Redis
) -> None:
    secret = enrol_via_stepup(stepup, "ann")
    codes = new_codes(stepup, "ann", secret)
    assert len(set(codes)) == len(codes)
    stored = {as_bytes(d).decode() for d in store.smembers(keys.recovery_codes(subject("ann")))}
    assert len(stored) == len(codes)
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in stored)
    dump = b"".join(store.dump(k) or b"" for k in store.keys("*"))
    for code in codes:
        assert code.encode() not in dump and code.replace("-", "").encode() not in dump


def test_codes_are_shown_once_only(stepup: Stepup) -> None:
    secret = enrol_via_stepup(stepup, "bea")
    with stepup.browser() as browser:
        page = proven_page(stepup, browser, "bea", secret)
        shown = post(browser, page, "recovery-new")
        codes = shown_codes(shown)
        assert codes and 'download="recovery-codes.txt"' in shown.text
        again = browser.get(page.url.path)
    assert again.status_code == 200
    assert shown_codes(again) == []
    assert not any(code in again.text for code in codes)
    assert f"{len(codes)} of {len(codes)} unused" in again.text


def test_a_recovery_code_steps_up_once_with_amr_otp(stepup: Stepup) -> None:
    secret = enrol_via_stepup(stepup, "cai")
    code = new_codes(stepup, "cai", secret)[0]
    with stepup.browser() as browser:
        page, verifier = open_verification(stepup, browser, "cai")
        assert "Use a recovery code instead" in page.text
        answer = use_code(stepup, page, browser, code.upper().replace("-", " "))
    assert got_code(answer), answer.text
    grant = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    token = stepup.token(grant, verifier, subject_token=stepup.upstream.token("cai"))
    assert token.status_code == 200, token.text
    introspected = stepup.introspect(token.json()["access_token"]).json()
    assert introspected["amr"] == ["otp"]

    second = step_up_with_code(stepup, "cai", code)
    assert second.status_code == 400
    assert "That did not work" in second.text


def test_parallel_uses_of_one_code_succeed_exactly_once(stepup: Stepup) -> None:
    secret = enrol_via_stepup(stepup, "dov")
    code = new_codes(stepup, "dov", secret)[0]
    browsers = [stepup.browser() for _ in range(12)]
    pages = [open_verification(stepup, b, "dov")[0] for b in browsers]
    answers: list[httpx.Response] = []
    start = threading.Barrier(len(browsers))

    def spend(browser: httpx.Client, page: httpx.Response) -> None:
        start.wait()
        answers.append(use_code(stepup, page, browser, code))

    threads = [
        threading.Thread(target=spend, args=pair) for pair in zip(browsers, pages, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for browser in browsers:
        browser.close()
    assert sum(got_code(a) for a in answers) == 1
    assert all(a.status_code in (303, 400, 429) for a in answers)


def test_a_new_set_voids_the_old_one(stepup: Stepup) -> None:
    secret = enrol_via_stepup(stepup, "eve")
    old = new_codes(stepup, "eve", secret)
    new = new_codes(stepup, "eve", secret)
    assert not set(old) & set(new)
    assert not got_code(step_up_with_code(stepup, "eve", old[1]))
    assert got_code(step_up_with_code(stepup, "eve", new[1]))


def test_guessing_recovery_codes_is_throttled(stepup: Stepup) -> None:
    secret = enrol_via_stepup(stepup, "fay")
    code = new_codes(stepup, "fay", secret)[0]
    with stepup.browser() as browser:
        page, _ = open_verification(stepup, browser, "fay")
        for _ in range(stepup.config.throttle.free_attempts):
            wrong = use_code(stepup, page, browser, "0000-0000-0000-0000")
            assert wrong.status_code == 400
        throttled = use_code(stepup, page, browser, "0000-0000-0000-0001")
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) > 0
        # While the wait runs even the right code is refused, and it is not spent.
        refused = use_code(stepup, page, browser, code)
        assert refused.status_code == 429
        stepup.clock.advance(int(refused.headers["retry-after"]))
        assert got_code(use_code(stepup, page, browser, code))


def test_recovery_codes_are_not_offered_at_a_phishing_resistant_level(stepup: Stepup) -> None:
    secret = enrol_via_stepup(stepup, "gus")
    new_codes(stepup, "gus", secret)
    with stepup.browser() as browser:
        pushed = stepup.par(stepup.upstream.token("gus"), scope="keys:admin")
        started = browser.get(
            "/authorize",
            params={"client_id": "bank", "request_uri": pushed.json()["request_uri"]},
        )
    # TOTP and recovery codes cannot meet phr: nothing to offer this user.
    query = parse_qs(urlsplit(started.headers["location"]).query)
    assert query["error"] == ["unmet_authentication_requirements"]


def test_a_recovery_code_proves_the_user_on_the_management_page(stepup: Stepup) -> None:
    secret = enrol_via_stepup(stepup, "hal")
    code = new_codes(stepup, "hal", secret)[0]
    with stepup.browser() as browser:
        page = browser.get(link_path(stepup, "hal"))
        assert 'value="prove-recovery"' in page.text
        proven = browser.post(
            page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "prove-recovery",
                "recovery_code": code,
            },
        )
    assert proven.status_code == 200, proven.text
    assert 'value="rename"' in proven.text
    assert "9 of 10 unused" in proven.text


def test_recovery_codes_need_another_factor_first(stepup: Stepup, store: redis.Redis) -> None:
    with stepup.browser() as browser:
        page = browser.get(link_path(stepup, "ivy"))
        answer = post(browser, page, "recovery-new")
    assert answer.status_code == 409
    assert shown_codes(answer) == []
    assert factor_ids(store, "ivy") == set()


# -- proving first --------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["rename", "remove", "recovery-new", "confirm"])
def test_changes_before_proving_are_refused_and_change_nothing(
    stepup: Stepup, store: redis.Redis, action: str
) -> None:
    secret = enrol_via_stepup(stepup, "jon")
    before = store.hgetall(keys.factors(subject("jon")))
    (factor_id,) = factor_ids(store, "jon")
    with stepup.browser() as browser:
        page = browser.get(link_path(stepup, "jon"))
        answer = browser.post(
            page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": action,
                "factor": factor_id,
                "name": "renamed",
                "code": stepup.totp_code(secret),
            },
        )
    assert answer.status_code == 403
    assert store.hgetall(keys.factors(subject("jon"))) == before
    assert not store.exists(keys.recovery_codes(subject("jon")))


# -- rename and remove ----------------------------------------------------------------------


def test_rename_shows_the_new_name(stepup: Stepup, store: redis.Redis) -> None:
    secret = enrol_via_stepup(stepup, "kim")
    (factor_id,) = factor_ids(store, "kim")
    with stepup.browser() as browser:
        page = proven_page(stepup, browser, "kim", secret)
        renamed = browser.post(
            page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "rename",
                "factor": factor_id,
                "name": "  Work   phone ",
            },
        )
    assert renamed.status_code == 200, renamed.text
    assert "Renamed to “Work phone”" in renamed.text
    assert b"Work phone" in as_bytes(store.hget(keys.factors(subject("kim")), factor_id))


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "bad\x00name", "tab\u200bzero"])
def test_rename_refuses_empty_long_or_control_names(
    stepup: Stepup, store: redis.Redis, name: str
) -> None:
    secret = enrol_via_stepup(stepup, "lou")
    (factor_id,) = factor_ids(store, "lou")
    with stepup.browser() as browser:
        page = proven_page(stepup, browser, "lou", secret)
        before = store.hget(keys.factors(subject("lou")), factor_id)
        answer = browser.post(
            page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "rename",
                "factor": factor_id,
                "name": name,
            },
        )
    assert answer.status_code == 400
    assert store.hget(keys.factors(subject("lou")), factor_id) == before


def test_removing_the_last_factor_is_refused(stepup: Stepup, store: redis.Redis) -> None:
    secret = enrol_via_stepup(stepup, "max")
    (factor_id,) = factor_ids(store, "max")
    with stepup.browser() as browser:
        page = proven_page(stepup, browser, "max", secret)
        answer = browser.post(
            page.url.path,
            data={"csrf": hidden(page.text, "csrf"), "action": "remove", "factor": factor_id},
        )
    assert answer.status_code == 409
    assert "Add another factor first" in answer.text
    assert factor_ids(store, "max") == {factor_id}
    assert got_code(step_up_with(stepup, "max", secret))


def add_second_totp(stepup: Stepup, sub: str, secret: str) -> str:
    with stepup.browser() as browser:
        page = proven_page(stepup, browser, sub, secret)
        second = manual_key(page.text)
        stepup.clock.advance(30)
        added = post(browser, page, "confirm", stepup.totp_code(second))
        assert added.status_code == 200 and "Authenticator app added" in added.text
    return second


def test_removing_a_factor_when_another_remains(stepup: Stepup, store: redis.Redis) -> None:
    first = enrol_via_stepup(stepup, "ned")
    (first_id,) = factor_ids(store, "ned")
    second = add_second_totp(stepup, "ned", first)
    with stepup.browser() as browser:
        page = proven_page(stepup, browser, "ned", second)
        answer = browser.post(
            page.url.path,
            data={"csrf": hidden(page.text, "csrf"), "action": "remove", "factor": first_id},
        )
    assert answer.status_code == 200, answer.text
    assert "removed" in answer.text
    assert first_id not in factor_ids(store, "ned") and len(factor_ids(store, "ned")) == 1
    assert not store.exists(keys.totp_last_step(subject("ned"), first_id))
    assert not got_code(step_up_with(stepup, "ned", first))
    assert got_code(step_up_with(stepup, "ned", second))


def test_recovery_codes_do_not_count_as_another_factor(stepup: Stepup, store: redis.Redis) -> None:
    secret = enrol_via_stepup(stepup, "ola")
    (totp_id,) = factor_ids(store, "ola")
    new_codes(stepup, "ola", secret)
    with stepup.browser() as browser:
        page = proven_page(stepup, browser, "ola", secret)
        answer = browser.post(
            page.url.path,
            data={"csrf": hidden(page.text, "csrf"), "action": "remove", "factor": totp_id},
        )
    assert answer.status_code == 409
    assert totp_id in factor_ids(store, "ola")


def test_with_policy_warn_removing_the_last_factor_asks_to_confirm(
    upstream: Upstream, tmp_path: Path, redis_url: str, clock: FrozenClock, store: redis.Redis
) -> None:
    config = make_config(upstream, tmp_path / "warn")
    config = type(config)(
        **{**config.__dict__, "factors": type(config.factors)(last_factor="warn")}
    )
    with running_stepup(config, redis_url, clock, upstream) as stepup:
        secret = enrol_via_stepup(stepup, "pia")
        (factor_id,) = factor_ids(store, "pia")
        with stepup.browser() as browser:
            page = proven_page(stepup, browser, "pia", secret)
            fields = {"csrf": hidden(page.text, "csrf"), "action": "remove", "factor": factor_id}
            warned = browser.post(page.url.path, data=fields)
            assert warned.status_code == 200
            assert "Remove anyway" in warned.text
            assert factor_ids(store, "pia") == {factor_id}
            removed = browser.post(page.url.path, data={**fields, "confirm": "yes"})
        assert removed.status_code == 200, removed.text
        assert factor_ids(store, "pia") == set()


def test_removing_an_unknown_factor_is_a_404_page(stepup: Stepup, store: redis.Redis) -> None:
    secret = enrol_via_stepup(stepup, "quy")
    with stepup.browser() as browser:
        page = proven_page(stepup, browser, "quy", secret)
        answer = browser.post(
            page.url.path,
            data={"csrf": hidden(page.text, "csrf"), "action": "remove", "factor": "totp-nope"},
        )
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert len(factor_ids(store, "quy")) == 1


def test_recovery_codes_can_be_removed(stepup: Stepup, store: redis.Redis) -> None:
    secret = enrol_via_stepup(stepup, "rex")
    codes = new_codes(stepup, "rex", secret)
    (recovery_id,) = {f for f in factor_ids(store, "rex") if f.startswith("recovery-")}
    with stepup.browser() as browser:
        page = proven_page(stepup, browser, "rex", secret)
        assert "Remove recovery codes" in page.text
        answer = browser.post(
            page.url.path,
            data={"csrf": hidden(page.text, "csrf"), "action": "remove", "factor": recovery_id},
        )
    assert answer.status_code == 200, answer.text
    assert recovery_id not in factor_ids(store, "rex")
    assert not store.exists(keys.recovery_codes(subject("rex")))
    assert not got_code(step_up_with_code(stepup, "rex", codes[0]))
