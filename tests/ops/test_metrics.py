"""Prometheus metrics at /metrics under their own bearer token: they move when a step-up runs,
by route template (never a raw path with an id in it)."""

from __future__ import annotations

import httpx

from tests.support.oauth import module_server
from tests.support.ops import sample, scrape
from tests.support.stepup import ADMIN_TOKEN, METRICS_TOKEN, Stepup, step_up_with

live_stepup, stepup = module_server("metrics")

MFA = "urn:stepup:acr:mfa"


def test_a_step_up_moves_the_counters(stepup: Stepup) -> None:
    before = scrape(stepup.url)
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, sub="mia")
    issued = stepup.token(query["code"][0], verifier, subject_token=stepup.upstream.token("mia"))
    token = issued.json()["access_token"]
    assert stepup.introspect(token).json()["active"] is True
    assert step_up_with(stepup, "mia", "A" * 32).status_code == 400  # a wrong secret: a failure
    after = scrape(stepup.url)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("stepup_stepups_total", outcome="success", factor="totp", acr=MFA) == 1
    assert moved("stepup_factor_verifications_total", outcome="success", factor="totp") == 1
    assert moved("stepup_factor_verifications_total", outcome="failure") == 1
    assert moved("stepup_tokens_total", event="issued", outcome="success") == 1
    assert moved("stepup_tokens_total", event="introspected", outcome="active") == 1
    assert moved("stepup_http_requests_total", route="/token", method="POST", status="200") == 1
    assert moved("stepup_http_requests_total", route="/par", method="POST", status="201") == 2
    assert moved("stepup_http_request_duration_seconds_count", route="/token") == 1
    interaction = "/interaction/{interaction_id}"
    assert moved("stepup_http_requests_total", route=interaction, method="POST") == 2
    assert moved("stepup_active_elevations") == 1
    # Route templates only: no interaction id or other raw path in a label.
    paths = {label for key in after for label in key.split('"') if label.startswith("/")}
    assert paths <= {
        "/par",
        "/token",
        "/introspect",
        "/authorize",
        "/metrics",
        interaction,
        "/enroll/{enrollment_id}",
        "/healthz",
        "/readyz",
        "/revoke",
    }, paths


def test_revocation_lowers_the_active_elevations(stepup: Stepup) -> None:
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, sub="noah")
    token = stepup.token(
        query["code"][0], verifier, subject_token=stepup.upstream.token("noah")
    ).json()["access_token"]
    assert sample(scrape(stepup.url), "stepup_active_elevations") == 1
    assert stepup.revoke(token).status_code == 200
    assert sample(scrape(stepup.url), "stepup_active_elevations") == 0
    stepup.clock.advance(10_000)


def test_metrics_need_their_own_token(stepup: Stepup) -> None:
    for headers in (
        {},
        {"Authorization": f"Bearer {ADMIN_TOKEN}"},
        {"Authorization": "Bearer wrong-0123456789"},
    ):
        answer = httpx.get(stepup.url + "/metrics", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "stepup_" not in answer.text
    good = httpx.get(stepup.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert good.status_code == 200
    assert good.headers["content-type"].startswith("text/plain")
