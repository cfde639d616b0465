"""The JSON endpoints: each reads the request, calls the protocol step, writes the answer."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from stepup.audit import refusal_event
from stepup.config import Client, ResourceServer
from stepup.errors import OAuthError, TemporarilyUnavailable
from stepup.protocol import (
    dpop_binding,
    enrollment,
    introspection,
    metadata,
    par,
    revocation,
    token_exchange,
)
from stepup.protocol.client_auth import authenticate
from stepup.services import Services
from stepup.storage.redis import STORAGE_ERRORS
from stepup.web.forms import first_header, read_form

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# As Starlette writes a headers dict: lower-case names, latin-1.
_NO_STORE_RAW = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in NO_STORE.items()]
_log_detail = logging.getLogger("stepup.errors")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# RFC 6749 §5.2: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
_DESCRIPTION_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def _description(text: str) -> str:
    return "".join(c if c in _DESCRIPTION_CHARS else "?" for c in text)


def oauth_error(exc: OAuthError) -> JSONResponse:
    body = {"error": exc.error, "error_description": _description(exc.description)}
    return JSONResponse(body, exc.status, headers={**NO_STORE, **exc.headers()})


Handler = Callable[[Request, Services], Awaitable[Response]]


class Endpoint:
    """A JSON endpoint as a plain ASGI app. Errors become RFC 6749 §5.2 JSON; an unreachable
    Redis fails closed with 503.

    Being an ASGI app rather than a function, Starlette's Route calls it directly instead of
    wrapping it in request_response, whose extra send wrapper and exception-handler layer cost
    a measurable share of a short request; HTTPException still reaches the app's handlers
    through the ExceptionMiddleware above the router.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.__name__ = handler.__name__
        self.__doc__ = handler.__doc__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        response = await self.run(request)
        await response(scope, receive, send)

    async def run(self, request: Request) -> Response:
        services: Services = request.app.state.services
        try:
            return await self.handler(request, services)
        except OAuthError as exc:
            _log_detail.info("%s %s: %s", request.url.path, exc.error, exc.detail)
            if exc.status < 500:
                services.audit.record(refusal_event(request.url.path), "refused", reason=exc.error)
            return oauth_error(exc)
        except STORAGE_ERRORS as exc:
            _log_detail.warning("%s: storage unavailable: %s", request.url.path, exc)
            return oauth_error(TemporarilyUnavailable("storage is unavailable, try again shortly"))


def endpoint(handler: Handler) -> Endpoint:
    return Endpoint(handler)


def _caller(
    request: Request, services: Services, form: dict[str, str], admit: str
) -> Client | ResourceServer:
    """Who authenticated, as `admit` names (client_auth.authenticate), with this app's memo."""
    authorization = first_header(request.scope, b"authorization")
    remembered = services.remembered_headers
    return authenticate(services.config, authorization, form, admit=admit, remembered=remembered)


def _client(request: Request, services: Services, form: dict[str, str]) -> Client:
    client = _caller(request, services, form, "client")
    assert isinstance(client, Client)
    return client


class _MetadataBody:
    """The RFC 8414 document, serialized once per (config, signing keys): it changes only
    when they do (a key rotation swaps `services.signing` for a new object). Identity, not
    equality, decides, and the pair is held, so a new object always means a rebuild."""

    def __init__(self) -> None:
        self._for: tuple[object, object] | None = None
        self._body = b""

    def body(self, services: Services) -> bytes:
        current = (services.config, services.signing)
        if self._for is None or self._for[0] is not current[0] or self._for[1] is not current[1]:
            self._body = orjson.dumps(metadata.metadata(services.config, services.signing))
            self._for = current
        return self._body


_metadata_body = _MetadataBody()


@endpoint
async def metadata_document(request: Request, services: Services) -> Response:
    return Response(
        _metadata_body.body(services),
        headers={"Cache-Control": "public, max-age=300"},
        media_type="application/json",
    )


@endpoint
async def jwks(request: Request, services: Services) -> Response:
    return JSONResponse(
        services.signing.public_jwks(), headers={"Cache-Control": "public, max-age=300"}
    )


@endpoint
async def pushed_authorization(request: Request, services: Services) -> Response:
    form = await read_form(request)
    client = _client(request, services, form)
    pushed = await par.push(services, client, form, request.headers.getlist("dpop"))
    headers = {**NO_STORE, **dpop_binding.nonce_headers(services)}
    return JSONResponse(pushed, 201, headers=headers)


@endpoint
async def token(request: Request, services: Services) -> Response:
    form = await read_form(request)
    client = _client(request, services, form)
    issued = await token_exchange.exchange(services, client, form, request.headers.getlist("dpop"))
    return JSONResponse(issued, headers={**NO_STORE, **dpop_binding.nonce_headers(services)})


@endpoint
async def introspect(request: Request, services: Services) -> Response:
    form = await read_form(request)
    server = _caller(request, services, form, "resource_server")
    assert isinstance(server, ResourceServer)
    answer = await introspection.introspect(services, server, form)
    response = Response(answer, media_type="application/json")
    response.raw_headers += _NO_STORE_RAW
    return response


@endpoint
async def revoke(request: Request, services: Services) -> Response:
    form = await read_form(request)
    caller = _caller(request, services, form, "any")
    assert isinstance(caller, Client | ResourceServer)
    await revocation.revoke(services, caller, form)
    return Response(b"", 200, headers=NO_STORE)


@endpoint
async def enroll(request: Request, services: Services) -> Response:
    form = await read_form(request)
    client = _client(request, services, form)
    created = await enrollment.create(services, client, form, request.headers.getlist("dpop"))
    headers = {**NO_STORE, **dpop_binding.nonce_headers(services)}
    return JSONResponse(created, 201, headers=headers)


@endpoint
async def healthz(request: Request, services: Services) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        await services.store.ping()
    except STORAGE_ERRORS:
        return JSONResponse(
            {"status": "unavailable", "redis": "unreachable"}, 503, headers={"Retry-After": "5"}
        )
    return JSONResponse({"status": "ready", "redis": "ok"})
