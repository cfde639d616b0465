"""Per-request observability: the correlation id (X-Request-ID, echoed; generated when absent
or unusable) for the audit trail and logs, and request counts and latency by route template
(never the raw path, which carries interaction and enrolment ids). A pure ASGI middleware."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stepup.config import secret_matches
from stepup.logs import correlation_id
from stepup.metrics import CONTENT_TYPE, Count, Metrics, Timing
from stepup.protocol.admin import bearer
from stepup.services import Services
from stepup.storage.redis import STORAGE_ERRORS
from stepup.web.forms import first_header

# What a request id from outside may look like: it lands in logs, so nothing to inject.
_USABLE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class _RequestIds:
    """Fresh request ids: 32 hex digits, a random prefix of this process and a counter.

    A request id must be unique, not secret: any caller may choose its own (X-Request-ID), so
    a guessable one gives nothing away, and nothing keys a decision on it. The prefix (64
    random bits) tells processes and restarts apart; a forked child draws its own, or it would
    repeat its parent's ids. One os.urandom per request was the largest part of this function.
    """

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


# One per process, as the uniqueness it gives is per process.
fresh_request_id = _RequestIds()
os.register_at_fork(after_in_child=fresh_request_id.renew)


def request_id(scope: Scope) -> str:
    """The caller's (first) X-Request-ID when usable, else a fresh one."""
    given = first_header(scope, b"x-request-id")
    if given is not None and _USABLE_ID.fullmatch(given):
        return given
    return fresh_request_id()


class RequestMetrics:
    """Request count and latency by (route template, method, status)."""

    def __init__(self, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.metrics = metrics
        self.templates: dict[object, str] = {}
        for route in routes:
            if isinstance(route, Route):
                self.templates[route.endpoint] = route.path
            elif isinstance(route, Mount):
                self.templates[route.app] = route.path + "/{path:path}"
        # (endpoint, method, status) -> (request count, latency series): one dict lookup per
        # request instead of a template lookup, str(status) and two labels() calls.
        self._observers: dict[tuple[object, str, int], tuple[Count, Timing]] = {}

    def record(self, endpoint: object, method: str, status: int, elapsed: float) -> None:
        key = (endpoint, method, status)
        observers = self._observers.get(key)
        if observers is None:
            observers = self._observers[key] = self._series(*key)
        observers[0].inc()
        observers[1].observe(elapsed)

    def _series(self, endpoint: object, method: str, status: int) -> tuple[Count, Timing]:
        route = self.templates.get(endpoint, "unmatched")
        return (
            self.metrics.requests.labels(route, method, str(status)),
            self.metrics.latency.labels(route, method),
        )


class Observe:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.requests = RequestMetrics(metrics, routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        id_ = request_id(scope)
        token = correlation_id.set(id_)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", id_.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            correlation_id.reset(token)
            # The router wrote the matched endpoint into this same scope dict.
            self.requests.record(
                scope.get("endpoint"), scope["method"], status, time.perf_counter() - started
            )


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics under its own bearer token (`[metrics] token_hash`); off without one."""
    services: Services = request.app.state.services
    metrics: Metrics = request.app.state.metrics
    stored = services.config.operator.metrics_token_hash
    if stored is None:
        return Response("not found\n", 404, media_type="text/plain")
    token = bearer(request.headers.get("authorization"))
    if token is None or not secret_matches(token, stored):
        return Response(
            "unauthorized\n",
            401,
            media_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="stepup-metrics"'},
        )
    # Without Redis the other metrics still answer; the gauge keeps its last value.
    with contextlib.suppress(*STORAGE_ERRORS):
        metrics.active.set(await services.elevations.active(services.now()))
    audit = services.audit
    metrics.audit_pending.set(audit.pending)
    metrics.audit_dropped.set(audit.dropped)
    return Response(
        metrics.render(), headers={"Cache-Control": "no-store"}, media_type=CONTENT_TYPE
    )
