"""Unknown, locked and disabled subjects get the same answers (no enumeration), and an
operator can disable a subject with `stepup subject disable`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import redis

from stepup.storage import keys
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER_UPSTREAM,
    Stepup,
    hidden,
    policy_document,
    toml_document,
)


def _disable(redis_url: str, sub: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.set(keys.disabled(keys.subject_id(ISSUER_UPSTREAM, sub)), "1")


def _lock_out(stepup: Stepup, sub: str, secret: str) -> None:
    """Wrong codes until the subject is locked out (throttle.max_failures)."""
    with stepup.browser() as browser:
        pushed = stepup.par(stepup.upstream.token(sub), scope="audit:read")
        page = stepup.open_authorization(browser, pushed.json()["request_uri"])
        wrong = f"{(int(stepup.totp_code(secret)) + 1) % 1_000_000:06d}"
        for _ in range(stepup.config.throttle.max_failures):
            answer = browser.post(
                page.url.path,
                data={"csrf": hidden(page.text, "csrf"), "action": "verify", "code": wrong},
            )
        assert answer.status_code == 429


def _shape(response_json: dict[str, object]) -> dict[str, object]:
    return {
        k: (v if k != "request_uri" else str(v).rsplit(":", 1)[0]) for k, v in response_json.items()
    }


def test_intake_answers_unknown_locked_and_disabled_subjects_alike(
    stepup: Stepup, redis_url: str
) -> None:
    with stepup.browser() as browser:
        _, _, locked_secret = stepup.step_up(browser, sub="locked")
    _lock_out(stepup, "locked", locked_secret)
    _disable(redis_url, "disabled")
    answers = {
        sub: stepup.par(stepup.upstream.token(sub)) for sub in ("unknown", "locked", "disabled")
    }
    assert {sub: r.status_code for sub, r in answers.items()} == dict.fromkeys(answers, 201)
    shapes = {sub: _shape(r.json()) for sub, r in answers.items()}
    assert shapes["unknown"] == shapes["locked"] == shapes["disabled"]


def test_enrolment_links_are_made_alike_for_unknown_locked_and_disabled_subjects(
    stepup: Stepup, redis_url: str
) -> None:
    with stepup.browser() as browser:
        _, _, locked_secret = stepup.step_up(browser, sub="locked")
    _lock_out(stepup, "locked", locked_secret)
    _disable(redis_url, "disabled")
    answers = [
        stepup.http.post(
            "/enroll",
            data={
                "subject_token": stepup.upstream.token(sub),
                "subject_token_type": ACCESS_TOKEN_TYPE,
            },
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
        for sub in ("unknown", "locked", "disabled")
    ]
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert len({tuple(sorted(a.json())) for a in answers}) == 1
    assert len({a.json()["expires_in"] for a in answers}) == 1


def test_a_disabled_subjects_right_code_fails_like_a_wrong_code(
    stepup: Stepup, redis_url: str
) -> None:
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub="bob")
    stepup.clock.advance(400)  # past max_age: no reuse
    _disable(redis_url, "bob")
    with stepup.browser() as browser:
        pushed = stepup.par(stepup.upstream.token("bob"))
        page = stepup.open_authorization(browser, pushed.json()["request_uri"])
        assert page.status_code == 200  # the same verification page as anyone's
        right = browser.post(
            page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "verify",
                "code": stepup.totp_code(secret),
            },
        )
    with stepup.browser() as browser:
        _, _, other_secret = stepup.step_up(browser, sub="carol")
    stepup.clock.advance(400)
    with stepup.browser() as browser:
        pushed = stepup.par(stepup.upstream.token("carol"))
        page = stepup.open_authorization(browser, pushed.json()["request_uri"])
        wrong = browser.post(
            page.url.path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "verify",
                "code": "000000" if stepup.totp_code(other_secret) != "000000" else "111111",
            },
        )
    assert right.status_code == wrong.status_code == 400

    def alert(html: str) -> str:
        return html.split('role="alert"', 1)[1].split("</p>", 1)[0]

    assert alert(right.text) == alert(wrong.text)


def test_a_disabled_subject_without_factors_is_answered_like_an_unknown_one(
    stepup: Stepup, redis_url: str
) -> None:
    _disable(redis_url, "dora")
    redirects = {}
    for sub, age in (("dora", 0), ("unknown", 3600)):  # unknown: too old a sign-in to enrol
        with stepup.browser() as browser:
            pushed = stepup.par(stepup.upstream.token(sub, age=age), state="s")
            started = browser.get(
                "/authorize",
                params={"client_id": CLIENT_ID, "request_uri": pushed.json()["request_uri"]},
            )
        assert started.status_code == 303
        redirects[sub] = parse_qs(urlsplit(started.headers["location"]).query)
    assert redirects["dora"] == redirects["unknown"]
    assert redirects["dora"]["error"] == ["unmet_authentication_requirements"]


def test_a_code_issued_before_disabling_is_refused_like_an_unknown_code(
    stepup: Stepup, redis_url: str
) -> None:
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, sub="erin")
    _disable(redis_url, "erin")
    refused = stepup.token(query["code"][0], verifier, subject_token=stepup.upstream.token("erin"))
    unknown = stepup.token(
        "not-a-code-" + "x" * 40, verifier, subject_token=stepup.upstream.token("erin")
    )
    assert refused.status_code == unknown.status_code == 400
    assert refused.json() == unknown.json()


def test_operator_disables_and_enables_a_subject_with_the_cli(
    stepup: Stepup, redis_url: str, tmp_path: Path
) -> None:
    document = policy_document(stepup.upstream, tmp_path / "data")
    document["server"]["redis_url"] = redis_url
    policy = tmp_path / "policy.toml"
    policy.write_text(toml_document(document))
    tomllib.loads(policy.read_text())  # the file the CLI reads is valid TOML

    def cli(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "stepup.cli",
                "subject",
                action,
                "frank",
                "--issuer",
                ISSUER_UPSTREAM,
                "--config",
                str(policy),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    disabled = cli("disable")
    assert disabled.returncode == 0, disabled.stderr
    assert "disabled" in disabled.stdout
    with redis.Redis.from_url(redis_url) as client:
        assert client.exists(keys.disabled(keys.subject_id(ISSUER_UPSTREAM, "frank")))
    enabled = cli("enable")
    assert enabled.returncode == 0 and "enabled" in enabled.stdout
    with redis.Redis.from_url(redis_url) as client:
        assert not client.exists(keys.disabled(keys.subject_id(ISSUER_UPSTREAM, "frank")))
