"""The ASGI side: a middleware that installs the guard, answers refusals and serves the RFC 9728
metadata document, plus a per-route requirement for Starlette endpoints (`requires`) and for
FastAPI dependencies (`needs`). The checking itself is in `guard` and knows no framework."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stepup.resource.details import ExpectedDetail
from stepup.resource.guard import Guard
from stepup.resource.refusals import InvalidRequest, Refusal
from stepup.resource.requirement import Requirement
from stepup.resource.tokens import AccessToken

log = logging.getLogger("stepup.resource")

GUARD_KEY = "stepup.guard"
TOKEN_KEY = "stepup.access_token"


class StepUpMiddleware:
    """`Middleware(StepUpMiddleware, guard=Guard(ProtectedResource(...)))`."""

    def __init__(self, app: ASGIApp, *, guard: Guard) -> None:
        self.app = app
        self.guard = guard
        self._metadata = json.dumps(guard.resource.metadata()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing_on_shutdown(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == self.guard.resource.metadata_path and scope["method"] in (
            "GET",
            "HEAD",
        ):
            await Response(
                self._metadata,
                media_type="application/json",
                headers={"Cache-Control": "public, max-age=300"},
            )(scope, receive, send)
            return
        scope[GUARD_KEY] = self.guard
        started = False

        async def watching(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching)
        except Refusal as refusal:
            # A FastAPI dependency raised it; nothing was sent yet, since the endpoint never ran.
            if started:
                raise
            await _respond(self.guard, refusal, scope, receive, send)

    def _closing_on_shutdown(self, send: Send) -> Send:
        async def closing(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.guard.aclose()
            await send(message)

        return closing


async def _respond(
    guard: Guard, refusal: Refusal, scope: Scope, receive: Receive, send: Send
) -> None:
    answer = guard.answer(refusal)
    log.info("refused %s %s: %s", scope.get("method"), scope.get("path"), refusal.detail)
    await Response(answer.body, answer.status, headers=answer.headers)(scope, receive, send)


def _guard_of(request: Request) -> Guard:
    guard = request.scope.get(GUARD_KEY)
    if not isinstance(guard, Guard):
        raise RuntimeError("add StepUpMiddleware to the app before protecting routes")
    return guard


async def authorize(
    request: Request, requirement: Requirement, *, transaction: ExpectedDetail | None = None
) -> AccessToken:
    """The checked token for `request`, or raises `Refusal` (the middleware answers it).

    `transaction`: the RFC 9396 detail this request is (read from the request before this
    call); a token approved for another one is refused before a single-use token is spent."""
    headers = request.headers.getlist("authorization")
    guard = _guard_of(request)
    if len(headers) > 1:
        # RFC 6750 §3.1: more than one credential is a malformed request.
        raise InvalidRequest("Send one Authorization header", detail="several headers")
    token = await guard.authorize(
        headers[0] if headers else None,
        requirement,
        dpop=request.headers.getlist("dpop"),
        method=request.method,
        uri=guard.resource.request_uri(_target_path(request)),
        transaction=transaction,
    )
    request.scope[TOKEN_KEY] = token
    return token


def _target_path(request: Request) -> str:
    """The path as the client sent it. RFC 9449 §4.3 compares `htu` with the request's
    target URI, percent-encoding included; `scope["path"]` is decoded ("caf%C3%A9" is
    "café" there), so a client's proof for an encoded path would never match it. ASGI's
    `raw_path` is the undecoded path (with any root_path, as uvicorn sends it)."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes) and raw.startswith(b"/"):
        return raw.partition(b"?")[0].decode("latin-1")
    return request.url.path


def access_token(request: Request) -> AccessToken:
    """Inside a `requires`-protected endpoint: the token that passed."""
    token = request.scope.get(TOKEN_KEY)
    if not isinstance(token, AccessToken):
        raise RuntimeError("the endpoint is not protected by `requires`")
    return token


Endpoint = Callable[[Request], Awaitable[Response]]


def requires(
    requirement: Requirement | None = None, /, **fields: Any
) -> Callable[[Endpoint], Endpoint]:
    """Decorates a Starlette endpoint: `@requires(scope="payments:write", acr=ACR_MFA)`."""
    needed = requirement if requirement is not None else Requirement(**fields)

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def protected(request: Request) -> Response:
            try:
                await authorize(request, needed)
            except Refusal as refusal:
                answer = _guard_of(request).answer(refusal)
                log.info("refused %s %s: %s", request.method, request.url.path, refusal.detail)
                return Response(answer.body, answer.status, headers=answer.headers)
            return await endpoint(request)

        return protected

    return decorate


def needs(
    requirement: Requirement | None = None, /, **fields: Any
) -> Callable[[Request], Awaitable[AccessToken]]:
    """A FastAPI dependency: `token: AccessToken = Depends(needs(scope="payments:write"))`."""
    needed = requirement if requirement is not None else Requirement(**fields)

    async def dependency(request: Request) -> AccessToken:
        return await authorize(request, needed)

    return dependency
