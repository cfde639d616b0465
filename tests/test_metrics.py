"""Metrics follow the audit events (stepup/metrics.py): every event counts once, the first of
its kind and every later one alike, and an event whose counts read its fields reads them every
time."""

from __future__ import annotations

import prometheus_client
import pytest

from stepup import metrics as metrics_module
from stepup.audit import AuditEvent
from stepup.metrics import Metrics


def event(name: str, outcome: str, **fields: str) -> AuditEvent:
    entry: AuditEvent = {"time": 1.0, "event": name, "outcome": outcome}
    entry.update(fields)  # type: ignore[typeddict-item]
    return entry


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return count_in(metrics.registry, name, **labels)


def count_in(registry: prometheus_client.CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


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


# Every event whose counts read more than its name and outcome, observed twice with different
# fields, and the series those fields choose: each must count once, so neither observation was
# counted the plain, cached way. One case per event of metrics._READ_FURTHER, no more, no less.
Sample = tuple[str, dict[str, str]]
READ_FURTHER_CASES: dict[str, tuple[list[AuditEvent], list[Sample]]] = {
    "factor.verify": (
        [
            event("factor.verify", "failure", kind="totp"),
            event("factor.verify", "failure", kind="webauthn"),
        ],
        [
            ("stepup_factor_verifications_total", {"outcome": "failure", "factor": "totp"}),
            ("stepup_factor_verifications_total", {"outcome": "failure", "factor": "webauthn"}),
        ],
    ),
    "enrolment.added": (
        [
            event("enrolment.added", "success", kind="totp", request_id="e1"),
            event("stepup.approved", "success", acr="mfa", request_id="e1"),
            event("enrolment.added", "success", kind="webauthn", request_id="e2"),
            event("stepup.approved", "success", acr="mfa", request_id="e2"),
        ],
        [
            ("stepup_stepups_total", {"outcome": "success", "factor": "totp", "acr": "mfa"}),
            ("stepup_stepups_total", {"outcome": "success", "factor": "webauthn", "acr": "mfa"}),
        ],
    ),
    "stepup.approved": (
        [
            event("stepup.approved", "success", acr="mfa"),
            event("stepup.approved", "success", acr="phr"),
        ],
        [
            ("stepup_stepups_total", {"outcome": "success", "factor": "unknown", "acr": "mfa"}),
            ("stepup_stepups_total", {"outcome": "success", "factor": "unknown", "acr": "phr"}),
        ],
    ),
    "stepup.reused": (
        [
            event("stepup.reused", "success", acr="mfa"),
            event("stepup.reused", "success", acr="phr"),
        ],
        [
            ("stepup_stepups_total", {"outcome": "reused", "factor": "none", "acr": "mfa"}),
            ("stepup_stepups_total", {"outcome": "reused", "factor": "none", "acr": "phr"}),
        ],
    ),
    "stepup.cancelled": (
        [
            event("stepup.cancelled", "denied", acr="mfa"),
            event("stepup.cancelled", "denied", acr="phr"),
        ],
        [
            ("stepup_stepups_total", {"outcome": "denied", "factor": "none", "acr": "mfa"}),
            ("stepup_stepups_total", {"outcome": "denied", "factor": "none", "acr": "phr"}),
        ],
    ),
    "authorize.start": (
        [
            event("authorize.start", "unmet", acr="mfa"),
            event("authorize.start", "unmet", acr="phr"),
        ],
        [
            ("stepup_stepups_total", {"outcome": "unmet", "factor": "none", "acr": "mfa"}),
            ("stepup_stepups_total", {"outcome": "unmet", "factor": "none", "acr": "phr"}),
        ],
    ),
}


def test_every_event_that_reads_its_fields_has_a_case_here() -> None:
    assert set(READ_FURTHER_CASES) == set(metrics_module._READ_FURTHER)


@pytest.mark.parametrize("name", sorted(READ_FURTHER_CASES))
def test_an_event_that_reads_its_fields_reads_them_every_time(name: str) -> None:
    observed, samples = READ_FURTHER_CASES[name]
    metrics = Metrics()
    for entry in observed:
        metrics.observe(entry)
    assert [count(metrics, series, **labels) for series, labels in samples] == [1.0] * len(samples)
    outcome = observed[0]["outcome"]
    assert count(metrics, "stepup_audit_events_total", event=name, outcome=outcome) == 2


def test_the_fields_of_an_event_counted_the_plain_way_are_read_by_no_one() -> None:
    metrics = Metrics()
    for kind in ("totp", "webauthn"):
        metrics.observe(event("token.issued", "success", kind=kind, acr="mfa", request_id="p1"))
    metrics.observe(event("stepup.approved", "success", acr="mfa", request_id="p1"))
    assert count(metrics, "stepup_tokens_total", event="issued", outcome="success") == 2
    # No factor was remembered for p1: the kind on a token event is nobody's to read.
    assert (
        count(metrics, "stepup_stepups_total", outcome="success", factor="unknown", acr="mfa") == 1
    )


# The counters and the histogram are plain numbers handed to the registry at scrape time
# (metrics.Counter, metrics.Histogram). A scrape must read exactly as prometheus_client's own
# classes would for the same observations (less their `_created` series): same names, label
# sets, buckets and values. Bucket bounds are inclusive: a value equal to a bound counts in it.
def _exposition(registry: prometheus_client.CollectorRegistry) -> list[str]:
    text = prometheus_client.generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if "_created" not in line)


def test_a_scrape_reads_as_prometheus_clients_own_metrics_would() -> None:
    bounds = metrics_module._BUCKETS
    timings = [0.0, bounds[0], bounds[0] + 1e-9, 0.007, bounds[5], 1.0, bounds[-1], 7.5, 0.02]
    theirs = prometheus_client.CollectorRegistry()
    requests = prometheus_client.Counter(
        "stepup_http_requests", "HTTP requests", ["route", "status"], registry=theirs
    )
    latency = prometheus_client.Histogram(
        "stepup_latency", "Time", ["route"], buckets=bounds, registry=theirs
    )
    refused = prometheus_client.Counter("stepup_refused", "Refused", registry=theirs)
    ours_registry = prometheus_client.CollectorRegistry()
    ours_requests = metrics_module.Counter(
        "stepup_http_requests", "HTTP requests", ["route", "status"]
    )
    ours_latency = metrics_module.Histogram("stepup_latency", "Time", ["route"])
    ours_refused = metrics_module.Counter("stepup_refused", "Refused")
    ours_registry.register(metrics_module._Counted([ours_requests, ours_latency, ours_refused]))
    assert _exposition(ours_registry) == _exposition(theirs)  # the unlabelled one at 0 already
    for index, seconds in enumerate(timings):
        route = "/token" if index % 3 else "/introspect"
        requests.labels(route, "200").inc()
        ours_requests.labels(route, "200").inc()
        latency.labels(route).observe(seconds)
        ours_latency.labels(route).observe(seconds)
    requests.labels("/par", "400").inc(2)
    ours_requests.labels("/par", "400").inc(2)
    refused.inc()
    ours_refused.inc()
    assert _exposition(ours_registry) == _exposition(theirs)
    # /token saw the bound itself (counted in its bucket) and a hair above it (the next one).
    assert count_in(ours_registry, "stepup_latency_bucket", route="/token", le="0.002") == 1
    assert count_in(ours_registry, "stepup_latency_bucket", route="/token", le="0.005") == 2


def test_a_series_takes_exactly_its_labels() -> None:
    requests = metrics_module.Counter("stepup_x", "x", ["route", "status"])
    with pytest.raises(ValueError, match="route"):
        requests.labels("/token")
    with pytest.raises(ValueError, match="route"):
        metrics_module.Histogram("stepup_y", "y", ["route"]).labels("/token", "200")
    assert requests.labels("/token", "200") is requests.labels("/token", "200")
