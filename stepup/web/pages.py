"""The browser pages: server-rendered, no external assets, usable without JavaScript."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from stepup.errors import OAuthError
from stepup.protocol import authorize, enrollment
from stepup.protocol.outcomes import Json, Page, Redirect, error_page
from stepup.services import Services
from stepup.storage.redis import STORAGE_ERRORS
from stepup.web.api import JSONResponse
from stepup.web.forms import read_form

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates"
_log = logging.getLogger("stepup.errors")


def environment(directory: Path = TEMPLATES) -> Environment:
    return Environment(
        loader=FileSystemLoader(directory),
        autoescape=select_autoescape(default=True),
        auto_reload=False,
    )


def browser_cookie_name(issuer: str) -> str:
    # `__Host-` pins the cookie to this origin and path (RFC 6265bis §4.1.3.2); it needs
    # Secure, so plain-http localhost development uses an unprefixed name.
    return "__Host-stepup-browser" if issuer.startswith("https://") else "stepup-browser"


def content_security_policy(form_origins: tuple[str, ...] = ()) -> str:
    form_action = " ".join(("'self'", *form_origins))
    return (
        "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; "
        f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )


class Renderer:
    def __init__(self, services: Services, env: Environment) -> None:
        self.services = services
        self.env = env
        self.cookie = browser_cookie_name(services.config.issuer)
        self.secure = services.config.issuer.startswith("https://")

    def browser(self, request: Request) -> tuple[str, bool]:
        existing = request.cookies.get(self.cookie)
        if existing and 20 <= len(existing) <= 64:
            return existing, False
        return secrets.token_urlsafe(24), True

    def respond(
        self, outcome: Page | Redirect | Json, new_browser: str | None = None, as_json: bool = False
    ) -> Response:
        response: Response
        if isinstance(outcome, Json):
            response = JSONResponse(outcome.body, outcome.status)
        elif as_json:
            response = _json_outcome(outcome)
        elif isinstance(outcome, Redirect):
            # 303 so a POST is never replayed against the client's redirect_uri.
            response = RedirectResponse(outcome.location, 303)
        else:
            html = self.env.get_template(outcome.template).render(
                issuer=self.services.config.issuer, **outcome.context
            )
            response = HTMLResponse(html, outcome.status)
            response.headers["Content-Security-Policy"] = content_security_policy(
                outcome.form_origins
            )
            if outcome.retry_after:
                response.headers["Retry-After"] = str(outcome.retry_after)
        response.headers["Cache-Control"] = "no-store"
        if new_browser:
            response.set_cookie(
                self.cookie,
                new_browser,
                max_age=86400,
                path="/",
                secure=self.secure,
                httponly=True,
                samesite="lax",
            )
        return response


# The JSON side of the verification forms (for page scripts, e.g. WebAuthn ceremonies):
# the same outcomes, as `{"location"}` or a stepup error with the page's one message.
_JSON_ERRORS = {403: "access_denied", 429: "slow_down", 503: "temporarily_unavailable"}


def _json_outcome(outcome: Page | Redirect) -> Response:
    if isinstance(outcome, Redirect):
        return JSONResponse({"location": outcome.location})
    if outcome.status < 400:
        return JSONResponse({"status": "ok"}, outcome.status)
    message = outcome.context.get("error") or outcome.context.get("message") or ""
    body = {
        "error": _JSON_ERRORS.get(outcome.status, "verification_failed"),
        "error_description": str(message),
    }
    response = JSONResponse(body, outcome.status)
    if outcome.retry_after:
        response.headers["Retry-After"] = str(outcome.retry_after)
    return response


def wants_json(request: Request) -> bool:
    if request.method != "POST":
        return False
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


PageHandler = Callable[[Request, Services, str, bool], Awaitable[Page | Redirect | Json]]


def page(handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        renderer: Renderer = request.app.state.renderer
        browser, new = renderer.browser(request)
        outcome: Page | Redirect | Json
        try:
            outcome = await handler(request, renderer.services, browser, new)
        except OAuthError as exc:
            outcome = error_page("Request refused", exc.description, exc.status)
        except STORAGE_ERRORS as exc:
            _log.warning("%s: storage unavailable: %s", request.url.path, exc)
            outcome = Page(
                "error.html",
                {
                    "title": "Temporarily unavailable",
                    "message": "stepup cannot reach its storage. Nothing was changed; try again in a moment.",
                },
                503,
                retry_after=5,
            )
        return renderer.respond(outcome, browser if new else None, wants_json(request))

    return run


@page
async def authorization(
    request: Request, services: Services, browser: str, new: bool
) -> Page | Redirect:
    params = request.query_params
    return await authorize.start(
        services, params.get("client_id"), params.get("request_uri"), browser
    )


@page
async def interaction(
    request: Request, services: Services, browser: str, new: bool
) -> Page | Redirect | Json:
    interaction_id = request.path_params["interaction_id"]
    if request.method == "POST":
        return await authorize.submit(
            services, interaction_id, None if new else browser, await read_form(request)
        )
    return await authorize.show(services, interaction_id, None if new else browser)


@page
async def enrol(
    request: Request, services: Services, browser: str, new: bool
) -> Page | Redirect | Json:
    enrollment_id = request.path_params["enrollment_id"]
    if request.method == "POST":
        return await enrollment.submit(
            services, enrollment_id, None if new else browser, await read_form(request)
        )
    return await enrollment.show(services, enrollment_id, browser)


def not_found_page(renderer: Renderer, status: int, detail: str) -> Response:
    titles = {404: "Not found", 405: "Method not allowed"}
    return renderer.respond(error_page(titles.get(status, "Request refused"), detail, status))
