"""The demo client: a small bank web app that steps its user up through stepup over HTTP.

It is also the reference client. Everything it knows about stepup comes from the issuer URL
and the RFC 8414 metadata document; the loop is challenge → PAR (RFC 9126) → browser to the
authorization endpoint → callback (RFC 9207 `iss` check) → token exchange (RFC 8693) →
retry with the elevated token → revocation (RFC 7009).

Every token in the loop is sender-constrained (RFC 9449): the bank holds a DPoP key, the
user's token B is bound to it by the IdP, the bank proves the key at stepup's `/par` and
`/token` (so the elevated token E comes back bound to it too) and with every API call.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx
import jinja2
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from stepup.client import DPoPSigner
from stepup.clock import Clock, SystemClock
from stepup.config import TOKEN_TYPE_ACCESS_TOKEN
from stepup.demo.api import create_payments_api, parse_amount, parse_payee
from stepup.demo.idp import create_idp_app, issue_access_token
from stepup.demo.policy import (
    PAYMENT_DETAILS_TYPE,
    PAYMENTS_WRITE,
    DemoSettings,
    load_or_create_idp_key,
)
from stepup.protocol.challenge import (
    ChallengeSyntaxError,
    parse_www_authenticate,
    step_up_requirement,
)

log = logging.getLogger(__name__)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
SESSION_COOKIE = "demo_bank_session"
SESSION_LIFETIME = 3600
MAX_SESSIONS = 10_000
# How long a started step-up may take before the callback is refused.
PENDING_LIFETIME = 600

_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = _ROOT / "templates"
STYLESHEET = _ROOT / "static" / "demo.css"


def create_demo_apps(
    settings: DemoSettings,
    data_dir: Path,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[ASGIApp, ASGIApp]:
    """The app for the client port (IdP mounted at /idp) and the payments API; `transport`
    carries the bank's outgoing HTTP (by default the network)."""
    key = load_or_create_idp_key(data_dir)
    return create_client_app(settings, key, transport=transport), create_payments_api(settings)


def create_client_app(
    settings: DemoSettings,
    idp_key: ECKey,
    *,
    dpop_key: ECKey | None = None,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The bank web app, with the demo IdP (signing with `idp_key`) mounted at /idp.
    `dpop_key`: the bank's private DPoP key (RFC 9449); by default a new P-256 key."""
    # One key per process, never written down: sessions, the B tokens bound to the key and
    # every elevation live in this process's memory only, so a key that outlived it would
    # bind nothing. A bank running several instances would share one key, like its secret.
    if dpop_key is None:
        dpop_key = ECKey.generate_key("P-256")
    bank = _Bank(settings, idp_key, dpop_key, clock or SystemClock())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(transport=transport, timeout=10.0) as http:
            bank.http = http
            yield
            bank.http = None

    guard = bank.guard
    app = Starlette(
        routes=[
            Route("/", guard(bank.home), methods=["GET"]),
            Route("/login", guard(bank.login), methods=["POST"]),
            Route("/logout", guard(bank.logout), methods=["POST"]),
            Route("/account", guard(bank.account), methods=["GET"]),
            Route("/pay", guard(bank.pay), methods=["POST"]),
            Route("/factors", guard(bank.factors), methods=["POST"]),
            Route("/callback", guard(bank.callback), methods=["GET"]),
            Route("/receipt", guard(bank.receipt), methods=["GET"]),
            Route("/static/demo.css", _stylesheet, methods=["GET"]),
            Route("/favicon.ico", _no_icon, methods=["GET"]),
            Mount("/idp", app=create_idp_app(settings.idp_issuer, idp_key)),
        ],
        exception_handlers={HTTPException: bank.http_error, Exception: bank.unexpected_error},
        lifespan=lifespan,
    )
    app.state.bank = bank
    return app


async def _stylesheet(request: Request) -> Response:
    return FileResponse(STYLESHEET, media_type="text/css")


async def _no_icon(request: Request) -> Response:
    return Response(status_code=204)


class PageError(Exception):
    """Something the user should read about instead of the page they asked for."""

    def __init__(self, status: int, title: str, message: str, *, sign_in: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.sign_in = sign_in


@dataclass
class _Pending:
    """A payment waiting for step-up: what to send, and the values that bind the callback."""

    amount: str
    payee: str
    state: str
    code_verifier: str
    started: float


@dataclass
class _Session:
    csrf: str
    created: float
    user: str | None = None
    upstream_token: str | None = None
    pending: _Pending | None = None
    receipt: dict[str, Any] | None = None


@dataclass
class _Sessions:
    """Server-side sessions; the browser holds only a random id in an HttpOnly cookie."""

    clock: Clock
    by_id: dict[str, _Session] = field(default_factory=dict)

    def get(self, session_id: str | None) -> _Session | None:
        if not session_id:
            return None
        session = self.by_id.get(session_id)
        if session is not None and self.clock.now() - session.created > SESSION_LIFETIME:
            del self.by_id[session_id]
            return None
        return session

    def create(self) -> tuple[str, _Session]:
        now = self.clock.now()
        self.by_id = {k: s for k, s in self.by_id.items() if now - s.created <= SESSION_LIFETIME}
        while len(self.by_id) >= MAX_SESSIONS:
            del self.by_id[next(iter(self.by_id))]
        session_id = secrets.token_urlsafe(32)
        session = _Session(csrf=secrets.token_urlsafe(32), created=now)
        self.by_id[session_id] = session
        return session_id, session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self.by_id.pop(session_id, None)


Handler = Callable[[Request], Awaitable[Response]]


class _Bank:
    def __init__(
        self, settings: DemoSettings, idp_key: ECKey, dpop_key: ECKey, clock: Clock
    ) -> None:
        self.settings = settings
        self.idp_key = idp_key
        self.clock = clock
        # Proofs carry this clock's time (`iat`), as every other timestamp here does.
        self.dpop = DPoPSigner(dpop_key, clock.now)
        self.http: httpx.AsyncClient | None = None
        self.sessions = _Sessions(clock)
        self.metadata: dict[str, Any] | None = None
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.filters["when"] = _format_time
        self.templates = Jinja2Templates(env=env)

    # -- pages ---------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        session_id, session = self._session_or_new(request)
        response = self._render(request, "home.html", session, {})
        self._set_cookie(response, session_id)
        return response

    async def login(self, request: Request) -> Response:
        old_id, session = await self._checked_form_session(request)
        # A fresh id at sign-in: an id planted before login (session fixation) stays anonymous.
        self.sessions.drop(old_id)
        session_id, session = self.sessions.create()
        session.user = self.settings.user
        # The demo's stand-in for a real sign-in at the upstream IdP: B is minted directly,
        # bound to the bank's DPoP key (as if the bank had proven it at the IdP's token
        # endpoint), so B too is useless to anyone who copies it.
        session.upstream_token = issue_access_token(
            self.idp_key,
            self.settings.idp_issuer,
            sub=self.settings.user,
            client_id=self.settings.client_id,
            audience=self.settings.api_base,
            now=self.clock.now(),
            lifetime=SESSION_LIFETIME,
            jkt=self.dpop.jkt,
        )
        response = RedirectResponse("/account", status_code=303)
        self._set_cookie(response, session_id)
        return response

    async def logout(self, request: Request) -> Response:
        session_id, _ = await self._checked_form_session(request)
        self.sessions.drop(session_id)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
        return response

    async def account(self, request: Request) -> Response:
        session = self._signed_in(request)
        response = await self._call_api(
            "GET", f"{self.settings.api_base}/balance", session.upstream_token or ""
        )
        if response.status_code == 401:
            raise _signed_out("The payments API no longer accepts your sign-in.")
        account = _json_object(response) if response.status_code == 200 else None
        if account is None:
            raise _api_refused(response, "Balance not available", "The payments API refused")
        return self._render(request, "account.html", session, {"account": account})

    async def pay(self, request: Request) -> Response:
        _, session = await self._checked_form_session(request)
        _require_user(session)
        form = await request.form()
        amount_text, payee_text = form.get("amount"), form.get("payee")
        amount, payee = parse_amount(amount_text), parse_payee(payee_text)
        if amount is None or payee is None:
            # Checked here too, so nobody proves a factor for a payment the API would refuse.
            raise PageError(
                400,
                "Check the payment",
                "Enter an amount such as 25.00 (at most two decimals) and the payee's name.",
            )
        response = await self._call_api(
            "POST",
            f"{self.settings.api_base}/payments",
            session.upstream_token or "",
            json={"amount": str(amount), "payee": payee},
        )
        if response.status_code == 201:
            return self._show_receipt(session, response, revoked=None)
        if _asks_for_step_up(response):
            return await self._start_step_up(
                session, response.headers["www-authenticate"], str(amount), payee
            )
        if response.status_code == 401:
            raise _signed_out("The payments API no longer accepts your sign-in.")
        raise _api_refused(response, "Payment not sent", "The payments API refused")

    async def factors(self, request: Request) -> Response:
        """Sends the user to stepup's factor management page (passkeys, recovery codes)."""
        _, session = await self._checked_form_session(request)
        _require_user(session)
        endpoint = _endpoint(await self._metadata(), "enrollment_endpoint")
        # B is bound to the bank's key: stepup takes it only with a proof by that key.
        response = await self._post_proven(
            endpoint,
            {
                "subject_token": session.upstream_token or "",
                "subject_token_type": TOKEN_TYPE_ACCESS_TOKEN,
                "redirect_uri": self.settings.account_uri,
            },
        )
        body = _json_object(response)
        link = body.get("enrollment_uri") if body else None
        if response.status_code != 201 or not isinstance(link, str):
            raise _stepup_refused("open your sign-in factors", response)
        return RedirectResponse(link, status_code=303)

    async def callback(self, request: Request) -> Response:
        session = self._signed_in(request)
        pending = session.pending
        params = request.query_params
        if pending is None:
            raise PageError(400, "Nothing to approve", "No payment is waiting for approval.")
        state = params.get("state", "")
        if not hmac.compare_digest(state.encode(), pending.state.encode()):
            # Left pending: a forged callback must not cancel the user's real one.
            raise PageError(
                400, "Approval not recognised", "This approval is not for your pending payment."
            )
        session.pending = None
        if self.clock.now() - pending.started > PENDING_LIFETIME:
            raise PageError(400, "Approval took too long", "Please send the payment again.")
        # RFC 9207 §2.4: the response must come from the authorization server we sent the
        # user to; anything else may be a mix-up attack, so its code is never used.
        if params.get("iss") != self.settings.stepup_issuer:
            raise PageError(
                400, "Approval not recognised", "The approval came from an unexpected server."
            )
        error = params.get("error")
        if error is not None:
            raise _step_up_failed(error, params.get("error_description"))
        code = params.get("code")
        if not code:
            raise PageError(400, "Approval not recognised", "The approval carried no code.")
        elevated = await self._exchange(session, code, pending.code_verifier)
        try:
            response = await self._call_api(
                "POST",
                f"{self.settings.api_base}/payments",
                elevated,
                json={"amount": pending.amount, "payee": pending.payee},
            )
        finally:
            # RFC 7009: the task is done (or failed), so the elevation should not outlive it.
            revoked = await self._revoke(elevated)
        if response.status_code != 201:
            raise _api_refused(
                response, "Payment not sent", "The payments API refused even after your approval"
            )
        return self._show_receipt(session, response, revoked=revoked)

    async def receipt(self, request: Request) -> Response:
        session = self._signed_in(request)
        if session.receipt is None:
            return RedirectResponse("/account", status_code=303)
        return self._render(request, "receipt.html", session, {"receipt": session.receipt})

    # -- the step-up loop ----------------------------------------------------------------

    async def _start_step_up(
        self, session: _Session, challenge: str, amount: str, payee: str
    ) -> Response:
        metadata = await self._metadata()
        par_endpoint = _endpoint(metadata, "pushed_authorization_request_endpoint")
        authorization_endpoint = _endpoint(metadata, "authorization_endpoint")
        # RFC 7636: S256 only; the verifier never leaves this server until the exchange.
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(24)
        form = {
            "subject_token": session.upstream_token or "",
            "subject_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            "challenge": challenge,
            "scope": PAYMENTS_WRITE,
            "resource": self.settings.api_base,
            "redirect_uri": self.settings.redirect_uri,
            "state": state,
            "code_challenge": _s256(verifier),
            "code_challenge_method": "S256",
        }
        if PAYMENT_DETAILS_TYPE in _strings(metadata.get("authorization_details_types_supported")):
            # RFC 9396: let stepup show, and bind the elevation to, this one payment.
            form["authorization_details"] = json.dumps(
                [
                    {
                        "type": PAYMENT_DETAILS_TYPE,
                        "instructedAmount": {"currency": self.settings.currency, "amount": amount},
                        "creditorName": payee,
                    }
                ]
            )
        # The proof binds the request to the bank's key from intake on (RFC 9449 §10), the
        # key B is bound to as well.
        response = await self._post_proven(par_endpoint, form)
        body = _json_object(response)
        request_uri = body.get("request_uri") if body else None
        if response.status_code not in (200, 201) or not isinstance(request_uri, str):
            raise _stepup_refused("start the approval", response)
        session.pending = _Pending(amount, payee, state, verifier, self.clock.now())
        query = urlencode({"client_id": self.settings.client_id, "request_uri": request_uri})
        separator = "&" if "?" in authorization_endpoint else "?"
        return RedirectResponse(f"{authorization_endpoint}{separator}{query}", status_code=303)

    async def _exchange(self, session: _Session, code: str, verifier: str) -> str:
        metadata = await self._metadata()
        # B is bound to the bank's key, so stepup wants a proof by it; E comes back bound
        # to the same key (RFC 9449 §5).
        response = await self._post_proven(
            _endpoint(metadata, "token_endpoint"),
            {
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": session.upstream_token or "",
                "subject_token_type": TOKEN_TYPE_ACCESS_TOKEN,
                "code": code,
                "code_verifier": verifier,
                "resource": self.settings.api_base,
                "requested_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            },
        )
        body = _json_object(response)
        token = body.get("access_token") if body else None
        if response.status_code != 200 or not body or not isinstance(token, str) or not token:
            raise _stepup_refused("hand out the approval", response)
        if str(body.get("token_type", "")).lower() != "dpop":
            # The bank proved its key: an unbound (Bearer) token would be a downgrade that
            # anyone holding a copy could use, and the payments API refuses it anyway.
            await self._revoke(token)
            raise PageError(
                502, "Approval not usable", "stepup issued a token not bound to the bank's key."
            )
        if body.get("issued_token_type", TOKEN_TYPE_ACCESS_TOKEN) != TOKEN_TYPE_ACCESS_TOKEN:
            raise PageError(
                502, "Approval not usable", "stepup issued an unexpected kind of token."
            )
        return token

    async def _revoke(self, token: str) -> bool:
        try:
            metadata = await self._metadata()
            response = await self._client().post(
                _endpoint(metadata, "revocation_endpoint"),
                data={"token": token, "token_type_hint": "access_token"},
                headers=self._client_auth(),
            )
        except (httpx.HTTPError, PageError) as exc:
            log.warning("revocation failed: %s", exc)
            return False
        if response.status_code != 200:
            log.warning("revocation answered %s", response.status_code)
        return response.status_code == 200

    async def _metadata(self) -> dict[str, Any]:
        if self.metadata is None:
            issuer = self.settings.stepup_issuer
            response = await self._client().get(
                f"{issuer}/.well-known/oauth-authorization-server",
                headers={"Accept": "application/json"},
            )
            document = _json_object(response) if response.status_code == 200 else None
            # RFC 8414 §3.3: the document must name the issuer it was fetched for.
            if document is None or document.get("issuer") != issuer:
                log.error("bad stepup metadata (%s)", response.status_code)
                raise PageError(
                    502, "stepup is not answering", "Could not read stepup's metadata. Try again."
                )
            self.metadata = document
        return self.metadata

    async def _post_proven(self, url: str, form: dict[str, str]) -> httpx.Response:
        """A POST to stepup with the bank's credentials and a DPoP proof of its key; once
        more, with stepup's nonce, if stepup answers `use_dpop_nonce` (RFC 9449 §8)."""
        for attempt in range(2):
            headers = {**self._client_auth(), "DPoP": self.dpop.proof("POST", url)}
            response = await self._client().post(url, data=form, headers=headers)
            if attempt or not self.dpop.remember(url, response):
                break
        return response

    async def _call_api(
        self, method: str, url: str, token: str, *, json: dict[str, str] | None = None
    ) -> httpx.Response:
        """A payments API call with `token` (B or E, both bound to the bank's key) and a
        proof for this very request: `htm`, `htu`, and `ath`, the token's hash (RFC 9449
        §7); once more if the API asks for its nonce (§9)."""
        for attempt in range(2):
            headers = {
                "Authorization": f"DPoP {token}",
                "DPoP": self.dpop.proof(method, url, token),
                "Accept": "application/json",
            }
            response = await self._client().request(method, url, json=json, headers=headers)
            if attempt or not self.dpop.remember(url, response):
                break
        return response

    def _client_auth(self) -> dict[str, str]:
        # client_secret_basic; RFC 6749 §2.3.1 form-urlencodes both parts before base64.
        raw = f"{quote_plus(self.settings.client_id)}:{quote_plus(self.settings.client_secret)}"
        return {
            "Authorization": "Basic " + base64.b64encode(raw.encode()).decode("ascii"),
            "Accept": "application/json",
        }

    def _client(self) -> httpx.AsyncClient:
        if self.http is None:
            raise RuntimeError("the demo client is used outside its lifespan")
        return self.http

    # -- sessions, forms, rendering ------------------------------------------------------

    def _session_or_new(self, request: Request) -> tuple[str, _Session]:
        session_id = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(session_id)
        if session_id and session is not None:
            return session_id, session
        return self.sessions.create()

    def _signed_in(self, request: Request) -> _Session:
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise _signed_out("Please sign in first.")
        return _require_user(session)

    async def _checked_form_session(self, request: Request) -> tuple[str, _Session]:
        session_id = request.cookies.get(SESSION_COOKIE, "")
        session = self.sessions.get(session_id)
        form = await request.form()
        sent = form.get("csrf_token")
        # SameSite=Lax does not stop other ports on localhost (same site), so forms carry a token.
        if (
            session is None
            or not isinstance(sent, str)
            or not hmac.compare_digest(sent.encode(), session.csrf.encode())
        ):
            raise PageError(
                403, "Page expired", "This form is out of date. Go back, reload, and try again."
            )
        return session_id, session

    def _set_cookie(self, response: Response, session_id: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=SESSION_LIFETIME,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.settings.client_base.startswith("https://"),
        )

    def _show_receipt(
        self, session: _Session, response: httpx.Response, *, revoked: bool | None
    ) -> Response:
        payment = _json_object(response) or {}
        session.receipt = {"payment": payment, "revoked": revoked}
        return RedirectResponse("/receipt", status_code=303)

    def _render(
        self,
        request: Request,
        template: str,
        session: _Session | None,
        context: dict[str, Any],
        status: int = 200,
    ) -> Response:
        return self.templates.TemplateResponse(
            request,
            f"demo/{template}",
            {
                "settings": self.settings,
                "user": session.user if session else None,
                "csrf_token": session.csrf if session else "",
                **context,
            },
            status_code=status,
            headers=self._page_headers(),
        )

    def _page_headers(self) -> dict[str, str]:
        # Forms post to this app, but the 303 after /pay lands on stepup: CSP form-action
        # covers redirects after a form submission, so stepup's origin is listed too.
        return {
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'self'; img-src 'self'; "
                f"form-action 'self' {self.settings.stepup_issuer}; "
                "frame-ancestors 'none'; base-uri 'none'"
            ),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        }

    # -- error pages ---------------------------------------------------------------------

    def guard(self, handler: Handler) -> Handler:
        """Turn every foreseeable failure of `handler` into a page the user can act on."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except PageError as error:
                return self._error_page(request, error)
            except httpx.HTTPError as exc:
                log.warning("peer unreachable: %r", exc)
                return self._error_page(
                    request,
                    PageError(
                        502,
                        "Something is not answering",
                        "The bank could not reach stepup or the payments API. Try again.",
                    ),
                )

        return guarded

    def _error_page(self, request: Request, error: PageError) -> Response:
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        return self._render(
            request,
            "error.html",
            session,
            {"title": error.title, "message": error.message, "sign_in": error.sign_in},
            status=error.status,
        )

    async def http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        title = "Page not found" if status == 404 else "That did not work"
        return self._error_page(request, PageError(status, title, "Go back to the start."))

    async def unexpected_error(self, request: Request, exc: Exception) -> Response:
        log.exception("demo client error", exc_info=exc)
        return self._error_page(
            request, PageError(500, "Something went wrong", "The bank hit an error. Try again.")
        )


# -- helpers ---------------------------------------------------------------------------------


def _asks_for_step_up(response: httpx.Response) -> bool:
    header = response.headers.get("www-authenticate")
    if response.status_code not in (401, 403) or not header:
        return False
    try:
        error = step_up_requirement(parse_www_authenticate(header)).error
    except ChallengeSyntaxError:
        return False
    # RFC 9470 §3 (401) and RFC 6750 §3.1 (403): both are answered by stepping up; so is a
    # token approved for another payment (stepup.resource.InsufficientAuthorizationDetails).
    return (response.status_code, error) in (
        (401, "insufficient_user_authentication"),
        (403, "insufficient_scope"),
        (403, "insufficient_authorization_details"),
    )


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _endpoint(metadata: dict[str, Any], name: str) -> str:
    value = metadata.get(name)
    if not isinstance(value, str) or not value:
        log.error("stepup metadata has no %s", name)
        raise PageError(502, "stepup is misconfigured", f"stepup does not advertise {name}.")
    return value


def _format_time(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _signed_out(message: str) -> PageError:
    return PageError(401, "Please sign in", message, sign_in=True)


def _step_up_failed(error: str, description: str | None) -> PageError:
    if error == "access_denied":
        return PageError(
            400, "Payment cancelled", "You cancelled the approval, so no payment was sent."
        )
    if error == "unmet_authentication_requirements":
        return PageError(
            400,
            "Payment not approved",
            "None of your sign-in factors is strong enough for this payment, so it was not sent.",
        )
    detail = f" ({description})" if description else ""
    return PageError(400, "Payment not approved", f"stepup said: {error}{detail}.")


def _stepup_refused(action: str, response: httpx.Response) -> PageError:
    body = _json_object(response) or {}
    log.warning("stepup refused to %s: %s %s", action, response.status_code, body)
    reason = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
    return PageError(502, "Approval failed", f"stepup would not {action}: {reason}.")


def _api_refused(response: httpx.Response, title: str, lead: str) -> PageError:
    body = _json_object(response) or {}
    reason = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
    # The API's 4xx is about this request (e.g. funds); anything else is the API failing.
    status = 400 if 400 <= response.status_code < 500 else 502
    return PageError(status, title, f"{lead}: {reason}.")


def _require_user(session: _Session) -> _Session:
    if session.user is None or session.upstream_token is None:
        raise _signed_out("Please sign in first.")
    return session
