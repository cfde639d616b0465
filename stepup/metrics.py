"""Prometheus metrics of one stepup process, in a registry of its own (several apps may live
in one process, as in the tests; nothing is registered at import time).

Counts follow the audit trail: every audited decision is observed here too, so the metrics
and the audit log cannot disagree about what happened.

The counters and the latency histogram are plain numbers, counted by the event loop's thread
(every caller is on it: the audit observer and the request middleware) and handed to the
registry when it is scraped, in that same thread. prometheus_client's own counters take a lock
for every `inc` and `observe`, a few microseconds of every request for a guard this process
does not need. The gauges are set at scrape time only and stay prometheus_client's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from stepup.audit import AuditEvent

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Milliseconds to seconds: the JSON endpoints answer in a few ms; pages and scrypt take longer.
_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Their `le` labels as the exposition writes them (Go's float format, which is Python's repr
# for these values).
_BOUNDS = (*(repr(bound) for bound in _BUCKETS), "+Inf")


class Count:
    """One series of a counter."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Timing:
    """One series of a histogram: a count per bucket (not cumulative; the last is above every
    bound) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        # A bucket counts what is at most its bound: the first bound >= seconds.
        self.counts[bisect_left(_BUCKETS, seconds)] += 1


# The series a family is made of.
S = TypeVar("S", Count, Timing)


class _Family(Generic[S]):
    """A metric's series by label values, each made on first use (as prometheus_client's
    labels())."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], make: Callable[[], S]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.series: dict[tuple[str, ...], S] = {}
        self._make: Callable[[], S] = make

    def labels(self, *values: str) -> S:
        found = self.series.get(values)
        if found is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes the labels {self.labelnames}, given {values}")
            found = self.series[values] = self._make()
        return found


class Counter(_Family[Count]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames, Count)
        if not self.labelnames:
            self.labels()  # shown at 0 from the start, as prometheus_client does

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, count in list(self.series.items()):
            family.add_metric(values, count.value)
        return family


class Histogram(_Family[Timing]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames, Timing)

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, timing in list(self.series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(_BOUNDS, timing.counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            family.add_metric(values, buckets, timing.sum)
        return family


class _Counted(Collector):
    """Hands the plain counts to the registry at scrape time."""

    def __init__(self, families: Sequence[Counter | Histogram]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.family()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "stepup_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
        )
        self.latency = Histogram(
            "stepup_http_request_duration_seconds",
            "Time to answer, by route template",
            ["route", "method"],
        )
        self.stepups = Counter(
            "stepup_stepups",
            "Step-ups ended: success (a code issued), denied (cancelled), unmet (no factor meets)",
            ["outcome", "factor", "acr"],
        )
        self.factor_checks = Counter(
            "stepup_factor_verifications",
            "Factor proofs: success, failure, throttled",
            ["outcome", "factor"],
        )
        self.throttled = Counter(
            "stepup_throttled", "Factor attempts refused while the subject is throttled"
        )
        self.tokens = Counter(
            "stepup_tokens",
            "Elevated-token decisions: issued, introspected, revoked, replay",
            ["event", "outcome"],
        )
        self.events = Counter(
            "stepup_audit_events",
            "Audit events by event and outcome",
            ["event", "outcome"],
        )
        counted: list[Counter | Histogram] = [
            self.requests,
            self.latency,
            self.stepups,
            self.factor_checks,
            self.throttled,
            self.tokens,
            self.events,
        ]
        r.register(_Counted(counted))
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
        # (event, outcome) -> the series it increments, for every event whose counts need
        # nothing but those two (every event _READ_FURTHER has no method for): one lookup
        # per audit event.
        self._counters: dict[tuple[str, str], tuple[Count, ...]] = {}

    def observe(self, entry: AuditEvent) -> None:
        """An audit event (see stepup/audit.py), as recorded."""
        event, outcome = str(entry["event"]), str(entry["outcome"])
        counters = self._counters.get((event, outcome))
        if counters is None:
            read_further = _READ_FURTHER.get(event)
            if read_further is not None:
                self.events.labels(event, outcome).inc()
                read_further(self, entry, outcome)
                return
            counters = self._counters[(event, outcome)] = self._plain(event, outcome)
        for counter in counters:
            counter.inc()

    def _plain(self, event: str, outcome: str) -> tuple[Count, ...]:
        """The series an event counted by its name and outcome alone increments."""
        counted = self.events.labels(event, outcome)
        if event.startswith("token."):
            return counted, self.tokens.labels(event.removeprefix("token."), outcome)
        return (counted,)

    # What the events of _READ_FURTHER count besides the events series, one method each.

    def _factor_verified(self, entry: AuditEvent, outcome: str) -> None:
        kind = str(entry.get("kind", "unknown"))
        self.factor_checks.labels(outcome, kind).inc()
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
# its name and outcome, with its series looked up once (Metrics._counters).
_READ_FURTHER: dict[str, Callable[[Metrics, AuditEvent, str], None]] = {
    "factor.verify": Metrics._factor_verified,
    "enrolment.added": Metrics._factor_enrolled,
    "stepup.approved": Metrics._stepup_approved,
    "stepup.reused": Metrics._stepup_reused,
    "stepup.cancelled": Metrics._stepup_cancelled,
    "authorize.start": Metrics._authorize_started,
}
