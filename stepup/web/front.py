"""The front door: a request for a JSON endpoint on a plain path (POST /introspect, /token,
/par, GET /jwks, …) goes straight to its handler, with the middleware stack's work done
inline; every other request takes the whole Starlette stack.

For those endpoints the stack (server-error catcher, Observe, SecurityHeaders, exception
handlers, router) was a fifth of an introspection's CPU: four layers of calls, two `send`
wrappers that copy the header list, a regex scan of every route. What it does for them is
done here in the same order, from the same pieces: the request id (echoed, or made) in the
correlation id and the `X-Request-ID` header, the security headers, the request metrics under
the route's template, `HTTPException` through the app's handler, and for any other error a
plain 500 before the error goes on to the server's log. OAuth errors and the 503 of an
unreachable Redis are the endpoint's own (api.Endpoint.run), as before.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from stepup.logs import correlation_id
from stepup.web.api import Endpoint
from stepup.web.middleware import Headers
from stepup.web.observability import RequestMetrics, request_id


def direct_routes(routes: list[BaseRoute]) -> dict[tuple[str, str], Endpoint]:
    """(method, path) -> endpoint, for each JSON endpoint whose path has no parameters: the
    ones a dictionary lookup finds exactly as the router would (HEAD wherever GET is, as
    Starlette adds it)."""
    found: dict[tuple[str, str], Endpoint] = {}
    for route in routes:
        if (
            isinstance(route, Route)
            and isinstance(route.endpoint, Endpoint)
            and not route.param_convertors
            and route.methods
        ):
            for method in route.methods:
                found.setdefault((method, route.path), route.endpoint)
    return found


class Stepup(Starlette):
    def __init__(
        self,
        *,
        routes: list[BaseRoute],
        request_metrics: RequestMetrics,
        security_headers: Headers,
        **options: Any,
    ) -> None:
        super().__init__(routes=routes, **options)
        self._direct: Mapping[tuple[str, str], Endpoint] = direct_routes(routes)
        self._metrics = request_metrics
        self._headers = security_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only where the router would match on the raw path itself (no root_path to strip)
        # and no body limit middleware stands in the stack.
        if scope["type"] == "http" and not scope.get("root_path") and self.max_body_size is None:
            endpoint = self._direct.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self
                await self._direct_call(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _direct_call(
        self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # What the router writes into the scope; Observe reads "endpoint" for the metrics.
        scope["router"] = self.router
        scope["endpoint"] = endpoint
        scope["path_params"] = {}
        id_ = request_id(scope)
        token = correlation_id.set(id_)
        status = 500
        started = time.perf_counter()
        try:
            request = Request(scope, receive, send)
            try:
                response = await endpoint.run(request)
            except HTTPException as exc:
                handler = self.exception_handlers[HTTPException]
                response = await handler(request, exc)
            except Exception:
                # As Starlette's ServerErrorMiddleware (outermost, so no extra headers).
                await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
                raise
            headers = response.raw_headers
            self._headers.add(headers)
            headers.append((b"x-request-id", id_.encode()))
            status = response.status_code
            await response(scope, receive, send)
        finally:
            correlation_id.reset(token)
            self._metrics.record(endpoint, scope["method"], status, time.perf_counter() - started)
