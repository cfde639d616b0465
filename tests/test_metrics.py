"""Metrics follow the audit events (stepup/metrics.py): every event counts once, the first of
its kind and every later one alike."""

from __future__ import annotations

from stepup.audit import AuditEvent
from stepup.metrics import Metrics


def event(name: str, outcome: str, **fields: str) -> AuditEvent:
    entry: AuditEvent = {"time": 1.0, "event": name, "outcome": outcome}
    entry.update(fields)  # type: ignore[typeddict-item]
    return entry


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_token_events_count_every_time() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.observe(event("token.introspected", "success", request_id="r1"))
    metrics.observe(event("token.introspected", "inactive"))
    metrics.observe(event("token.issued", "success"))
    events = "stepup_audit_events_total"
    assert count(metrics, events, event="token.introspected", outcome="success") == 3
    assert count(metrics, events, event="token.introspected", outcome="inactive") == 1
    assert count(metrics, events, event="token.issued", outcome="success") == 1
    tokens = "stepup_tokens_total"
    assert count(metrics, tokens, event="introspected", outcome="success") == 3
    assert count(metrics, tokens, event="introspected", outcome="inactive") == 1
    assert count(metrics, tokens, event="issued", outcome="success") == 1


def test_a_step_up_counts_the_factor_its_request_proved() -> None:
    metrics = Metrics()
    for _ in range(2):
        metrics.observe(event("factor.verify", "success", kind="totp", request_id="r2"))
        metrics.observe(event("stepup.approved", "success", acr="mfa", request_id="r2"))
    assert count(metrics, "stepup_stepups_total", outcome="success", factor="totp", acr="mfa") == 2
    assert (
        count(metrics, "stepup_factor_verifications_total", outcome="success", factor="totp") == 2
    )
    assert (
        count(metrics, "stepup_audit_events_total", event="factor.verify", outcome="success") == 2
    )


def test_other_events_count_in_the_events_series_only() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.observe(event("challenge.accepted", "success", request_id="r3"))
    metrics.observe(event("enrolment.added", "failure", kind="totp"))
    events = "stepup_audit_events_total"
    assert count(metrics, events, event="challenge.accepted", outcome="success") == 3
    assert count(metrics, events, event="enrolment.added", outcome="failure") == 1
    assert not [
        sample
        for family in metrics.registry.collect()
        if family.name in ("stepup_tokens", "stepup_stepups")
        for sample in family.samples
    ]
