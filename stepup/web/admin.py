"""The admin API's HTTP side (protocol/admin.py holds the logic): bearer-token auth, query or
form parameters, RFC 6749 §5.2-style JSON errors through api.endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from stepup.protocol import admin
from stepup.services import Services
from stepup.web.api import NO_STORE, Endpoint, JSONResponse, endpoint
from stepup.web.forms import read_form

Action = Callable[[Services, Mapping[str, str]], Awaitable[dict[str, Any]]]


def _reading(action: Action, *, body: bool) -> Endpoint:
    @endpoint
    async def handle(request: Request, services: Services) -> Response:
        admin.authenticate(services, request.headers.get("authorization"))
        params = await read_form(request) if body else dict(request.query_params)
        return JSONResponse(await action(services, params), headers=NO_STORE)

    return handle


factors = _reading(admin.list_factors, body=False)
remove_factor = _reading(admin.remove_factor, body=True)
elevations = _reading(admin.list_elevations, body=False)
revoke_elevations = _reading(admin.revoke_elevations, body=True)
enrollment = _reading(admin.create_enrollment, body=True)
