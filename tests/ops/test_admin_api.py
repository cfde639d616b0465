"""The admin API: its own bearer token, a subject's factors and elevations, revoke-all,
enrolment links; OAuth-style JSON errors; every call audited."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.support.oauth import assert_oauth_error, module_server
from tests.support.ops import admin, streamed
from tests.support.stepup import (
    CLIENT_SECRET,
    ISSUER_UPSTREAM,
    METRICS_TOKEN,
    RS_SECRET,
    Stepup,
    hidden,
    manual_key,
)

live_stepup, stepup = module_server("admin-api")


def elevate(stepup: Stepup, sub: str, secret: str | None = None) -> tuple[str, str]:
    """An elevated token of `sub` (enrolling TOTP the first time); returns (token, secret)."""
    with stepup.browser() as browser:
        query, verifier, secret = stepup.step_up(browser, secret, sub=sub, scope="audit:read")
    issued = stepup.token(query["code"][0], verifier, subject_token=stepup.upstream.token(sub))
    assert issued.status_code == 200, issued.text
    return issued.json()["access_token"], secret


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-0123456789abcdef",
        f"Bearer {CLIENT_SECRET}",
        f"Bearer {RS_SECRET}",
        f"Bearer {METRICS_TOKEN}",
        "Basic YWRtaW46YWRtaW4=",
    ],
)
def test_anything_but_the_admin_token_is_invalid_token(
    stepup: Stepup, redis_url: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = stepup.http.get(
        "/admin/factors", params={"issuer": ISSUER_UPSTREAM, "sub": "alice"}, headers=headers
    )
    assert_oauth_error(answer, 401, "invalid_token")
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert streamed(redis_url, "admin.refused", reason="invalid_token")


def test_bad_parameters_are_invalid_request(stepup: Stepup) -> None:
    assert_oauth_error(admin(stepup, "GET", "/admin/factors"), 400, "invalid_request")
    unknown = admin(stepup, "GET", "/admin/factors", issuer="https://evil.example", sub="a")
    assert_oauth_error(unknown, 400, "invalid_request")
    json_body = stepup.http.post(
        "/admin/elevations/revoke",
        json={"issuer": ISSUER_UPSTREAM, "sub": "alice"},
        headers={"Authorization": "Bearer admin-token-0123456789abcdef0123"},
    )
    assert_oauth_error(json_body, 400, "invalid_request")


def test_factors_are_listed_without_secrets_and_one_is_removed(
    stepup: Stepup, redis_url: str
) -> None:
    elevate(stepup, "carol")
    listed = admin(stepup, "GET", "/admin/factors", issuer=ISSUER_UPSTREAM, sub="carol")
    assert listed.status_code == 200, listed.text
    assert listed.headers["cache-control"] == "no-store"
    (factor,) = listed.json()["factors"]
    assert factor["kind"] == "totp" and "secret" not in factor and "data" not in factor
    removed = admin(
        stepup,
        "POST",
        "/admin/factors/remove",
        issuer=ISSUER_UPSTREAM,
        sub="carol",
        factor_id=factor["id"],
    )
    assert removed.json() == {"removed": factor["id"]}
    again = admin(stepup, "GET", "/admin/factors", issuer=ISSUER_UPSTREAM, sub="carol")
    assert again.json()["factors"] == []
    missing = admin(
        stepup,
        "POST",
        "/admin/factors/remove",
        issuer=ISSUER_UPSTREAM,
        sub="carol",
        factor_id=factor["id"],
    )
    assert_oauth_error(missing, 404, "not_found")
    assert streamed(redis_url, "admin.factor_removed", outcome="success", factor=factor["id"])
    assert streamed(redis_url, "admin.factors_listed")


def test_revoke_all_ends_every_elevation_of_the_subject_and_no_other(
    stepup: Stepup, redis_url: str
) -> None:
    first, secret = _payments(stepup, "dave")
    second, _ = _payments(stepup, "dave", secret)
    others, _ = _payments(stepup, "erin")
    held = admin(stepup, "GET", "/admin/elevations", issuer=ISSUER_UPSTREAM, sub="dave")
    assert len(held.json()["elevations"]) == 2
    revoked = admin(stepup, "POST", "/admin/elevations/revoke", issuer=ISSUER_UPSTREAM, sub="dave")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"revoked": 2}
    assert stepup.introspect(first).json() == {"active": False}
    assert stepup.introspect(second).json() == {"active": False}
    assert stepup.introspect(others).json()["active"] is True
    held = admin(stepup, "GET", "/admin/elevations", issuer=ISSUER_UPSTREAM, sub="dave")
    assert held.json()["elevations"] == []
    assert streamed(redis_url, "admin.elevations_revoked", revoked=2)


def _payments(stepup: Stepup, sub: str, secret: str | None = None) -> tuple[str, str]:
    """A payments:write elevation (not single use), each with a proof of its own."""
    with stepup.browser() as fresh:
        query, verifier, secret = stepup.step_up(fresh, secret, sub=sub, max_age="0")
    issued = stepup.token(query["code"][0], verifier, subject_token=stepup.upstream.token(sub))
    assert issued.status_code == 200, issued.text
    return issued.json()["access_token"], secret


def test_an_operators_link_enrols_a_first_factor_without_a_fresh_sign_in(
    stepup: Stepup, redis_url: str
) -> None:
    created = admin(stepup, "POST", "/admin/enrollments", issuer=ISSUER_UPSTREAM, sub="frank")
    assert created.status_code == 200, created.text
    link = created.json()["enrollment_uri"]
    assert link.startswith(stepup.config.issuer + "/enroll/")
    assert streamed(redis_url, "admin.enrolment_link", outcome="success")
    # No subject token at all: the operator vouches for the user instead of a fresh sign-in.
    stepup.clock.advance(300)
    with stepup.browser() as browser:
        page = browser.get(urlsplit(link).path)
        assert page.status_code == 200, page.text
        assert 'id="totp-secret"' in page.text
        secret = manual_key(page.text)
        stepup.clock.advance(30)
        confirmed = browser.post(
            urlsplit(link).path,
            data={
                "csrf": hidden(page.text, "csrf"),
                "action": "confirm",
                "code": stepup.totp_code(secret),
            },
        )
        assert confirmed.status_code in (200, 303), confirmed.text
    listed = admin(stepup, "GET", "/admin/factors", issuer=ISSUER_UPSTREAM, sub="frank")
    assert [f["kind"] for f in listed.json()["factors"]] == ["totp"]


def test_a_link_for_an_unknown_client_is_refused(stepup: Stepup) -> None:
    answer = admin(
        stepup, "POST", "/admin/enrollments", issuer=ISSUER_UPSTREAM, sub="g", client_id="nope"
    )
    assert_oauth_error(answer, 400, "invalid_request")
