"""Nothing secret reaches a log: a whole loop with failures in between, every log record of
the server captured (the audit trail, the error detail, uvicorn's own), then searched for
each secret, token, code and handle the loop used."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
import redis

from stepup.storage.embedded import EmbeddedRedis
from stepup.web.pages import browser_cookie_name
from tests.support.oauth import module_server
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ID,
    CLIENT_SECRET,
    RS_ID,
    RS_SECRET,
    ScopeAndMaxAge,
    Stepup,
    frozen_now,
    hidden,
    manual_key,
    pkce,
)

live_stepup, stepup = module_server("no-secrets-in-logs")

NO_REUSE: ScopeAndMaxAge = {"scope": "payments:write", "max_age": "0"}
WRONG_CLIENT_SECRET = "wrong-bank-secret-5f0c1e9a7d3b"
WRONG_RS_SECRET = "wrong-rs-secret-8c2d4e6f0a1b"
AUDIT_EVENTS = {
    "challenge.accepted",
    "factor.verify",
    "enrolment.added",
    "stepup.approved",
    "token.issued",
    "token.introspected",
    "token.revoked",
}


class Capture(logging.Handler):
    """Keeps every record, formatted at once (with any exception text) as a handler would."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(threadName)s %(message)s"))
        self.lines: list[tuple[logging.LogRecord, str]] = []
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lock_lines:
            self.lines.append((record, line))


@contextmanager
def all_logs() -> Iterator[Capture]:
    """Every logger at DEBUG into one handler; levels and handlers restored afterwards.

    The handler goes on the root and on every logger that keeps its records from the root
    (propagate off) but writes them somewhere (has handlers), like uvicorn's. A logger the
    server switched off (uvicorn.access without --access-log: no handlers) stays off, since
    uvicorn would start writing access lines the moment it saw a handler there."""
    capture = Capture()
    root = logging.getLogger()
    loggers = [root] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    levels = {logger: logger.level for logger in loggers}
    own_handler = [root] + [
        logger for logger in loggers if not logger.propagate and logger.handlers
    ]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    for logger in own_handler:
        logger.addHandler(capture)
    try:
        yield capture
    finally:
        for logger in own_handler:
            logger.removeHandler(capture)
        for logger, level in levels.items():
            logger.setLevel(level)


def server_lines(capture: Capture) -> list[str]:
    """What the server logged: everything but the test's own HTTP client's debug lines."""
    return [
        line
        for record, line in capture.lines
        if not (
            record.name.split(".")[0] in ("httpx", "httpcore")
            and record.threadName == threading.main_thread().name
        )
    ]


def audit_events(capture: Capture) -> set[str]:
    events = set()
    for record, _ in capture.lines:
        if record.name == "stepup.audit":
            events.add(json.loads(record.getMessage())["event"])
    return events


def wrong_code(stepup: Stepup, secret: str) -> str:
    near = {stepup.totp_code(secret, offset) for offset in range(-3, 4)}
    candidate = int(stepup.totp_code(secret))
    while f"{candidate:06d}" in near:
        candidate = (candidate + 137_911) % 1_000_000
    return f"{candidate:06d}"


@dataclass
class Loop:
    """The secrets one loop used, by name, and what the server logged meanwhile."""

    secrets: dict[str, str] = field(default_factory=dict)
    digits: dict[str, str] = field(default_factory=dict)  # matched as whole numbers
    lines: list[str] = field(default_factory=list)
    events: set[str] = field(default_factory=set)


def run_loop(stepup: Stepup) -> Loop:
    loop = Loop()
    verifier, challenge = pkce()
    subject_token = stepup.upstream.token()
    head, body, signature = subject_token.split(".")
    forged_signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    bad_subject_token = f"{head}.{body}.{forged_signature}"
    with all_logs() as capture, stepup.browser() as browser:
        # Failures before the loop: a wrong client secret, a forged subject token.
        refused = stepup.par(subject_token, auth=(CLIENT_ID, WRONG_CLIENT_SECRET), **NO_REUSE)
        assert refused.status_code == 401, refused.text
        forged = stepup.par(bad_subject_token, **NO_REUSE)
        assert forged.status_code == 400, forged.text

        pushed = stepup.par(subject_token, code_challenge=challenge, **NO_REUSE)
        assert pushed.status_code == 201, pushed.text
        request_uri = pushed.json()["request_uri"]
        started = browser.get(
            "/authorize", params={"client_id": CLIENT_ID, "request_uri": request_uri}
        )
        assert started.status_code == 303, started.text
        interaction_path = started.headers["location"]
        page = browser.get(interaction_path)
        assert page.status_code == 200, page.text
        secret = manual_key(page.text)
        csrf = hidden(page.text, "csrf")
        stepup.clock.advance(30)
        bad_code = wrong_code(stepup, secret)
        wrong = browser.post(
            interaction_path, data={"csrf": csrf, "action": "verify", "code": bad_code}
        )
        assert wrong.status_code == 400, wrong.text
        totp_code = stepup.totp_code(secret)
        proved = browser.post(
            interaction_path, data={"csrf": csrf, "action": "verify", "code": totp_code}
        )
        assert proved.status_code == 303, proved.text
        code = parse_qs(urlsplit(proved.headers["location"]).query)["code"][0]
        cookie = browser.cookies.get(browser_cookie_name(stepup.config.issuer))
        assert cookie

        unauthenticated = stepup.token(code, verifier, auth=(CLIENT_ID, WRONG_CLIENT_SECRET))
        assert unauthenticated.status_code == 401, unauthenticated.text
        issued = stepup.token(code, verifier, subject_token=subject_token)
        assert issued.status_code == 200, issued.text
        elevated = issued.json()["access_token"]
        replayed = stepup.token(code, verifier, subject_token=subject_token)
        assert replayed.status_code == 400, replayed.text

        # The replay revoked the first redemption's token (RFC 6749 §4.1.2): a second one.
        second_verifier, second_challenge = pkce()
        again = stepup.par(subject_token, code_challenge=second_challenge, **NO_REUSE)
        second_page = stepup.open_authorization(browser, again.json()["request_uri"])
        stepup.clock.advance(30)
        second_code = stepup.totp_code(secret)
        second = browser.post(
            second_page.url.path,
            data={
                "csrf": hidden(second_page.text, "csrf"),
                "action": "verify",
                "code": second_code,
            },
        )
        assert second.status_code == 303, second.text
        code_2 = parse_qs(urlsplit(second.headers["location"]).query)["code"][0]
        issued_2 = stepup.token(code_2, second_verifier, subject_token=subject_token)
        assert issued_2.status_code == 200, issued_2.text
        elevated_2 = issued_2.json()["access_token"]

        assert stepup.introspect(elevated_2, auth=(RS_ID, WRONG_RS_SECRET)).status_code == 401
        assert stepup.introspect(elevated_2).json()["active"] is True
        assert stepup.introspect(bad_subject_token).json() == {"active": False}
        assert stepup.revoke(elevated_2).status_code == 200
        assert stepup.introspect(elevated_2).json() == {"active": False}
        enrol_link = stepup.http.post(
            "/enroll",
            data={"subject_token": subject_token, "subject_token_type": ACCESS_TOKEN_TYPE},
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
        assert enrol_link.status_code == 201, enrol_link.text
        enrollment_id = enrol_link.json()["enrollment_uri"].rsplit("/", 1)[1]
    loop.lines = server_lines(capture)
    loop.events = audit_events(capture)
    loop.secrets = {
        "client secret": CLIENT_SECRET,
        "wrong client secret": WRONG_CLIENT_SECRET,
        "resource-server secret": RS_SECRET,
        "wrong resource-server secret": WRONG_RS_SECRET,
        "subject token B": subject_token,
        "B's signature": signature,
        "forged B's signature": forged_signature,
        "elevated token E": elevated,
        "E's signature": elevated.rsplit(".", 1)[1],
        "second E's signature": elevated_2.rsplit(".", 1)[1],
        "authorization code": code,
        "second authorization code": code_2,
        "request_uri's random part": request_uri.rsplit(":", 1)[1],
        "interaction id": interaction_path.rsplit("/", 1)[1],
        "enrolment link id": enrollment_id,
        "CSRF token": csrf,
        "browser cookie": cookie,
        "TOTP secret": secret,
        "TOTP secret, lower case": secret.lower(),
        "PKCE verifier": verifier,
    }
    loop.digits = {"TOTP code": totp_code, "wrong TOTP code": bad_code, "second code": second_code}
    return loop


@pytest.fixture(scope="module")
def loop(live_stepup: Stepup, redis_server: EmbeddedRedis) -> Loop:
    """One loop for the whole module (each test below searches the same records)."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    live_stepup.clock.set(frozen_now().now())
    return run_loop(live_stepup)


def test_the_capture_sees_the_servers_records(loop: Loop) -> None:
    # The records searched below include the audit trail and the error detail of refusals.
    assert any(line.startswith("stepup.audit ") for line in loop.lines)
    assert any(line.startswith("stepup.errors ") for line in loop.lines)


@pytest.mark.parametrize(
    "name",
    [
        "client secret",
        "wrong client secret",
        "resource-server secret",
        "wrong resource-server secret",
        "subject token B",
        "B's signature",
        "forged B's signature",
        "elevated token E",
        "E's signature",
        "second E's signature",
        "authorization code",
        "second authorization code",
        "request_uri's random part",
        "interaction id",
        "enrolment link id",
        "CSRF token",
        "browser cookie",
        "TOTP secret",
        "TOTP secret, lower case",
        "PKCE verifier",
    ],
)
def test_no_log_record_contains_it(loop: Loop, name: str) -> None:
    value = loop.secrets[name]
    leaks = [line for line in loop.lines if value in line]
    assert not leaks, f"{name} in {len(leaks)} record(s): {leaks[:3]}"


@pytest.mark.parametrize("name", ["TOTP code", "wrong TOTP code", "second code"])
def test_no_log_record_contains_the_typed_code(loop: Loop, name: str) -> None:
    pattern = re.compile(rf"(?<!\d){loop.digits[name]}(?!\d)")
    leaks = [line for line in loop.lines if pattern.search(line)]
    assert not leaks, f"{name} in {len(leaks)} record(s): {leaks[:3]}"


def test_every_decision_of_the_loop_is_an_audit_event(loop: Loop) -> None:
    assert loop.events >= AUDIT_EVENTS, AUDIT_EVENTS - loop.events


def test_audit_events_are_one_json_object_each(stepup: Stepup) -> None:
    with all_logs() as capture:
        assert stepup.par(**NO_REUSE).status_code == 201
    audit = [record for record, _ in capture.lines if record.name == "stepup.audit"]
    assert audit
    for record in audit:
        entry = json.loads(record.getMessage())
        assert isinstance(entry, dict)
        assert {"time", "event", "outcome"} <= set(entry)


def test_the_capture_reaches_uvicorns_error_logger() -> None:
    # uvicorn.error does not propagate to the root: the capture must sit on its chain too.
    with all_logs() as capture:
        logging.getLogger("uvicorn.error").error("probe %s", "7f3a")
    assert any(
        line.startswith("uvicorn.error ERROR") and "probe 7f3a" in line for _, line in capture.lines
    )
