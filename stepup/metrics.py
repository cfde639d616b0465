"""Prometheus metrics of one stepup process, in a registry of its own (several apps may live
in one process, as in the tests; nothing is registered at import time).

Counts follow the audit trail: every audited decision is observed here too, so the metrics
and the audit log cannot disagree about what happened.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stepup.audit import AuditEvent

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Milliseconds to seconds: the JSON endpoints answer in a few ms; pages and scrypt take longer.
_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "stepup_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "stepup_http_request_duration_seconds",
            "Time to answer, by route template",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.stepups = Counter(
            "stepup_stepups",
            "Step-ups ended: success (a code issued), denied (cancelled), unmet (no factor meets)",
            ["outcome", "factor", "acr"],
            registry=r,
        )
        self.factor_checks = Counter(
            "stepup_factor_verifications",
            "Factor proofs: success, failure, throttled",
            ["outcome", "factor"],
            registry=r,
        )
        self.throttled = Counter(
            "stepup_throttled", "Factor attempts refused while the subject is throttled", registry=r
        )
        self.tokens = Counter(
            "stepup_tokens",
            "Elevated-token decisions: issued, introspected, revoked, replay",
            ["event", "outcome"],
            registry=r,
        )
        self.events = Counter(
            "stepup_audit_events",
            "Audit events by event and outcome",
            ["event", "outcome"],
            registry=r,
        )
        self.active = Gauge(
            "stepup_active_elevations",
            "Elevated tokens issued and not expired, less those revoked (all instances, from Redis)",
            registry=r,
        )
        self.audit_pending = Gauge(
            "stepup_audit_pending", "Audit events not yet in the Redis Stream", registry=r
        )
        self.audit_dropped = Gauge(
            "stepup_audit_dropped",
            "Audit events dropped from the buffer during a Redis outage (still in the logs)",
            registry=r,
        )
        # The factor a request proved, until that request's approval is counted.
        self._proved: OrderedDict[str, str] = OrderedDict()
        # (metric, *label values) -> its child. prometheus_client's labels() validates and
        # joins the values and takes a lock on every call; a hot path pays that once per
        # label set instead. The children are the registry's own (no new label sets).
        self._children: dict[tuple[object, ...], Any] = {}
        # (event, outcome) -> the children it increments, for every event whose counts need
        # nothing but those two (every event _READ_FURTHER has no method for): one lookup
        # per audit event.
        self._counters: dict[tuple[str, str], tuple[Any, ...]] = {}

    def child(self, metric: Counter | Histogram, *values: str) -> Any:
        key = (metric, *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def observe(self, entry: AuditEvent) -> None:
        """An audit event (see stepup/audit.py), as recorded."""
        event, outcome = str(entry["event"]), str(entry["outcome"])
        counters = self._counters.get((event, outcome))
        if counters is None:
            read_further = _READ_FURTHER.get(event)
            if read_further is not None:
                self.child(self.events, event, outcome).inc()
                read_further(self, entry, outcome)
                return
            counters = self._counters[(event, outcome)] = self._plain(event, outcome)
        for counter in counters:
            counter.inc()

    def _plain(self, event: str, outcome: str) -> tuple[Any, ...]:
        """The children an event counted by its name and outcome alone increments."""
        counted = self.child(self.events, event, outcome)
        if event.startswith("token."):
            return counted, self.child(self.tokens, event.removeprefix("token."), outcome)
        return (counted,)

    # What the events of _READ_FURTHER count besides the events series, one method each.

    def _factor_verified(self, entry: AuditEvent, outcome: str) -> None:
        kind = str(entry.get("kind", "unknown"))
        self.child(self.factor_checks, outcome, kind).inc()
        if outcome == "throttled":
            self.throttled.inc()
        elif outcome == "success":
            self._remember(entry, kind)

    def _factor_enrolled(self, entry: AuditEvent, outcome: str) -> None:
        if outcome == "success":
            self._remember(entry, str(entry.get("kind", "unknown")))

    def _stepup_approved(self, entry: AuditEvent, outcome: str) -> None:
        request = str(entry.get("request_id", ""))
        factor = self._proved.pop(request, "unknown") if request else "unknown"
        self.stepups.labels("success", factor, str(entry.get("acr", ""))).inc()

    def _stepup_reused(self, entry: AuditEvent, outcome: str) -> None:
        self.stepups.labels("reused", "none", str(entry.get("acr", ""))).inc()

    def _stepup_cancelled(self, entry: AuditEvent, outcome: str) -> None:
        self.stepups.labels("denied", "none", str(entry.get("acr", ""))).inc()

    def _authorize_started(self, entry: AuditEvent, outcome: str) -> None:
        if outcome == "unmet":
            self.stepups.labels("unmet", "none", str(entry.get("acr", ""))).inc()

    def _remember(self, entry: AuditEvent, kind: str) -> None:
        """The factor `entry`'s request proved, for that request's approval."""
        request = str(entry.get("request_id", ""))
        if not request:
            return
        self._proved[request] = kind
        while len(self._proved) > 1000:
            self._proved.popitem(last=False)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# Events whose counts read more than their name and outcome (the factor's kind, the step-up's
# level, the factor an earlier event of the same request proved), each with the one method
# that reads them. The only way to an entry's fields: an event not named here is counted by
# its name and outcome, with children looked up once (Metrics._counters).
_READ_FURTHER: dict[str, Callable[[Metrics, AuditEvent, str], None]] = {
    "factor.verify": Metrics._factor_verified,
    "enrolment.added": Metrics._factor_enrolled,
    "stepup.approved": Metrics._stepup_approved,
    "stepup.reused": Metrics._stepup_reused,
    "stepup.cancelled": Metrics._stepup_cancelled,
    "authorize.start": Metrics._authorize_started,
}
